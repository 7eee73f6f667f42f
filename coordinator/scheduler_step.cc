// What one step carries (FormStep) and what rank 0's answer does to the running sequences
// (TakeResults): the scheduler's step, beside its admission and preemption (scheduler.cc).
#include <algorithm>
#include <limits>
#include <optional>
#include <span>

#include "absl/strings/str_cat.h"
#include "coordinator/scheduler.h"

namespace llmint8::coordinator {
namespace {

// What rank 0 needs to sample a sequence: its parameters, and the ids min_tokens holds back
// (the end-of-sequence tokens unless ignored, and the stop ids).
void FillSampling(const GenerationParams& p, std::span<const int32_t> eos_token_ids,
                  v1::SamplingParams* sp) {
  sp->set_temperature(p.temperature);
  sp->set_top_k(p.top_k);
  sp->set_top_p(p.top_p);
  sp->set_seed(p.seed);
  sp->set_repetition_penalty(p.repetition_penalty);
  sp->set_frequency_penalty(p.frequency_penalty);
  sp->set_presence_penalty(p.presence_penalty);
  sp->set_min_p(p.min_p);
  for (const auto& [id, bias] : p.logit_bias) {
    v1::TokenBias* b = sp->add_logit_bias();
    b->set_token_id(id);
    b->set_bias(bias);
  }
  if (p.min_tokens > 0) {
    sp->set_min_tokens(p.min_tokens);
    if (!p.ignore_eos) {
      sp->mutable_min_tokens_banned()->Add(eos_token_ids.begin(), eos_token_ids.end());
    }
    sp->mutable_min_tokens_banned()->Add(p.stop_token_ids.begin(), p.stop_token_ids.end());
  }
}

struct RunningPrefix {
  // The running sequence whose prompt positions on the workers share the longest start with
  // the prompt (at least min_prefix): a prefix source as a parked one is.
  std::optional<PrefixCache::Match> now;
  // The longest start shared with the whole prompt of a sequence ahead in the batch that is
  // still prefilling it: what waiting for its prefill would give.
  int64_t coming = 0;
};

// Sources among the running sequences for running[index]'s prompt: at most all but its last
// token, from sequences whose tokens rank 0 kept when it counts them.
RunningPrefix FindRunningPrefix(std::span<const std::shared_ptr<Sequence>> running, size_t index,
                                int64_t min_prefix) {
  const Sequence& seq = *running[index];
  const size_t most = seq.input().size() - 1;
  RunningPrefix best;
  for (size_t j = 0; j < running.size(); ++j) {
    const Sequence& other = *running[j];
    if (j == index) continue;  // (the running sequences are all on the workers)
    if (seq.params().counts_tokens() && !other.params().counts_tokens()) continue;
    const int64_t shared = SharedStart(seq.input(), other.prompt_on_workers(), most);
    if (shared >= min_prefix && (!best.now.has_value() || shared > best.now->length)) {
      best.now = PrefixCache::Match{other.id(), shared};
    }
    if (j < index && other.prompt_on_workers().size() < other.input().size()) {
      best.coming = std::max(best.coming, SharedStart(seq.input(), other.input(), most));
    }
  }
  return best;
}

}  // namespace

Scheduler::PrefixChoice Scheduler::ChoosePrefix(size_t i) {
  const Sequence& seq = *running_[i];
  // A later choice of a prompt starts from the first choice's cached prompt while the workers
  // hold it, once they do (its steps prefilled it, or after a preemption prefilled it
  // again): all but the last token.
  // A source behind this sequence in the batch that has not started (it was preempted and
  // admitted again) is not waited for: it may be waiting for this one's prefill of the same
  // prompt (FindRunningPrefix), and neither would go.
  const int64_t prompt = std::ssize(seq.prompt());
  if (std::shared_ptr<Sequence> source = seq.prefix_source();
      source != nullptr && source->on_workers() &&
      (source->started() ||
       std::find(running_.begin(), running_.begin() + static_cast<std::ptrdiff_t>(i), source) !=
           running_.begin() + static_cast<std::ptrdiff_t>(i))) {
    if (std::ssize(source->prompt_on_workers()) < prompt - 1) {
      return {.wait = true, .from = std::nullopt};
    }
    return {.wait = false, .from = PrefixCache::Match{source->id(), prompt - 1}};
  }
  // Else the longest cached prefix of a parked or running sequence, for an input not scored.
  if (seq.scoring() || options_.prefix_cache_entries <= 0) return {};
  const int64_t min_prefix = std::max<int64_t>(options_.min_shared_prefix, 1);
  const std::optional<PrefixCache::Match> parked =
      prefix_cache_.Find(seq.input(), seq.params().counts_tokens());
  const RunningPrefix running = FindRunningPrefix(running_, i, min_prefix);
  std::optional<PrefixCache::Match> from = parked;
  if (running.now.has_value() && (!parked.has_value() || running.now->length > parked->length)) {
    from = running.now;
  }
  // A sequence ahead is prefilling at least min_prefix more of this prompt's start (a burst of
  // requests with one system prompt): wait for it rather than compute it too.
  if (running.coming >= (from.has_value() ? from->length : 0) + min_prefix)
    return {.wait = true, .from = std::nullopt};
  if (parked.has_value() && from->id == parked->id) prefix_cache_.MarkUsed(parked->id);
  return {.wait = false, .from = from};
}

void Scheduler::AddDrafts(const Sequence& seq, v1::SeqStep& step) {
  if (!Speculates(seq)) return;
  // The accepted drafts and the token after them are generated tokens: never more than
  // max_new_tokens (which also keeps the drafts' positions within the context: validation
  // holds prompt + max_new_tokens to it).
  const int32_t k =
      std::min(options_.speculative_tokens, seq.params().max_new_tokens - seq.num_generated() - 1);
  if (k <= 0) return;
  seq.Tokens(lookup_tokens_);
  ProposeByPromptLookup(lookup_tokens_, options_.prompt_lookup, k, draft_);
  step.mutable_draft_token_ids()->Add(draft_.begin(), draft_.end());
}

Scheduler::StepBatch Scheduler::FormStep() {
  StepBatch batch;
  absl::Duration mask_time;  // finding the guided sequences' masks
  bool guided_in_step = false;
  const int64_t full_prefill_budget = std::max<int64_t>(options_.max_prefill_tokens, 1);
  int64_t prefill_budget = full_prefill_budget;
  // Prompts being scored need every position's logits: at most score_chunk of their tokens
  // go per step, for which the workers keep logits rows.
  int64_t score_budget = std::max<int64_t>(options_.score_chunk, 1);
  std::vector<size_t> guided_generating;  // running_ indexes
  // Puts running_[i] into the step (`prefix`: where its prompt starts from, for a first step;
  // `score_room`: the most tokens a scored prompt's chunk may take, below).
  constexpr int64_t kNoLimit = std::numeric_limits<int64_t>::max();
  auto add = [&](size_t i, const std::optional<PrefixCache::Match>& prefix, int64_t score_room) {
    const std::shared_ptr<Sequence>& seq = running_[i];
    const bool first_step = !seq->started();
    const bool prefilled = seq->prefilled();
    const bool scored = !prefilled && seq->scoring();
    v1::SeqStep* step = batch.request.add_seqs();
    step->set_seq_id(seq->id());
    if (prefilled) {
      step->add_token_ids(seq->last_token());
      step->set_drop_positions(seq->drop_positions());
      AddDrafts(*seq, *step);
    } else {
      if (prefix.has_value()) {
        seq->SkipPrompt(prefix->length);
        step->set_prefix_from(prefix->id);
        step->set_prefix_length(prefix->length);
        batch.hit_tokens += static_cast<uint64_t>(prefix->length);
      }
      const std::span<const int32_t> piece = seq->TakePrompt(
          scored                       ? std::min(score_budget, score_room)
          : options_.prefill_chunk > 0 ? std::min(options_.prefill_chunk, prefill_budget)
                                       : seq->prompt_remaining());
      prefill_budget -= static_cast<int64_t>(piece.size());
      if (scored) score_budget -= static_cast<int64_t>(piece.size());
      step->mutable_token_ids()->Add(piece.begin(), piece.end());
      // A prompt-only request samples nothing, even after its last chunk.
      step->set_prefill_only(!seq->prefilled() || seq->params().max_new_tokens == 0);
      if (seq->scoring()) {
        step->set_prompt_logprobs(true);
        if (std::optional<int32_t> next = seq->next_prompt_token()) {
          step->set_next_prompt_token(*next);
        }
      }
    }
    batch.in_step.push_back(i);
    batch.decoding.push_back(prefilled);
    // Rank 0 keeps a sequence's sampling parameters from its first step on.
    if (first_step) FillSampling(seq->params(), options_.eos_token_ids, step->mutable_sampling());
    step->set_sample_index(seq->num_generated());
    // A guided sequence samples among the tokens its text may go on with. When its guide
    // cannot say which, its tokens still go (the workers keep the step's shape) but nothing
    // is sampled, and it fails after the step.
    absl::Status mask = absl::OkStatus();
    if (!step->prefill_only() && seq->params().guided()) {
      const absl::Time mask_start = absl::Now();
      mask = seq->FillTokenMask(options_.eos_token_ids, static_cast<int32_t>(options_.vocab_size),
                                step->mutable_mask());
      mask_time += absl::Now() - mask_start;
      guided_in_step = true;
      if (!mask.ok()) {
        step->clear_mask();
        step->set_prefill_only(true);
      }
    }
    batch.mask_errors.push_back(std::move(mask));
    step->set_logprobs(seq->params().logprobs);
    step->set_top_logprobs(seq->params().top_logprobs);
  };
  // A whole prompt the budget's remainder left out of the last step has the first claim on
  // this one's (it goes alone when longer than the budget): the prompts ahead of it in the
  // batch (by priority, ones admitted since) leave it room, or it could wait behind them for
  // as long as they keep coming.
  int64_t claimed = 0;
  if (whole_prompt_claim_ != 0) {
    auto it = std::find_if(running_.begin(), running_.end(), [&](const auto& seq) {
      return seq->id() == whole_prompt_claim_ && !seq->started();
    });
    if (it == running_.end()) {
      whole_prompt_claim_ = 0;
    } else {
      claimed = std::min((*it)->prompt_remaining(), full_prefill_budget);
    }
  }
  // In running_'s order: admission's, by priority the lower values first (AdmitLocked).
  for (size_t i = 0; i < running_.size(); ++i) {
    const std::shared_ptr<Sequence>& seq = running_[i];
    const bool first_step = !seq->started();
    const bool prefilled = seq->prefilled();
    const bool scored = !prefilled && seq->scoring();
    if (scored ? score_budget <= 0
               : !prefilled && options_.prefill_chunk > 0 && prefill_budget <= 0) {
      continue;
    }
    if (prefilled && seq->params().guided()) {
      guided_generating.push_back(i);  // after the rest of the batch (below)
      continue;
    }
    // A scored prompt's chunk ahead of the claimant leaves it its room too.
    const int64_t score_room = scored && claimed > 0 ? prefill_budget - claimed : kNoLimit;
    if (score_room <= 0) continue;
    std::optional<PrefixCache::Match> prefix;
    if (first_step) {
      const PrefixChoice choice = ChoosePrefix(i);
      if (choice.wait) {
        // Waiting for a prefill ahead of it, the claim could hold back that very prefill:
        // the claim ends (it claims again if the budget leaves it out once it can go).
        if (seq->id() == whole_prompt_claim_) {
          whole_prompt_claim_ = 0;
          claimed = 0;
        }
        continue;
      }
      prefix = choice.from;
      // A whole prompt goes alone or within the step's prefill budget. Admission keeps to
      // that budget, but a prompt that waited a step above comes beside the next round's.
      const int64_t whole = seq->prompt_remaining() - (prefix.has_value() ? prefix->length : 0);
      if (!scored && options_.prefill_chunk == 0) {
        if (seq->id() == whole_prompt_claim_) {
          claimed = 0;  // its turn: what it left to the others is the budget's
        } else if (claimed > 0 && whole > prefill_budget - claimed) {
          continue;
        }
        if (prefill_budget < full_prefill_budget && whole > prefill_budget) {
          if (whole_prompt_claim_ == 0) whole_prompt_claim_ = seq->id();
          continue;
        }
        if (seq->id() == whole_prompt_claim_) whole_prompt_claim_ = 0;
      }
    }
    add(i, prefix, score_room);
  }
  // The generating guided sequences, round-robin from the one the last step's mask budget
  // stopped at: once this step's masks took SchedulerOptions::step_mask_budget, the others
  // wait for the next step (a few slow guides cannot hold every request's step for their sum,
  // nor the same ones always go first). One goes every step, whatever the prompts took.
  const size_t n = guided_generating.size();
  size_t first = 0;
  for (size_t k = 0; k < n; ++k) {
    if (running_[guided_generating[k]]->id() == next_masked_) first = k;
  }
  next_masked_ = 0;
  for (size_t k = 0; k < n; ++k) {
    const size_t i = guided_generating[(first + k) % n];
    if (k > 0 && mask_time >= options_.step_mask_budget) {
      if (next_masked_ == 0) next_masked_ = running_[i]->id();
      continue;
    }
    add(i, std::nullopt, kNoLimit);
  }
  if (guided_in_step && metrics_ != nullptr) metrics_->RecordGuidedMasks(mask_time);
  return batch;
}

void Scheduler::TakeResults(const StepBatch& batch, const v1::StepResponse& response) {
  for (size_t i : batch.in_step) running_[i]->MarkStepRan();
  {
    absl::MutexLock lock(&mu_);
    prefix_hit_tokens_ += batch.hit_tokens;  // the copies of a step that ran
  }
  std::vector<Exit> exits(running_.size(), Exit::kStays);
  int64_t drafts = 0;    // draft tokens of the step
  int64_t accepted = 0;  // of them, those that became output (not past a sequence's end)
  for (size_t j = 0; j < batch.in_step.size(); ++j) {
    const std::shared_ptr<Sequence>& seq = running_[batch.in_step[j]];
    const v1::SeqResult& r = response.results(static_cast<int>(j));
    const v1::SeqStep& sent = batch.request.seqs(static_cast<int>(j));
    Exit& exit = exits[batch.in_step[j]];
    if (seq->cancelled()) {
      exit = Exit::kRelease;
      continue;
    }
    if (absl::Status scored = sent.prompt_logprobs() ? seq->AddPromptScores(r) : absl::OkStatus();
        !scored.ok()) {
      seq->Fail(std::move(scored));
      exit = Exit::kRelease;
    } else if (!batch.mask_errors[j].ok()) {
      seq->Fail(batch.mask_errors[j]);
      exit = Exit::kRelease;
    } else if (!sent.prefill_only() && !r.sample_error().empty()) {
      // Rank 0 could not sample this sequence's token: it fails alone. A request that
      // passed validation cannot cause this (the model's logits did, e.g. all NaN).
      seq->Fail(absl::InternalError(
          absl::StrCat("the next token could not be sampled: ", r.sample_error())));
      exit = Exit::kRelease;
    } else if (!sent.prefill_only() && options_.vocab_size > 0 &&
               (r.token_id() < 0 || r.token_id() >= options_.vocab_size)) {
      // Not text the tokenizer could decode (it would stream as nothing): a worker's bug.
      seq->Fail(
          absl::InternalError(absl::StrCat("rank 0 returned token id ", r.token_id(),
                                           " outside the vocabulary of ", options_.vocab_size)));
      exit = Exit::kRelease;
    } else if (r.drafts_accepted() < 0 || r.drafts_accepted() > sent.draft_token_ids_size() ||
               ((sent.logprobs() || sent.top_logprobs() > 0) &&
                r.drafts_size() != r.drafts_accepted())) {
      seq->Fail(absl::InternalError(
          absl::StrCat("rank 0 accepted ", r.drafts_accepted(), " of ", sent.draft_token_ids_size(),
                       " draft tokens, with ", r.drafts_size(), " scores")));
      exit = Exit::kRelease;
    } else if (!sent.prefill_only()) {
      const Sequence::StepOutput out = seq->AddStepOutput(sent, r, options_.eos_token_ids);
      drafts += sent.draft_token_ids_size();
      accepted += out.drafts_kept;
      // A sequence that failed on its token (one its guide rules out) is no prefix to keep.
      if (out.finished) exit = seq->failed() ? Exit::kRelease : Exit::kPark;
    } else if (seq->prefilled() && seq->params().max_new_tokens == 0) {
      seq->FinishPromptOnly();
      exit = Exit::kPark;
    }
  }
  if (drafts > 0) {
    {
      absl::MutexLock lock(&mu_);
      draft_tokens_ += static_cast<uint64_t>(drafts);
      accepted_draft_tokens_ += static_cast<uint64_t>(accepted);
    }
    if (metrics_ != nullptr) metrics_->RecordSpeculation(drafts, accepted);
  }
  Retire(exits);
}

}  // namespace llmint8::coordinator
