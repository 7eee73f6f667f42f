// What the scheduler drives: a tensor-parallel group that runs batched steps in lockstep and
// holds the sequences' KV caches between them. WorkerGroup (coordinator/worker_group.h) is the
// real one, over gRPC; coordinator/fake_step_group.h is an in-memory one for the scheduler's
// tests that checks every step as a worker would.
//
// Thread-safety: Step and Release are called by one thread at a time (the scheduler); the
// queries are safe from any thread.
#ifndef LLMINT8_COORDINATOR_STEP_GROUP_H_
#define LLMINT8_COORDINATOR_STEP_GROUP_H_

#include <cstdint>
#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/cord.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "llmint8/v1/worker.pb.h"

namespace llmint8::coordinator {

// A Step that reached no worker (the group was not ready, or re-formed since the batch was
// built): UNAVAILABLE, marked so that the scheduler takes the step's input back, as nothing of
// it ran (a request not started yet waits for the next group instead of failing).
inline constexpr absl::string_view kStepNotSentPayload = "type.llmint8/step-not-sent";
inline absl::Status StepNotSentError(absl::string_view message) {
  absl::Status status = absl::UnavailableError(message);
  status.SetPayload(kStepNotSentPayload, absl::Cord("1"));
  return status;
}
inline bool StepNotSent(const absl::Status& status) {
  return !status.ok() && status.GetPayload(kStepNotSentPayload).has_value();
}

class StepGroup {
 public:
  virtual ~StepGroup() = default;

  // Whether Step and Release are accepted now.
  virtual bool ready() const = 0;
  // Changes each time the group (re-)forms: what a group of an older epoch held is gone.
  virtual int64_t epoch() const = 0;
  // A member is shutting down: the sequences running go on to their end, but nothing new may
  // start in this group (it breaks once the member has gone, and re-forms without it or when
  // it is back).
  virtual bool draining() const = 0;
  // Blocks until ready() or `timeout`; true when ready.
  virtual bool WaitReady(absl::Duration timeout) const = 0;
  // OK, or FAILED_PRECONDITION while the workers cannot hold the model (waiting does not help).
  virtual absl::Status refusal() const = 0;
  // KV cache positions the group can hold, summed over sequences; nullopt when unknown.
  virtual std::optional<int64_t> kv_capacity_tokens() const = 0;
  // Whether every worker applies SeqStep.mask (guided decoding): workers older than masks
  // would sample freely.
  virtual bool takes_token_masks() const = 0;

  // Runs one step (its epoch is filled in) and returns rank 0's response. A failure leaves the
  // group not ready (UNAVAILABLE), except a batch every rank refused alike (INVALID_ARGUMENT,
  // OUT_OF_RANGE, RESOURCE_EXHAUSTED): then the group stays ready and holds what it held.
  // `epoch` is the group epoch() the batch was built for: when the group has re-formed since,
  // its workers hold none of the batch's sequences, and the step is UNAVAILABLE without running
  // (StepNotSentError, as when the group is not ready).
  virtual absl::StatusOr<v1::StepResponse> Step(v1::StepRequest request, int64_t epoch) = 0;
  // Frees sequences' caches (ids it does not hold are ignored); a failure breaks the group.
  virtual absl::Status Release(const std::vector<uint64_t>& seq_ids) = 0;
  // The scheduler stops: a Step in progress returns CANCELLED without waiting for the workers
  // (up to the step timeout, on a long prefill), and so does every later one; Release is not
  // affected. Any thread.
  virtual void CancelSteps() = 0;
};

}  // namespace llmint8::coordinator

#endif  // LLMINT8_COORDINATOR_STEP_GROUP_H_
