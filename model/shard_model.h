// The transformer forward of one tensor-parallel shard of an OPT model (CPU), with a KV cache
// per sequence and batching of sequences of different lengths. The service's worker owns one
// ShardModel per process and drives it with Step() / Release().
//
// Tensor parallelism (Megatron, see model/shard_plan.h): q/k/v and fc1 are column-parallel (this
// rank holds num_heads / tp heads and ffn_dim / tp FFN columns); out_proj and fc2 are
// row-parallel, their partial outputs summed by Communicator::AllReduceSum, with the bias added
// once after the reduce. The token embedding is vocab-parallel (ids outside this rank's slice
// give zeros, then all-reduce); the tied LM head computes this rank's vocab slice of the logits
// and AllGather assembles the full vocabulary on every rank. Positions, LayerNorms and
// project_in/out are replicated.
//
// Collective contract: every rank of a group calls Load, Step and Release with the same
// arguments in the same order (the coordinator guarantees it). Validation of a Step's input is
// deterministic and happens before any collective, so all ranks reject the same bad batch
// without a collective mismatch. Memory is not (limits and free memory differ by rank): a step
// on which any rank may allocate ends its checks with a vote (AgreeOnRoom in shard_backend.h),
// so either every rank runs it or every rank returns ResourceExhausted.
//
// Thread-compatible: one caller at a time (the communicator is not thread-safe either).
#ifndef LLMINT8_MODEL_SHARD_MODEL_H_
#define LLMINT8_MODEL_SHARD_MODEL_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "comm/communicator.h"
#include "model/config.h"

namespace llmint8::model {

class CheckpointSource;  // model/checkpoint.h
struct ShardWeights;     // model/forward_weights.h (internal)
class KvCache;           // model/kv_cache.h (internal)
struct ForwardScratch;   // model/shard_model.cc (internal)
class ShardBackend;      // model/shard_backend.h (internal): the device backends

// How the attention and FFN linears are held and computed. Embeddings, the LM head and the
// LayerNorms are fp16 in kF16 and kInt8, fp32 in kF32.
enum class Precision {
  kF32,   // fp32 weights, LinearF32: exact math for the golden parity tests.
  kF16,   // fp16 weights (2 bytes/param), LinearF16 (fp32 accumulation).
  kInt8,  // LLM.int8(): int8 rows + fp32 row scales, Int8Linear with `threshold`.
};
std::string_view PrecisionName(Precision p);  // "f32", "f16", "int8"
// A --dtype / LoadShardRequest.dtype: fp16 (or f16), int8, fp32 (or f32); InvalidArgument
// naming the choices otherwise.
absl::StatusOr<Precision> ParsePrecision(std::string_view name);

// Where the shard lives and computes. kCpu: host memory, this file's forward. kCuda: weights,
// KV cache and activations on one CUDA device in fp16 (kF16, kInt8; not kF32), see
// model/cuda/README.md; Unimplemented in a build without CUDA.
enum class Device { kCpu, kCuda };
std::string_view DeviceName(Device d);  // "cpu", "cuda"
absl::StatusOr<Device> ParseDevice(std::string_view name);

struct ShardOptions {
  Device device = Device::kCpu;
  Precision precision = Precision::kF16;
  // LLM.int8() outlier threshold (kInt8 only); 0 disables the decomposition.
  float threshold = 6.0f;
  // Bytes this shard may hold (weights + scales + KV cache + scratch); 0 = unlimited.
  int64_t memory_limit_bytes = 0;
  // Longest context (prompt + generated) of one sequence; 0 = max_position_embeddings.
  int64_t max_context = 0;
  // kCuda only: the device (cudaSetDevice index) and the stream (a cudaStream_t, opaque here)
  // every step runs on. With tp > 1 the communicator must be on the device (NCCL) and
  // cuda_stream must be the stream it was created with (CommOptions::cuda_stream), so that
  // collectives are ordered after the kernels that produce their input. nullptr with tp == 1:
  // the model creates its own stream. The stream must outlive the model.
  int cuda_device = 0;
  void* cuda_stream = nullptr;
};

// The ShardOptions::cuda_stream (and CommOptions::cuda_stream) for a shard on `device` in a group
// of `tp`: with CUDA and tp > 1 the model's kernels and NCCL's collectives must share a stream;
// host code cannot create one (no CUDA headers outside kernels/ and comm/), so both use the
// per-device legacy default stream, whose documented handle is cudaStreamLegacy == 0x1.
// nullptr otherwise (the model makes its own).
inline void* TensorParallelCudaStream(Device device, int tp) {
  return device == Device::kCuda && tp > 1 ? reinterpret_cast<void*>(uintptr_t{1}) : nullptr;
}

// Bytes held by this shard, by category. total() is what memory_limit_bytes bounds.
struct MemoryStats {
  int64_t int8_weights = 0;  // quantized linear weights (kInt8)
  int64_t scales = 0;        // fp32 row scales of the int8 weights
  int64_t fp16_weights = 0;  // fp16 tensors: linears (kF16), embeddings, LM head, norms, biases
  int64_t fp32_weights = 0;  // fp32 tensors (kF32, and biases / norms kept fp32)
  int64_t kv_cache = 0;      // reserved KV cache of all live sequences
  int64_t scratch = 0;       // activation buffers
  int64_t weights() const { return int8_weights + scales + fp16_weights + fp32_weights; }
  int64_t total() const { return weights() + kv_cache + scratch; }
  std::string DebugString() const;
};

// Logits of one Step, full vocabulary, row-major [rows, vocab]. Sequence i owns rows
// [row_begin[i], row_begin[i + 1]) (row_begin has batch + 1 entries), in batch order: one row
// per new token when it asks for all positions (SequenceInput::all_positions, or the step's
// all_positions), else one, its last new position's.
struct Logits {
  int64_t rows = 0;
  int64_t vocab = 0;
  std::vector<float> values;
  std::vector<int64_t> row_begin;
  std::span<const float> row(int64_t r) const {
    return std::span<const float>(values).subspan(r * vocab, vocab);
  }
};

// Called during Load after each decoder layer is in memory (and quantized). A non-OK answer
// (e.g. CANCELLED: whoever asked for the load gave up) ends the load with it.
using LoadProgressFn = std::function<absl::Status(int64_t layers_done, int64_t layers_total)>;

class ShardModel {
 public:
  struct SequenceInput {
    uint64_t seq_id = 0;
    std::span<const int32_t> tokens;  // >= 1 new tokens: a prompt (prefill) or 1 (decode)
    bool all_positions = false;       // logits of every new position, not only the last
    // prefix_length > 0: a new sequence that starts from a copy of the first prefix_length
    // cached positions of live sequence prefix_from (n choices of one prompt share its
    // prefill); `tokens` follow them.
    uint64_t prefix_from = 0;
    int64_t prefix_length = 0;
    // Positions cut from the end of the sequence's cache before `tokens` are appended (a
    // previous step's rejected draft tokens, SeqStep.drop_positions): 0 .. what it holds;
    // not with a prefix.
    int64_t drop = 0;
  };

  // Reads this rank's slices from `source` layer by layer (kInt8: each linear quantized as it
  // arrives, never the whole fp16 model in memory). `comm` must outlive the model and have
  // size() == tp and rank() == rank; it may be null when tp == 1.
  // Errors: InvalidArgument (tp does not divide heads / ffn_dim, bad rank, bad options),
  // ResourceExhausted (weights + scratch exceed memory_limit_bytes; the message gives numbers),
  // whatever the source returns for missing / malformed tensors.
  static absl::StatusOr<std::unique_ptr<ShardModel>> Load(const OptConfig& config,
                                                          CheckpointSource& source, int tp,
                                                          int rank, comm::Communicator* comm,
                                                          const ShardOptions& options,
                                                          const LoadProgressFn& progress = {});
  ~ShardModel();
  ShardModel(const ShardModel&) = delete;
  ShardModel& operator=(const ShardModel&) = delete;

  // One forward step for a batch. Each sequence appends its new tokens to its KV cache (created
  // on first use of its seq_id) and the logits of its last position (or of all its new positions
  // when it asks, or `all_positions` asks for every sequence) are returned, gathered to the full
  // vocabulary on every rank.
  // Errors, with the model state unchanged (no cache touched):
  //   InvalidArgument: empty batch, empty token list, duplicate seq_id in the batch, token id
  //                    outside [0, vocab_size), a prefix for a sequence that exists or
  //                    from one that lacks those positions, a drop outside [0, held] or
  //                    with a prefix;
  //   OutOfRange: a sequence would exceed max_context;
  //   ResourceExhausted: the KV cache growth would exceed memory_limit_bytes;
  //   communicator errors (the group is then broken; the worker should report UNAVAILABLE).
  absl::StatusOr<Logits> Step(std::span<const SequenceInput> batch, bool all_positions = false);

  // Frees the KV cache of `seq_id`. NotFound when it has none.
  absl::Status Release(uint64_t seq_id);
  // Number of positions cached for `seq_id` (0 when unknown).
  int64_t ContextLength(uint64_t seq_id) const;
  int64_t num_sequences() const;

  MemoryStats memory() const;
  // KV cache positions this shard can hold in all, summed over sequences that each grow to
  // their full length, when it may use `usable_bytes` (its memory limit, or what the device
  // has free plus what the shard holds) and keeps room for the activations of a step of
  // `step_tokens` tokens and `step_rows` logit rows. Counts the cache's own overhead (the CPU
  // cache may reserve up to twice a sequence's length; the GPU's rounds each sequence up to a
  // page). 0 when nothing fits.
  int64_t KvCapacityTokens(int64_t usable_bytes, int64_t step_tokens, int64_t step_rows,
                           int64_t max_sequences) const;
  const OptConfig& config() const { return config_; }
  const ShardOptions& options() const { return options_; }
  int tp() const { return tp_; }
  int rank() const { return rank_; }
  int64_t max_context() const { return max_context_; }

 private:
  ShardModel(const OptConfig& config, const ShardOptions& options, int tp, int rank,
             comm::Communicator* comm);
  absl::Status ValidateBatch(std::span<const SequenceInput> batch) const;
  // The step Step prepared (scratch bookkeeping, logits rows planned).
  absl::Status Forward(std::span<const SequenceInput> batch, Logits* out);
  int64_t ScratchBytesFor(int64_t tokens, int64_t logit_rows) const;
  // ResourceExhausted when the buffers cannot grow (they keep their old sizes).
  absl::Status EnsureScratch(int64_t tokens, int64_t logit_rows);

  OptConfig config_;
  ShardOptions options_;
  int tp_;
  int rank_;
  comm::Communicator* comm_;  // not owned; null when tp == 1
  int64_t max_context_;
  std::unique_ptr<ShardWeights> weights_;
  std::unique_ptr<KvCache> kv_;
  std::unique_ptr<ForwardScratch> scratch_;
  // Set when options.device != kCpu: every call below Load goes there instead.
  std::unique_ptr<ShardBackend> backend_;
};

// Free memory on CUDA device `cuda_device` (cudaMemGetInfo), what a worker can still load into;
// Unimplemented in a build without CUDA. Implemented by the CUDA backend (model/cuda).
absl::StatusOr<int64_t> CudaFreeMemoryBytes(int cuda_device);

// The UUID of CUDA device `cuda_device` (< 0: device 0), "GPU-...", as nvidia-smi shows it:
// which physical GPU a worker's memory comes from. Unimplemented without CUDA.
absl::StatusOr<std::string> CudaDeviceUuid(int cuda_device);

// Number of visible CUDA devices (cudaGetDeviceCount); Unimplemented in a build without CUDA,
// Unavailable when the driver cannot be used (e.g. no GPU).
absl::StatusOr<int> CudaDeviceCount();

}  // namespace llmint8::model

#endif  // LLMINT8_MODEL_SHARD_MODEL_H_
