#include "coordinator/sequence.h"

#include <algorithm>
#include <cmath>
#include <iterator>
#include <utility>

#include "absl/base/internal/raw_logging.h"
#include "absl/strings/str_cat.h"

namespace llmint8::coordinator {

uint64_t OutputSignal::version() const {
  absl::MutexLock lock(&mu_);
  return version_;
}

void OutputSignal::Notify() {
  absl::MutexLock lock(&mu_);
  ++version_;
}

void OutputSignal::WaitPast(uint64_t seen, absl::Duration timeout) const {
  absl::MutexLock lock(&mu_);
  auto changed = [this, seen]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return version_ != seen; };
  mu_.AwaitWithTimeout(absl::Condition(&changed), timeout);
}

Sequence::Sequence(uint64_t id, std::vector<int32_t> prompt, GenerationParams params,
                   std::unique_ptr<TokenTextStream> text)
    : id_(id),
      prompt_(std::move(prompt)),
      params_(std::move(params)),
      text_(std::move(text)),
      stop_(params_.stop) {}

std::optional<absl::Status> Sequence::WaitOutput(absl::Duration timeout,
                                                 std::vector<v1::GenerateResponse>& out) {
  absl::MutexLock lock(&mu_);
  auto has_output = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
    return !outbox_.empty() || final_.has_value();
  };
  mu_.AwaitWithTimeout(absl::Condition(&has_output), timeout);
  while (!outbox_.empty()) {
    out.push_back(std::move(outbox_.front()));
    outbox_.pop_front();
  }
  return final_;
}

std::span<const int32_t> Sequence::TakePrompt(int64_t limit) {
  const int64_t n = std::min(prompt_remaining(), std::max<int64_t>(limit, 1));
  std::span<const int32_t> piece =
      input().subspan(static_cast<size_t>(prompt_sent_), static_cast<size_t>(n));
  prompt_sent_ += n;
  return piece;
}

void Sequence::SkipPrompt(int64_t n) {
  ABSL_RAW_CHECK(prompt_sent_ == 0 && n >= 0 && n < std::ssize(input()),
                 "Sequence::SkipPrompt: only the start of an unsent input, not all of it");
  prompt_sent_ = n;
  // Usage counts the prompt's cached tokens of the first prefill (a prefill again after a
  // preemption is the server's cost, not the client's).
  if (resume_.empty()) prompt_cached_ = n;
}

void Sequence::Unsend() {
  prompt_sent_ = prompt_on_workers_;
  if (prompt_sent_ == 0 && resume_.empty()) prompt_cached_ = 0;
}

std::vector<int32_t> Sequence::cached_tokens() const {
  const std::span<const int32_t> in = input().first(static_cast<size_t>(prompt_sent_));
  std::vector<int32_t> tokens(in.begin(), in.end());
  // The generated tokens after the input (a preempted sequence's input holds the earlier ones).
  const size_t after = resume_.empty() ? 0 : resume_.size() - prompt_.size();
  if (generated_.size() > after) {
    tokens.insert(tokens.end(), generated_.begin() + static_cast<std::ptrdiff_t>(after),
                  generated_.end() - 1);
  }
  return tokens;
}

void Sequence::Preempt() {
  ABSL_RAW_CHECK(!on_workers_, "Sequence::Preempt: only a sequence off the workers");
  if (!generated_.empty()) {
    resume_ = prompt_;
    resume_.insert(resume_.end(), generated_.begin(), generated_.end());
  } else {
    prompt_scores_.clear();  // nothing was sent yet: they come again
    prompt_cached_ = 0;
  }
  prompt_sent_ = 0;
  prompt_on_workers_ = 0;
  kv_positions_ = 0;
  drop_positions_ = 0;
  preemptions_.fetch_add(1, std::memory_order_relaxed);
}

Sequence::StepOutput Sequence::AddStepOutput(const v1::SeqStep& sent, const v1::SeqResult& result,
                                             std::span<const int32_t> eos_token_ids) {
  StepOutput out;
  // Counted before the tokens go out: the handler reads the counts for its log line as soon
  // as the last token ends the stream.
  drafts_sent_.fetch_add(sent.draft_token_ids_size(), std::memory_order_relaxed);
  int32_t cached = 0;  // accepted drafts among the cached tokens (one more token followed)
  while (out.drafts_kept < result.drafts_accepted() && !out.finished) {
    v1::SeqResult draft;
    draft.set_seq_id(result.seq_id());
    draft.set_token_id(sent.draft_token_ids(out.drafts_kept));
    if (out.drafts_kept < result.drafts_size()) {
      draft.set_logprob(result.drafts(out.drafts_kept).logprob());
      *draft.mutable_top() = result.drafts(out.drafts_kept).top();
    }
    drafts_accepted_.fetch_add(1, std::memory_order_relaxed);
    out.finished = AddToken(draft, eos_token_ids);
    ++out.drafts_kept;
    if (!out.finished) ++cached;
  }
  if (!out.finished) out.finished = AddToken(result, eos_token_ids);
  drop_positions_ = sent.draft_token_ids_size() - cached;
  return out;
}

void Sequence::Tokens(std::vector<int32_t>& out) const {
  out.assign(prompt_.begin(), prompt_.end());
  out.insert(out.end(), generated_.begin(), generated_.end());
}

void Sequence::Fail(const absl::Status& status) { Push(std::nullopt, status); }

bool Sequence::failed() const {
  absl::MutexLock lock(&mu_);
  return final_.has_value() && !final_->ok();
}

void Sequence::Push(std::optional<v1::GenerateResponse> response,
                    std::optional<absl::Status> final) {
  {
    absl::MutexLock lock(&mu_);
    if (response.has_value()) outbox_.push_back(*std::move(response));
    if (final.has_value() && !final_.has_value()) final_ = std::move(final);
  }
  if (signal_ != nullptr) signal_->Notify();
}

bool Sequence::AddToken(const v1::SeqResult& sampled, std::span<const int32_t> eos_token_ids) {
  const absl::Time now = absl::Now();
  const int32_t token_id = sampled.token_id();
  if (generated_.empty()) first_token_ = now;
  generated_.push_back(token_id);
  if (num_generated() > resume_mark_) may_resume_ = true;
  v1::GenerateResponse response;
  response.set_token_id(token_id);
  if (params_.logprobs) response.set_logprob(sampled.logprob());
  const bool token_forms = text_ && (params_.logprobs || params_.top_logprobs > 0);
  if (token_forms) {
    TokenTextStream::TextAndBytes forms = text_->TokenTextAndBytes(token_id);
    response.set_token_text(std::move(forms.text));
    response.set_token_bytes(std::move(forms.bytes));
    response.set_decoded_bytes(0);  // an ending token's text is not the sequence's
  }
  AddCandidates(sampled.top(), response.mutable_top_logprobs());
  if (generated_.size() == 1) AttachPromptTokens(response);
  // What the text stream held back, released as the sequence ends: bytes that end inside a
  // character become a U+FFFD, longer than what the tokens that brought them counted, so
  // this (last) token counts the difference and the sum stays the text's length.
  auto flush_text = [&]() -> std::string {
    if (!text_) return "";
    std::string rest = text_->Flush();
    if (token_forms && rest.size() > counted_held_bytes_) {
      response.set_decoded_bytes(response.decoded_bytes() +
                                 static_cast<uint32_t>(rest.size() - counted_held_bytes_));
    }
    counted_held_bytes_ = 0;
    return rest;
  };

  // Before min_tokens nothing ends the sequence (the workers never sample the end-of-sequence
  // token or a stop id then) and no stop string ends in its text; one may start there and end
  // in a later token's (as in vLLM).
  const bool may_end = num_generated() > params_.min_tokens;
  // The end-of-sequence token and a stop token id end it without their own text (the id is
  // returned; vLLM drops a stop token's text too), after the text held back so far.
  const bool eos = !params_.ignore_eos &&
                   std::binary_search(eos_token_ids.begin(), eos_token_ids.end(), token_id);
  const bool stop_token =
      std::binary_search(params_.stop_token_ids.begin(), params_.stop_token_ids.end(), token_id);
  if (may_end && (eos || stop_token)) {
    // The held-back text may complete a stop string: then the sequence ends at that (STOP).
    std::string emit = stop_.Append(flush_text());
    const bool stopped_in_text = stop_.stopped();
    if (!stopped_in_text) emit += stop_.Flush();
    response.set_text(std::move(emit));
    Finish(std::move(response),
           eos && !stopped_in_text ? v1::FINISH_REASON_EOS : v1::FINISH_REASON_STOP);
    return true;
  }
  if (guide_ != nullptr && (static_cast<size_t>(token_id) >= vocabulary_->bytes.size() ||
                            vocabulary_->bytes[static_cast<size_t>(token_id)].empty() ||
                            !guide_->Advance(vocabulary_->bytes[static_cast<size_t>(token_id)]))) {
    // Rank 0 sampled an id the step's mask ruled out: a worker's bug, or a worker older than
    // the coordinator (one that ignores SeqStep.mask).
    Fail(absl::InternalError(absl::StrCat(
        "rank 0 sampled token ", token_id,
        ", which the guided output does not allow (is the worker older than the coordinator?)")));
    return true;
  }
  auto match = [&](const std::string& text) { return stop_.Append(text, may_end); };
  std::string added;
  if (text_) {
    // What the token adds to the decoded text: what the stream releases and holds back now,
    // less what earlier tokens counted of that. Bytes that turn out invalid are released as
    // U+FFFD, so the sums stay offsets into the text as sent.
    added = text_->Add(token_id);
    const size_t now = added.size() + text_->held_bytes();
    const size_t decoded = now > counted_held_bytes_ ? now - counted_held_bytes_ : 0;
    counted_held_bytes_ = text_->held_bytes();
    if (token_forms) response.set_decoded_bytes(static_cast<uint32_t>(decoded));
  }
  std::string emit = match(added);
  if (stop_.stopped()) {
    response.set_text(std::move(emit));
    Finish(std::move(response), v1::FINISH_REASON_STOP);
    return true;
  }
  // A guided text that nothing may continue has ended (as the end-of-sequence token would
  // end it: STOP).
  const bool guide_ended = guide_ != nullptr && guide_->MustEnd();
  if (guide_ended || num_generated() >= params_.max_new_tokens) {
    emit += match(flush_text());
    if (stop_.stopped()) {
      response.set_text(std::move(emit));
      Finish(std::move(response), v1::FINISH_REASON_STOP);
      return true;
    }
    emit += stop_.Flush();
    response.set_text(std::move(emit));
    Finish(std::move(response), guide_ended ? v1::FINISH_REASON_STOP : v1::FINISH_REASON_LENGTH);
    return true;
  }
  response.set_text(std::move(emit));
  Push(std::move(response), std::nullopt);
  return false;
}

absl::Status Sequence::FillTokenMask(std::span<const int32_t> eos_token_ids, int32_t vocab_size,
                                     v1::TokenMask* mask) {
  if (guide_ == nullptr) return absl::OkStatus();
  const int32_t tokens = static_cast<int32_t>(vocabulary_->bytes.size());
  if (vocab_size <= 0) vocab_size = tokens;
  if (absl::Status scan = guide_->Allowed(*vocabulary_, allowed_); !scan.ok()) return scan;
  // The ids that end the sequence (the end-of-sequence ids unless ignored, the stop ids) come
  // only where the text may end, though a scan allowed one by its text (an eos id from
  // generation_config.json may be an ordinary token): else they would end it half-way. They
  // are the same at every token: gathered once.
  if (!enders_.has_value()) {
    enders_.emplace(params_.stop_token_ids.begin(), params_.stop_token_ids.end());
    if (!params_.ignore_eos)
      enders_->insert(enders_->end(), eos_token_ids.begin(), eos_token_ids.end());
    std::sort(enders_->begin(), enders_->end());
    enders_->erase(std::unique(enders_->begin(), enders_->end()), enders_->end());
  }
  const std::vector<int32_t>& enders = *enders_;
  // The set is written as its members (allow) or as the others, whichever the guide gave:
  // the shorter, kept so, with no pass over the whole vocabulary. Ids past the model's
  // vocabulary go; those past the tokenizer's (no token) are never members.
  std::vector<int32_t>& ids = allowed_.ids;
  if (!allowed_.allow) {
    for (int32_t id = tokens; id < vocab_size; ++id) ids.push_back(id);
  }
  ids.erase(std::lower_bound(ids.begin(), ids.end(), vocab_size), ids.end());
  merged_.clear();
  if (guide_->CanEnd() == allowed_.allow) {  // members gain the enders, or the others do
    std::set_union(ids.begin(), ids.end(), enders.begin(),
                   std::lower_bound(enders.begin(), enders.end(), vocab_size),
                   std::back_inserter(merged_));
  } else {  // members lose them, or the others do
    std::set_difference(ids.begin(), ids.end(), enders.begin(), enders.end(),
                        std::back_inserter(merged_));
  }
  ids.swap(merged_);
  if (allowed_.allow ? ids.empty() : ids.size() >= static_cast<size_t>(vocab_size)) {
    // No token of the vocabulary goes on with the text (a guide whose next byte no token
    // holds), and it may not end here (ignore_eos): nothing can be sampled.
    return absl::InvalidArgumentError(absl::StrCat(
        "the guided output cannot go on: no token of the vocabulary continues it after ",
        num_generated(), " tokens",
        params_.ignore_eos ? ", and ignore_eos keeps it from ending" : ""));
  }
  mask->Clear();
  mask->set_allow(allowed_.allow);
  mask->mutable_token_ids()->Add(ids.begin(), ids.end());
  return absl::OkStatus();
}

void Sequence::AddCandidates(const google::protobuf::RepeatedPtrField<v1::TokenCandidate>& top,
                             google::protobuf::RepeatedPtrField<v1::TopLogprob>* out) const {
  const int n = std::min(top.size(), params_.top_logprobs);
  for (int i = 0; i < n; ++i) {
    v1::TopLogprob* t = out->Add();
    t->set_token_id(top[i].token_id());
    t->set_logprob(top[i].logprob());
    if (text_) {
      TokenTextStream::TextAndBytes forms = text_->TokenTextAndBytes(t->token_id());
      t->set_text(std::move(forms.text));
      t->set_bytes(std::move(forms.bytes));
    }
  }
}

absl::Status Sequence::AddPromptScores(const v1::SeqResult& prefilled) {
  if (!params_.prompt_logprobs) return absl::OkStatus();
  for (int i = 0; i < prefilled.prompt_size(); ++i) {
    if (std::isnan(prefilled.prompt(i).logprob())) {
      return absl::InternalError(
          absl::StrCat("the prompt could not be scored: the model's logits before prompt token ",
                       prompt_scores_.size() + static_cast<size_t>(i) + 1, " are not finite"));
    }
  }
  prompt_scores_.insert(prompt_scores_.end(), prefilled.prompt().begin(), prefilled.prompt().end());
  return absl::OkStatus();
}

void Sequence::AttachPromptTokens(v1::GenerateResponse& response) {
  if (!params_.prompt_logprobs && !params_.echo_prompt) return;
  // An echoed prompt's text goes on into the generated text: one decoder for both.
  const std::vector<std::string> pieces = !text_                ? std::vector<std::string>()
                                          : params_.echo_prompt ? text_->StartWith(prompt_)
                                                                : text_->Pieces(prompt_);
  for (size_t k = 0; k < prompt_.size(); ++k) {
    v1::PromptToken* t = response.add_prompt_tokens();
    t->set_token_id(prompt_[k]);
    if (k < pieces.size()) t->set_text(pieces[k]);
    if (text_) t->set_token_text(text_->TokenText(prompt_[k]));
    // Scores arrive for tokens 1, 2, ... (token 0 has no context); all of them, unless a
    // worker sent fewer, which leaves the rest unscored rather than misattributed.
    if (k >= 1 && k - 1 < prompt_scores_.size()) {
      const v1::PromptScore& score = prompt_scores_[k - 1];
      t->set_logprob(score.logprob());
      AddCandidates(score.top(), t->mutable_top_logprobs());
    }
  }
  prompt_scores_.clear();
  prompt_scores_.shrink_to_fit();
}

void Sequence::FinishPromptOnly() {
  first_token_ = absl::Now();
  v1::GenerateResponse response;
  AttachPromptTokens(response);
  // No token follows an echoed prompt: what its decoder holds back ends its last piece.
  if (params_.echo_prompt && text_ && response.prompt_tokens_size() > 0) {
    v1::PromptToken* last = response.mutable_prompt_tokens(response.prompt_tokens_size() - 1);
    last->set_text(last->text() + text_->Flush());
  }
  Finish(std::move(response), v1::FINISH_REASON_LENGTH);
}

void Sequence::Finish(v1::GenerateResponse response, v1::FinishReason reason) {
  const absl::Time now = absl::Now();
  response.set_finish_reason(reason);
  response.mutable_usage()->set_prompt_tokens(static_cast<int32_t>(prompt_.size()));
  response.mutable_usage()->set_completion_tokens(num_generated());
  response.mutable_usage()->set_cached_prompt_tokens(static_cast<int32_t>(prompt_cached_));
  v1::Timings* t = response.mutable_timings();
  const absl::Time admitted = std::min(admitted_, now);
  t->set_queue_ms(absl::ToDoubleMilliseconds(admitted - arrival_));
  t->set_time_to_first_token_ms(absl::ToDoubleMilliseconds(first_token_ - arrival_));
  t->set_total_ms(absl::ToDoubleMilliseconds(now - arrival_));
  const double decode_s = absl::ToDoubleSeconds(now - first_token_);
  t->set_decode_tokens_per_second(
      num_generated() > 1 && decode_s > 0 ? (num_generated() - 1) / decode_s : 0.0);
  Push(std::move(response), absl::OkStatus());
}

}  // namespace llmint8::coordinator
