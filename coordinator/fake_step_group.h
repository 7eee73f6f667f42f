// A StepGroup in memory, for the scheduler's unit tests: it keeps each live sequence's cached
// tokens and checks every step as a worker does (a sequence's first step creates it, its
// prefix source is live and holds the copied positions, no sequence twice in a step, the KV
// capacity holds), and rank 0 "samples" a token that depends on the sequence's tokens alone
// (FakeNextToken), so a sequence started from a copied prefix samples what the same tokens
// prefilled would. Draft tokens (SeqStep.draft_token_ids) are verified as rank 0 does: each is
// accepted while it is the token rank 0 samples there, and all are cached until the next
// step drops those not accepted. Any step or release that a worker would refuse, or that
// shows the scheduler lost track, is recorded in violations(). Steps can be scripted to fail.
//
//   FakeStepGroup group({.kv_capacity = 256});
//   Scheduler scheduler(options, &group);
//   group.FailStep(3, absl::UnavailableError("worker lost"), /*breaks=*/true);
//
// Thread-safe.
#ifndef LLMINT8_COORDINATOR_FAKE_STEP_GROUP_H_
#define LLMINT8_COORDINATOR_FAKE_STEP_GROUP_H_

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "coordinator/step_group.h"

namespace llmint8::coordinator::testing {

// Rank 0's token after a sequence's cached `tokens`: never the end-of-sequence id 2.
int32_t FakeNextToken(std::span<const int32_t> tokens);
// The tokens a fake group samples greedily after `prompt`, `count` of them.
std::vector<int32_t> FakeGreedy(std::vector<int32_t> prompt, int count);
// The logprob a fake group gives prompt token `index` (the first scored one is index 1).
float FakePromptLogprob(int64_t index);
// The logprob it gives an accepted draft token sampled at `sample_index` (a token it samples
// otherwise gets none).
float FakeDraftLogprob(int32_t sample_index);

class FakeStepGroup : public StepGroup {
 public:
  struct Options {
    std::optional<int64_t> kv_capacity;  // positions summed over sequences; nullopt: unknown
    // Positions the workers really hold, when less than the capacity they report: a step
    // beyond is refused (RESOURCE_EXHAUSTED), as a worker's under --memory_limit, not a
    // violation. nullopt: what they report.
    std::optional<int64_t> holds;
    bool token_masks = true;  // takes_token_masks()
    bool ignore_masks = false;  // rank 0 samples as if a step had no mask (a worker's bug)
    // > 0: rank 0 samples the token `period` positions back once a sequence holds that many
    // (its output loops, as prompt lookup predicts), else FakeNextToken.
    int32_t period = 0;
  };
  explicit FakeStepGroup(Options options) : options_(options), holds_(options.holds) {}

  bool ready() const override;
  int64_t epoch() const override;
  bool draining() const override;
  bool WaitReady(absl::Duration timeout) const override;
  absl::Status refusal() const override;
  std::optional<int64_t> kv_capacity_tokens() const override;
  bool takes_token_masks() const override { return options_.token_masks; }
  absl::StatusOr<v1::StepResponse> Step(v1::StepRequest request, int64_t epoch) override;
  absl::Status Release(const std::vector<uint64_t>& seq_ids) override;
  void CancelSteps() override;

  // ---- Scripting ----
  // Step number `step` (1 = the first the group sees, over all epochs) returns `status`.
  // `breaks`: as a lost worker, the group is not ready afterwards and holds nothing; else
  // every rank refused the batch alike and the group holds what it held.
  void FailStep(int step, absl::Status status, bool breaks);
  // Step number `step` returns one result fewer than the batch has.
  void AnswerShort(int step);
  // Step number `step` returns its first two results in each other's place.
  void AnswerSwapped(int step);
  // Step number `step` scores every prompt token it scores NaN (a row of non-finite logits).
  void ScoreNaN(int step);
  // The next Release that frees something fails as a lost worker's: UNAVAILABLE, the group
  // not ready afterwards and holding nothing.
  void FailNextRelease();
  // Called inside Step number `step`, before it runs (no lock held): e.g. to cancel.
  void BeforeStep(int step, std::function<void()> fn);
  // A lost worker between steps: not ready; what the group held is gone.
  void Break();
  // The group re-forms (a new epoch, ready, holding nothing).
  void Reform();
  // A member starts shutting down: draining() until Reform.
  void Drain();
  // The workers cannot hold the model: not ready, refusal() is `why` until Reform.
  void Refuse(absl::Status why);
  // From the next step on the workers hold `holds` positions (Options::holds): memory another
  // process took, or gave back.
  void SetHolds(std::optional<int64_t> holds);

  // Waits up to `timeout` for CancelSteps; whether it came (e.g. from a BeforeStep function:
  // a step the workers take long over).
  bool AwaitCancel(absl::Duration timeout) const;

  // ---- What it saw ----
  std::vector<v1::StepRequest> steps() const;
  // Live sequences: id -> cached tokens.
  std::map<uint64_t, std::vector<int32_t>> held() const;
  // The most KV positions a step asked for (a step refused for want of room included).
  int64_t peak_positions() const;
  int refused_steps() const;  // refused for want of room (Options::holds)
  std::vector<std::string> violations() const;

 private:
  enum class State { kReady, kBroken, kRefused };

  void Violation(std::string what) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Rank 0's token after a sequence's cached `tokens` (Options::period).
  int32_t Next(std::span<const int32_t> tokens) const;

  const Options options_;
  mutable absl::Mutex mu_;
  State state_ ABSL_GUARDED_BY(mu_) = State::kReady;
  int64_t epoch_ ABSL_GUARDED_BY(mu_) = 1;
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status refusal_ ABSL_GUARDED_BY(mu_);
  std::map<uint64_t, std::vector<int32_t>> held_ ABSL_GUARDED_BY(mu_);
  int64_t peak_positions_ ABSL_GUARDED_BY(mu_) = 0;
  int refused_steps_ ABSL_GUARDED_BY(mu_) = 0;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;        // CancelSteps
  std::optional<int64_t> holds_ ABSL_GUARDED_BY(mu_);  // Options::holds, or SetHolds
  std::vector<v1::StepRequest> steps_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> violations_ ABSL_GUARDED_BY(mu_);
  struct Failure {
    absl::Status status;
    bool breaks = false;
  };
  std::map<int, Failure> failures_ ABSL_GUARDED_BY(mu_);
  std::map<int, std::function<void()>> before_ ABSL_GUARDED_BY(mu_);
  std::vector<int> short_ ABSL_GUARDED_BY(mu_);
  std::vector<int> swapped_ ABSL_GUARDED_BY(mu_);
  std::vector<int> nan_scores_ ABSL_GUARDED_BY(mu_);
  bool fail_release_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace llmint8::coordinator::testing

#endif  // LLMINT8_COORDINATOR_FAKE_STEP_GROUP_H_
