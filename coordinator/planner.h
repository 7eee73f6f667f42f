// Memory planner: how many GPUs (tensor-parallel ranks) an OPT model needs, and what each holds.
//
// Plan() answers "smallest valid TP degree that fits": TP must divide num_attention_heads and
// ffn_dim (the vocab need not: it is padded to ceil(vocab / tp) rows per rank, as in
// model/shard_plan.h). Bytes per GPU are counted by category, for the shard layout of
// model/shard_plan.h:
//   weights         attention + FFN linear weights of this rank (1 byte/param int8, 2 fp16);
//   int8_scales     fp32 per-output-row absmax of those int8 weights (0 in fp16);
//   fp16_tensors    tensors that stay 16-bit in both dtypes: the vocab shard of the (tied)
//                   embedding / LM head (and of an untied LM head), positions, LayerNorms,
//                   biases, project_in/out;
//   kv_cache        2 (K and V) * layers * batch * context * hidden / tp * 2 bytes (fp16;
//                   a CPU worker's: see PlanOptions::cpu);
//   workspace       activation buffers of the largest step (a prefill of batch x context, or
//                   the step a coordinator's workers keep room for: PlanOptions);
//   runtime         CUDA context, cuBLASLt workspace, NCCL buffers, allocator slack: the
//                   constant kRuntimeOverheadBytes (see docs/planner.md).
// All sizes are bytes. GPU capacities in the --compare table are the cards' DRAM sizes, which
// are binary: a "24 GB" RTX 3090/4090 has 24 GiB (docs/planner.md). "GB" typed by a user is
// decimal (10^9), "GiB" binary; a bare number is GiB.
//
// With these counts the planner reproduces the LLM.int8() paper (Table 2): OPT-175B int8 fits
// on 8 x 24 GiB while fp16 tops out at OPT-66B there; on 80 GiB GPUs OPT-175B needs 3 (int8)
// and 6 (fp16: 5 would hold it, but 5 does not divide 96 heads). planner_test.cc pins this.
//
// Everything here is a pure function of its arguments: thread-safe, no I/O, except
// RunPlanCommand (reads a config.json when --model is a path).
#ifndef LLMINT8_COORDINATOR_PLANNER_H_
#define LLMINT8_COORDINATOR_PLANNER_H_

#include <cstdint>
#include <optional>
#include <ostream>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "common/byte_size.h"
#include "model/config.h"
#include "nlohmann/json_fwd.hpp"

namespace llmint8::coordinator {

// Per-GPU memory the planner sets aside for the runtime itself: CUDA context with cuBLAS /
// cuBLASLt loaded (~0.5 GiB on an H100), NCCL channel buffers (~0.2 GiB for a TP group), the
// GEMM workspace and caching-allocator fragmentation. 1 GiB; docs/planner.md says why.
inline constexpr int64_t kRuntimeOverheadBytes = kGiB;

// How the linear weights are stored. Embeddings, LM head, norms and biases stay fp16 in both.
enum class WeightDType { kF16, kInt8 };
std::string_view WeightDTypeName(WeightDType dtype);  // "fp16", "int8"
// Accepts "fp16", "f16", "float16", "half", "int8". InvalidArgument otherwise.
absl::StatusOr<WeightDType> ParseWeightDType(std::string_view name);

// Room kept for the KV cache and activations: either batch x context tokens (estimated by the
// formulas above) or an explicit number of bytes per GPU that replaces both estimates.
struct Reserve {
  int64_t batch = 1;
  int64_t context = 0;  // tokens per sequence (prompt + generated); 0 = max_position_embeddings
  std::optional<int64_t> bytes_per_gpu;  // if set: KV + workspace = this, batch/context ignored

  static Reserve Tokens(int64_t batch, int64_t context) { return {batch, context, std::nullopt}; }
  static Reserve Bytes(int64_t bytes_per_gpu) { return {0, 0, bytes_per_gpu}; }
};

// A step of this server's scheduler prefills at most this many prompt tokens by default
// (SchedulerOptions::max_prefill_tokens), or one whole prompt when that is longer.
inline constexpr int64_t kDefaultMaxPrefillTokens = 4096;

struct PlanOptions {
  int64_t runtime_overhead_bytes = kRuntimeOverheadBytes;
  // The most tokens one step carries (activation workspace): a worker keeps room for a step of
  // this many (LoadShardRequest.max_step_tokens); 0: this server's default, a prefill of
  // max(kDefaultMaxPrefillTokens, context) tokens and never more than batch x context.
  int64_t max_step_tokens = 0;
  // The most logits rows one step keeps (LoadShardRequest.max_step_rows); 0: one per sequence
  // of the reserve.
  int64_t max_step_rows = 0;
  // The most sequences a worker holds at once (--max_batch); 0: the reserve's batch. A CPU
  // worker's cache rounds each up to a granule of positions (below).
  int64_t max_sequences = 0;
  // GPUs (workers) available; 0 = as many as needed. When the smallest fitting TP degree is
  // larger, Plan fails with FailedPrecondition ("OPT-175B int8 needs 3 x 80 GiB; 2 given").
  int available_gpus = 0;
  // CPU workers (model/shard_model.h) rather than GPUs: their KV cache, biases and LayerNorms
  // are fp32 (twice the GPU's fp16), and their activations are those the CPU runtime keeps
  // (ShardModel::ScratchBytesFor). Their cache grows a sequence's capacity by doubling
  // (model/kv_cache.h): the KV reserve is what such a worker keeps room for to hold it
  // (ShardModel::KvCapacityTokens), twice the positions plus a granule per sequence. Give them
  // runtime_overhead_bytes = 0 too.
  bool cpu = false;
};

// Bytes one GPU holds, by category (see the header comment).
struct MemoryBreakdown {
  int64_t weights = 0;
  int64_t int8_scales = 0;
  int64_t fp16_tensors = 0;
  int64_t kv_cache = 0;
  int64_t workspace = 0;
  int64_t runtime = 0;
  // The sum, saturating at 2^62 as each part does for absurd sizes (none is negative).
  int64_t Total() const;
};

struct PlanResult {
  std::string model;  // config.name
  WeightDType dtype = WeightDType::kF16;
  int64_t gpu_bytes = 0;  // capacity of one GPU, as given
  int tp = 0;             // chosen TP degree == GPUs needed
  // Fewest GPUs whose memory would hold the model if TP could be any integer; tp is the
  // smallest valid degree >= this (e.g. OPT-175B fp16 on 80 GiB: 5 -> tp 6).
  int min_gpus_by_memory = 0;
  int64_t batch = 0;    // the reserve used (0 when an explicit byte reserve was given)
  int64_t context = 0;
  MemoryBreakdown per_gpu;
  int64_t headroom_bytes = 0;  // gpu_bytes - per_gpu.Total(), >= 0
  std::vector<int> valid_tp;   // every valid TP degree of the model, ascending
};

// Bytes one rank holds at TP degree `tp` (any tp >= 1; tp need not be valid: heads, ffn and
// vocab are rounded up per rank, which is what min_gpus_by_memory uses). InvalidArgument on a
// config with non-positive sizes, tp < 1, or a bad reserve.
// options.available_gpus is not read.
absl::StatusOr<MemoryBreakdown> BytesPerGpu(const model::OptConfig& config, WeightDType dtype,
                                            int tp, const Reserve& reserve,
                                            const PlanOptions& options = {});

// The smallest valid TP degree (model::ValidTpDegrees) whose per-GPU bytes fit in gpu_bytes.
// Errors: InvalidArgument (bad config, gpu_bytes <= 0, bad reserve);
// FailedPrecondition when no TP degree fits at all, or it needs more than
// options.available_gpus; the message names the need, e.g.
// "opt-175b int8 needs 3 x 80 GiB; 2 given".
absl::StatusOr<PlanResult> Plan(const model::OptConfig& config, WeightDType dtype,
                                int64_t gpu_bytes, const Reserve& reserve,
                                const PlanOptions& options = {});

// --- fp16 vs int8 over GPU sizes -------------------------------------------------------------

struct GpuSize {
  std::string label;  // "24 GB" (the card's marketed size)
  int64_t bytes;      // what the planner assumes it holds
};
// 24, 40, 80 GB cards (24/40/80 GiB of DRAM) and the H200's 141 GB (nvidia-smi: 143771 MiB).
std::vector<GpuSize> DefaultCompareGpuSizes();

struct CompareRow {
  GpuSize gpu;
  std::optional<PlanResult> fp16;  // nullopt: no TP degree fits
  std::optional<PlanResult> int8;
};
struct CompareTable {
  std::string model;
  int64_t batch = 0;
  int64_t context = 0;
  std::vector<CompareRow> rows;
};

// Plans fp16 and int8 for every GPU size. A size where a dtype cannot fit at any TP degree
// gets nullopt, not an error; errors are only InvalidArgument (bad config / reserve).
absl::StatusOr<CompareTable> Compare(const model::OptConfig& config,
                                     std::span<const GpuSize> gpus, const Reserve& reserve,
                                     const PlanOptions& options = {});

// --- Worker group (coordinator) -------------------------------------------------------------

struct GroupDecision {
  PlanResult plan;              // sized for the smallest memory among `workers`
  std::vector<int> workers;     // indices (into reported bytes) forming the group, ascending
  std::string summary;          // e.g. "int8 fits in 2 of 4 workers (TP=2)"
};

// Decides whether the joined workers can serve `config` in `dtype`. `worker_bytes[i]` is the
// usable memory worker i reports (GPU: free memory; CPU: its --memory-limit). The group is the
// smallest valid TP degree whose that-many largest workers all hold a shard; ties keep the
// lower indices. When nothing fits: FailedPrecondition with a message saying what to change,
// e.g. "fp16 needs 4 workers with 2 GiB, 2 joined; int8 fits in 2" (the int8 hint only for
// fp16). InvalidArgument: no workers, a non-positive report, a bad config or reserve.
absl::StatusOr<GroupDecision> PlanGroup(const model::OptConfig& config, WeightDType dtype,
                                        std::span<const int64_t> worker_bytes,
                                        const Reserve& reserve, const PlanOptions& options = {});

// `--gpu-memory`: common/byte_size.h's syntax, a bare number in GiB ("80" = 80 GiB); more than 0.
absl::StatusOr<int64_t> ParseGpuMemory(std::string_view text);

// --- Rendering ------------------------------------------------------------------------------

std::string PlanToText(const PlanResult& plan);
nlohmann::json PlanToJson(const PlanResult& plan);
std::string CompareToText(const CompareTable& table);
nlohmann::json CompareToJson(const CompareTable& table);

// --- `llmint8 plan` -------------------------------------------------------------------------

// The flag-free form of `llmint8 plan`; the CLI (tools/plan_command.cc) fills it from its
// flags.
struct PlanCommand {
  std::string model;                // preset ("175b", "opt-66b", "facebook/opt-13b") or a path
                                    // to a config.json (anything containing '/' or ".json")
  std::string dtype = "int8";       // fp16 | int8 (ignored with compare)
  std::string gpu_memory = "80GiB";  // ParseGpuMemory syntax (ignored with compare)
  int gpus = 0;                     // available GPUs; 0 = as many as needed
  int64_t batch = 1;
  int64_t context = 0;              // 0 = the model's max_position_embeddings
  bool compare = false;             // fp16 vs int8 over DefaultCompareGpuSizes()
  bool json = false;
};

// Resolves the model, plans (or compares) and renders text or JSON (ending in '\n').
// Errors: NotFound / InvalidArgument for the model, InvalidArgument for flags,
// FailedPrecondition when the model does not fit (the message says how many GPUs it needs).
absl::StatusOr<std::string> RunPlanCommand(const PlanCommand& command);

}  // namespace llmint8::coordinator

#endif  // LLMINT8_COORDINATOR_PLANNER_H_
