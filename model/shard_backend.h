// The internal interface between ShardModel (model/shard_model.h, the public API the worker
// calls) and a device backend that holds the weights and KV cache elsewhere than host memory
// (model/cuda: the GPU). The CPU forward stays inside ShardModel; when ShardOptions::device is
// kCuda, ShardModel::Load builds a backend with MakeCudaShardBackend and forwards Step, Release,
// ContextLength, num_sequences and memory() to it. Contracts are those of the ShardModel methods
// of the same names.
//
// Also here: what every backend shares (batch validation, the names of precisions).
#ifndef LLMINT8_MODEL_SHARD_BACKEND_H_
#define LLMINT8_MODEL_SHARD_BACKEND_H_

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "comm/communicator.h"
#include "model/checkpoint.h"
#include "model/config.h"
#include "model/shard_model.h"
#include "model/shard_plan.h"

namespace llmint8::model {

class ShardBackend {
 public:
  virtual ~ShardBackend() = default;
  virtual absl::StatusOr<Logits> Step(std::span<const ShardModel::SequenceInput> batch,
                                      bool all_positions) = 0;
  virtual absl::Status Release(uint64_t seq_id) = 0;
  virtual int64_t ContextLength(uint64_t seq_id) const = 0;
  virtual int64_t num_sequences() const = 0;
  virtual MemoryStats memory() const = 0;
  // ShardModel::KvCapacityTokens.
  virtual int64_t KvCapacityTokens(int64_t usable_bytes, int64_t step_tokens, int64_t step_rows,
                                   int64_t max_sequences) const = 0;
};

// Loads this rank's slices onto the CUDA device options.cuda_device (model/cuda). `plan` is
// MakeShardPlan(config, comm size, rank); `max_context` is already resolved (> 0) and the
// options already checked by ShardModel::Load (precision, threshold, memory limit, tp/comm
// consistency). Unimplemented in a build without CUDA.
absl::StatusOr<std::unique_ptr<ShardBackend>> MakeCudaShardBackend(
    const OptConfig& config, const CheckpointSource& source, const ShardPlan& plan,
    comm::Communicator* comm, const ShardOptions& options, int64_t max_context,
    const LoadProgressFn& progress);

// The checks of ShardModel::Step, in this order, before any state changes: empty batch, empty
// token list, token id outside [0, vocab_size), a bad prefix (negative, for a sequence that
// exists, from itself or from one holding fewer positions), a drop that is negative or more
// than the sequence holds (a new one, with a prefix or not, holds none), a sequence over
// max_context
// (OutOfRange), duplicate seq_id. `length(seq_id)` gives the cached positions (0 when unknown);
// `sorted_ids` is scratch (reused to avoid allocating per step).
absl::Status ValidateStepBatch(std::span<const ShardModel::SequenceInput> batch, int64_t vocab_size,
                               int64_t max_context, absl::FunctionRef<int64_t(uint64_t)> length,
                               std::vector<uint64_t>* sorted_ids);

// The positions a batch entry's sequence holds before the step: its prefix, or the `cached`
// positions of its sequence less those it drops.
inline int64_t PastLength(const ShardModel::SequenceInput& in, int64_t cached) {
  return in.prefix_length > 0 ? in.prefix_length : cached - in.drop;
}

// The rows of a step that get logits (Logits): `row_begin` gets batch + 1 entries and
// `source_rows` one per logits row, the step's token row it is computed from (tokens are
// numbered in batch order). Returns the number of logits rows.
int64_t PlanLogitRows(std::span<const ShardModel::SequenceInput> batch, bool all_positions,
                      std::vector<int64_t>* row_begin, std::vector<int32_t>* source_rows);

// A step's error past its validation and the group's vote on room (the forward, a prefix
// copy): not the request's fault, so never a code the worker keeps the group for. Memory that
// ran out stays ResourceExhausted alone (the step is refused); with TP > 1 the other ranks are
// inside the forward's collectives already, waiting for this one: Internal, which the worker
// takes for a broken group. An argument error of a kernel or a collective (InvalidArgument,
// OutOfRange: a bug of this rank's computation, possibly on this rank alone) is Internal too,
// so the group breaks at once instead of its peers waiting out the collectives' timeout.
absl::Status ForwardError(absl::Status st, int rank, int tp);

// The group's answer to "does this step's memory fit", for a step on which some rank may
// allocate (a condition every rank evaluates alike: the same batch on the same history). Each
// rank contributes `room` (OK, or why its memory does not fit); `sum_over_ranks(x)` all-reduces
// one float over the group. Returns `room` when it is not OK, ResourceExhausted when another
// rank lacks room, the communicator's error when the vote fails, OK when every rank has room.
// Without the vote one rank would refuse the step while the others wait for it in their first
// collective until the timeout breaks the group; with it every rank refuses alike and the
// coordinator fails just that step's sequences.
absl::Status AgreeOnRoom(const absl::Status& room, int rank,
                         absl::FunctionRef<absl::StatusOr<float>(float)> sum_over_ranks);

}  // namespace llmint8::model

#endif  // LLMINT8_MODEL_SHARD_BACKEND_H_
