#include "coordinator/fake_step_group.h"

#include <algorithm>
#include <iterator>
#include <limits>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/sampling_limits.h"

namespace llmint8::coordinator::testing {
namespace {

// What rank 0 samples under a token mask: `wanted` when the mask allows it, else the lowest id
// it allows.
int32_t MaskedToken(const v1::TokenMask& mask, int32_t wanted) {
  const auto& ids = mask.token_ids();
  const bool listed = std::find(ids.begin(), ids.end(), wanted) != ids.end();
  if (listed == mask.allow()) return wanted;
  if (mask.allow()) return ids.empty() ? -1 : *std::min_element(ids.begin(), ids.end());
  for (int32_t id = 0;; ++id) {
    if (std::find(ids.begin(), ids.end(), id) == ids.end()) return id;
  }
}

}  // namespace

int32_t FakeNextToken(std::span<const int32_t> tokens) {
  uint32_t h = 17;
  for (int32_t t : tokens) h = h * 31 + static_cast<uint32_t>(t);
  return 10 + static_cast<int32_t>(h % 1000);
}

std::vector<int32_t> FakeGreedy(std::vector<int32_t> prompt, int count) {
  std::vector<int32_t> out;
  for (int i = 0; i < count; ++i) {
    out.push_back(FakeNextToken(prompt));
    prompt.push_back(out.back());
  }
  return out;
}

float FakePromptLogprob(int64_t index) { return -0.125f * static_cast<float>(index); }

float FakeDraftLogprob(int32_t sample_index) {
  return -0.5f - 0.25f * static_cast<float>(sample_index);
}

bool FakeStepGroup::ready() const {
  absl::MutexLock lock(&mu_);
  return state_ == State::kReady;
}

int64_t FakeStepGroup::epoch() const {
  absl::MutexLock lock(&mu_);
  return epoch_;
}

bool FakeStepGroup::draining() const {
  absl::MutexLock lock(&mu_);
  return draining_;
}

void FakeStepGroup::Drain() {
  absl::MutexLock lock(&mu_);
  draining_ = true;
}

bool FakeStepGroup::WaitReady(absl::Duration timeout) const {
  absl::MutexLock lock(&mu_);
  auto ready = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return state_ == State::kReady; };
  return mu_.AwaitWithTimeout(absl::Condition(&ready), timeout);
}

absl::Status FakeStepGroup::refusal() const {
  absl::MutexLock lock(&mu_);
  return state_ == State::kRefused ? refusal_ : absl::OkStatus();
}

std::optional<int64_t> FakeStepGroup::kv_capacity_tokens() const { return options_.kv_capacity; }

void FakeStepGroup::Violation(std::string what) { violations_.push_back(std::move(what)); }

int32_t FakeStepGroup::Next(std::span<const int32_t> tokens) const {
  const size_t period = static_cast<size_t>(options_.period);
  return period > 0 && tokens.size() >= period ? tokens[tokens.size() - period]
                                               : FakeNextToken(tokens);
}

absl::StatusOr<v1::StepResponse> FakeStepGroup::Step(v1::StepRequest request, int64_t epoch) {
  std::function<void()> before;
  {
    absl::MutexLock lock(&mu_);
    if (state_ != State::kReady) return StepNotSentError("the fake group is not ready");
    const int number = static_cast<int>(steps_.size()) + 1;
    if (auto it = before_.find(number); it != before_.end()) {
      before = std::move(it->second);
      before_.erase(it);
    }
  }
  if (before) before();

  absl::MutexLock lock(&mu_);
  if (cancelled_) return absl::CancelledError("the fake group's steps were cancelled");
  if (state_ != State::kReady) return StepNotSentError("the fake group is not ready");
  if (epoch != epoch_) return StepNotSentError("the fake group re-formed since");
  request.set_epoch(epoch_);
  steps_.push_back(request);
  const int number = static_cast<int>(steps_.size());
  if (auto it = failures_.find(number); it != failures_.end()) {
    const Failure failure = std::move(it->second);
    failures_.erase(it);
    if (failure.breaks) {
      state_ = State::kBroken;
      held_.clear();
    }
    return failure.status;
  }

  // The step applies whole or not at all, as on a worker.
  std::map<uint64_t, std::vector<int32_t>> held = held_;
  std::set<uint64_t> in_step;
  v1::StepResponse response;
  for (const v1::SeqStep& s : request.seqs()) {
    const uint64_t id = s.seq_id();
    const std::string where = absl::StrCat("step ", number, ", sequence ", id, ": ");
    if (!in_step.insert(id).second) Violation(where + "twice in one step");
    if (s.token_ids().empty()) Violation(where + "no tokens");
    auto it = held.find(id);
    if (it == held.end()) {
      // A sequence's first step brings its sampling parameters: without them, this is a
      // sequence the group no longer holds (a worker would start it anew).
      if (!s.has_sampling()) Violation(where + "not held, and no sampling parameters");
      std::vector<int32_t> tokens;
      if (s.prefix_length() > 0) {
        // The source's positions as the workers held them before this step.
        const auto source = held_.find(s.prefix_from());
        if (source == held_.end() || std::ssize(source->second) < s.prefix_length()) {
          Violation(absl::StrCat(where, "prefix ", s.prefix_length(), " of sequence ",
                                 s.prefix_from(), ", which holds ",
                                 source == held_.end() ? 0 : std::ssize(source->second)));
          return absl::InvalidArgumentError(where + "no such prefix");
        }
        tokens.assign(source->second.begin(), source->second.begin() + s.prefix_length());
      }
      it = held.emplace(id, std::move(tokens)).first;
    } else {
      if (s.prefix_length() > 0) Violation(where + "a prefix for a live sequence");
      if (s.has_sampling()) Violation(where + "sampling parameters sent again");
    }
    std::vector<int32_t>& tokens = it->second;
    if (s.drop_positions() != 0) {
      if (s.drop_positions() < 0 || s.drop_positions() > std::ssize(tokens) ||
          s.prefix_length() > 0) {
        Violation(
            absl::StrCat(where, "drops ", s.drop_positions(), " of ", tokens.size(), " positions"));
        return absl::InvalidArgumentError(where + "bad drop");
      }
      tokens.resize(tokens.size() - static_cast<size_t>(s.drop_positions()));
    }
    const int64_t past = std::ssize(tokens);
    tokens.insert(tokens.end(), s.token_ids().begin(), s.token_ids().end());
    v1::SeqResult* result = response.add_results();
    result->set_seq_id(id);
    if (s.prompt_logprobs()) {
      // The positions after this step's first token, then the next chunk's first.
      for (int64_t k = past + 1; k < std::ssize(tokens); ++k) {
        result->add_prompt()->set_logprob(FakePromptLogprob(k));
      }
      if (s.has_next_prompt_token()) {
        result->add_prompt()->set_logprob(FakePromptLogprob(std::ssize(tokens)));
      }
    }
    if (s.prefill_only()) {
      if (s.has_mask()) Violation(where + "a token mask on a step that samples nothing");
      if (s.draft_token_ids_size() > 0)
        Violation(where + "draft tokens on a step that samples nothing");
      result->set_token_id(-1);
    } else if (s.draft_token_ids_size() > 0) {
      // A worker refuses these (CheckDrafts in worker/worker_service.cc).
      if (s.has_mask() || s.prompt_logprobs() || s.draft_token_ids_size() > kMaxSpeculativeTokens) {
        Violation(absl::StrCat(where, s.draft_token_ids_size(),
                               " draft tokens, or drafts with a mask or a score"));
      }
      // Accepted while each is what rank 0 samples after the tokens before it.
      int32_t accepted = 0;
      int32_t next = Next(tokens);
      while (accepted < s.draft_token_ids_size() && next == s.draft_token_ids(accepted)) {
        tokens.push_back(next);
        next = Next(tokens);
        ++accepted;
      }
      // The rest are cached too, until the next step drops them.
      tokens.insert(tokens.end(), s.draft_token_ids().begin() + accepted,
                    s.draft_token_ids().end());
      result->set_drafts_accepted(accepted);
      // Asked for logprobs: each accepted draft's, as FakeDraftLogprob gives them.
      if (s.logprobs() || s.top_logprobs() > 0) {
        for (int32_t d = 0; d < accepted; ++d) {
          result->add_drafts()->set_logprob(FakeDraftLogprob(s.sample_index() + d));
        }
      }
      result->set_token_id(next);
    } else {
      result->set_token_id(s.has_mask() && !options_.ignore_masks
                               ? MaskedToken(s.mask(), Next(tokens))
                               : Next(tokens));
    }
  }
  int64_t positions = 0;
  for (const auto& [id, tokens] : held) positions += std::ssize(tokens);
  // The peak counts what each step asked for, also a step refused for it (the tests compare
  // it with the capacity).
  peak_positions_ = std::max(peak_positions_, positions);
  if (options_.kv_capacity.has_value() && positions > *options_.kv_capacity) {
    Violation(absl::StrCat("step ", number, ": ", positions, " positions, capacity ",
                           *options_.kv_capacity));
    return absl::ResourceExhaustedError("the step does not fit in the KV cache");
  }
  if (holds_.has_value() && positions > *holds_) {
    ++refused_steps_;
    return absl::ResourceExhaustedError(absl::StrCat("Step: the batch needs ", positions,
                                                     " KV positions; the workers hold ", *holds_));
  }
  held_ = std::move(held);
  if (std::find(short_.begin(), short_.end(), number) != short_.end()) {
    response.mutable_results()->RemoveLast();
  }
  if (std::find(swapped_.begin(), swapped_.end(), number) != swapped_.end() &&
      response.results_size() >= 2) {
    response.mutable_results()->SwapElements(0, 1);
  }
  if (std::find(nan_scores_.begin(), nan_scores_.end(), number) != nan_scores_.end()) {
    for (v1::SeqResult& r : *response.mutable_results()) {
      for (v1::PromptScore& p : *r.mutable_prompt()) {
        p.set_logprob(std::numeric_limits<float>::quiet_NaN());
      }
    }
  }
  return response;
}

absl::Status FakeStepGroup::Release(const std::vector<uint64_t>& seq_ids) {
  absl::MutexLock lock(&mu_);
  if (state_ != State::kReady) return absl::OkStatus();  // nothing of it is held
  if (fail_release_ && !seq_ids.empty()) {
    fail_release_ = false;
    state_ = State::kBroken;
    held_.clear();
    return absl::UnavailableError("Release on worker 1: the worker is gone");
  }
  for (uint64_t id : seq_ids) held_.erase(id);
  return absl::OkStatus();
}

void FakeStepGroup::FailStep(int step, absl::Status status, bool breaks) {
  absl::MutexLock lock(&mu_);
  failures_[step] = Failure{.status = std::move(status), .breaks = breaks};
}

void FakeStepGroup::AnswerShort(int step) {
  absl::MutexLock lock(&mu_);
  short_.push_back(step);
}

void FakeStepGroup::AnswerSwapped(int step) {
  absl::MutexLock lock(&mu_);
  swapped_.push_back(step);
}

void FakeStepGroup::ScoreNaN(int step) {
  absl::MutexLock lock(&mu_);
  nan_scores_.push_back(step);
}

void FakeStepGroup::FailNextRelease() {
  absl::MutexLock lock(&mu_);
  fail_release_ = true;
}

void FakeStepGroup::BeforeStep(int step, std::function<void()> fn) {
  absl::MutexLock lock(&mu_);
  before_[step] = std::move(fn);
}

void FakeStepGroup::Break() {
  absl::MutexLock lock(&mu_);
  state_ = State::kBroken;
  held_.clear();
}

void FakeStepGroup::Reform() {
  absl::MutexLock lock(&mu_);
  ++epoch_;
  state_ = State::kReady;
  draining_ = false;
  refusal_ = absl::OkStatus();
  held_.clear();
}

void FakeStepGroup::CancelSteps() {
  absl::MutexLock lock(&mu_);
  cancelled_ = true;
}

bool FakeStepGroup::AwaitCancel(absl::Duration timeout) const {
  absl::MutexLock lock(&mu_);
  return mu_.AwaitWithTimeout(absl::Condition(&cancelled_), timeout);
}

void FakeStepGroup::SetHolds(std::optional<int64_t> holds) {
  absl::MutexLock lock(&mu_);
  holds_ = holds;
}

void FakeStepGroup::Refuse(absl::Status why) {
  absl::MutexLock lock(&mu_);
  state_ = State::kRefused;
  refusal_ = std::move(why);
  held_.clear();
}

std::vector<v1::StepRequest> FakeStepGroup::steps() const {
  absl::MutexLock lock(&mu_);
  return steps_;
}

std::map<uint64_t, std::vector<int32_t>> FakeStepGroup::held() const {
  absl::MutexLock lock(&mu_);
  return held_;
}

int64_t FakeStepGroup::peak_positions() const {
  absl::MutexLock lock(&mu_);
  return peak_positions_;
}

int FakeStepGroup::refused_steps() const {
  absl::MutexLock lock(&mu_);
  return refused_steps_;
}

std::vector<std::string> FakeStepGroup::violations() const {
  absl::MutexLock lock(&mu_);
  return violations_;
}

}  // namespace llmint8::coordinator::testing
