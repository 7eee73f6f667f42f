// Which of the joined workers form the tensor-parallel group: the coordinator's use of the
// memory planner (coordinator/planner.h) at group formation.
//
// Each worker reports the memory it may use (WorkerInfoResponse.memory_bytes: its
// --memory-limit, MemAvailable on CPU; see worker/usable_memory.h). Workers that report the
// free memory of one host or GPU (the same memory_pool) each count for their part of it
// (MemoryPoolShares; the coordinator divides before it calls ChooseGroup). With every report
// known, PlanGroup decides:
//   kSmallest    the smallest valid TP degree whose that-many largest workers each hold a
//                shard; the other workers stay idle (int8 on 4 "GPUs" that fit it in 2: TP=2);
//   kAllWorkers  every worker (TP = their count, the service's original behaviour), provided
//                the model fits them at all (PlanGroup) and each holds its TP=N shard.
// When the model does not fit: FailedPrecondition with the planner's message, e.g.
// "fp16 needs 4 workers with 2 GiB, 2 joined; int8 fits in 2 (opt-2.7b)".
// The plan's reserve is `reserve_sequences` sequences of `max_context` tokens (KV cache) and
// the step the workers keep room for (max_step_tokens, max_step_rows): what a worker needs to
// report KV room for that reserve once loaded (LoadShardResponse.kv_capacity_tokens). CPU workers
// have no CUDA runtime overhead; CUDA ones count kRuntimeOverheadBytes. Not planned (`planned`
// false): dtype fp32 (the planner models fp16 / int8 only) or a worker that reports 0 (unknown);
// then every worker joins, but with kSmallest the most that split the model (the largest valid TP
// degree within them).
//
// Pure function; thread-safe.
#ifndef LLMINT8_COORDINATOR_GROUP_DECISION_H_
#define LLMINT8_COORDINATOR_GROUP_DECISION_H_

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "model/config.h"

namespace llmint8::coordinator {

enum class GroupPolicy { kAllWorkers, kSmallest };
std::string_view GroupPolicyName(GroupPolicy policy);  // "all", "smallest"
// "all" | "smallest"; InvalidArgument otherwise.
absl::StatusOr<GroupPolicy> ParseGroupPolicy(std::string_view name);

struct GroupRequest {
  GroupPolicy policy = GroupPolicy::kAllWorkers;
  std::string dtype = "fp16";   // "fp16", "int8", "fp32"
  std::string device = "cpu";   // "cpu" or "cuda"
  int64_t reserve_sequences = 1;
  int64_t max_context = 0;      // 0: the model's max_position_embeddings
  int64_t max_step_tokens = 0;  // the most tokens a step carries (WorkerGroupOptions); 0: the
                                // planner's default (PlanOptions)
  int64_t max_step_rows = 0;    // the most logits rows a step keeps; 0: one per sequence
  int64_t max_batch = 0;        // the most sequences at once; 0: reserve_sequences
};

struct GroupChoice {
  std::vector<int> members;  // indices into the reports, in rank order (ascending)
  bool planned = false;      // false: not planned (fp32 or unknown memory; see above)
  int64_t bytes_per_worker = 0;  // the plan's bytes per worker (planned only)
  std::string summary;       // for the log, e.g. "int8 fits in 2 of 4 workers (TP=2)"
};

// How many of the workers share each one's memory pool (WorkerInfoResponse.memory_pool, e.g.
// "gpu:GPU-..." for ranks on one GPU): for each index the number of entries equal to its pool,
// itself included; 1 for an empty pool (its own --memory_limit, or not known).
std::vector<int> MemorySharers(std::span<const std::string> pools);

// What each worker plans with (WorkerGroup::Choose): its own report when its pool is empty;
// otherwise an equal part of the pool, whose size is its free memory (a member's report less
// what that member holds; the largest, as the members read it at different moments) plus
// what every member holds. So shards still loaded from a group that broke count once, not
// against each member again. `reported`, `held` and `pools` are parallel.
std::vector<int64_t> MemoryPoolShares(std::span<const int64_t> reported,
                                      std::span<const int64_t> held,
                                      std::span<const std::string> pools);

// Errors: FailedPrecondition (the workers cannot hold the model; the planner's message),
// InvalidArgument (no reports, bad dtype / reserve / config).
absl::StatusOr<GroupChoice> ChooseGroup(const model::OptConfig& config,
                                        const GroupRequest& request,
                                        std::span<const int64_t> reported_bytes);

}  // namespace llmint8::coordinator

#endif  // LLMINT8_COORDINATOR_GROUP_DECISION_H_
