// The weights one shard holds, in the form its Precision asks for, and how they are loaded
// from a CheckpointSource (internal to the runtime; see shard_model.h for the public API).
//
// Per decoder layer: q/k/v fused into one column-parallel matrix [3 * local_width, hidden]
// (rows: this rank's q heads, then k, then v; one activation quantization serves all three),
// out_proj [hidden, local_width] and fc2 [hidden, local_ffn] row-parallel with their biases kept
// apart (added once after the all-reduce), fc1 [local_ffn, hidden]. Biases and LayerNorm
// parameters are fp32 (rounded to fp16 values in kF16 / kInt8, as an fp16 model holds them).
// Embeddings, positions, project_in/out and the tied LM head are fp16 (fp32 in kF32).
#ifndef LLMINT8_MODEL_FORWARD_WEIGHTS_H_
#define LLMINT8_MODEL_FORWARD_WEIGHTS_H_

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/half.h"
#include "kernels/int8_linear.h"
#include "model/checkpoint.h"
#include "model/config.h"
#include "model/shard_model.h"
#include "model/shard_plan.h"

namespace llmint8::model {

// How an fp32 / fp16 weight matrix W [n, k] is held: row-major (the checkpoint's layout, what
// the GPU uploads) or transposed, W^T [k, n] row-major (what the CPU linear takes,
// kernels/linear.h). int8 matrices are row-major either way (the int8 GEMM's layout).
enum class Layout { kRowMajor, kTransposed };

// A weight matrix [n, k] held as fp32, fp16 or int8 + fp32 row scales, with an optional bias [n]
// that Apply() adds.
class WeightMatrix {
 public:
  WeightMatrix() = default;
  // Allocates zeroed storage. kInt8 holds q + absmax; the others their float type, in `layout`.
  WeightMatrix(Precision precision, int64_t n, int64_t k, bool with_bias,
               Layout layout = Layout::kRowMajor);

  Precision precision() const { return precision_; }
  int64_t n() const { return n_; }
  int64_t k() const { return k_; }
  bool empty() const { return n_ == 0; }
  std::span<const float> bias() const { return bias_; }

  // Fills rows [row_offset, row_offset + rows.size()) from `name`'s slice (rows, cols);
  // cols.size() must be k. kInt8 quantizes fp32/fp16 sources per row (QuantizeWeight), a block
  // of rows (about 2^20 values) at a time through `tmp`, and copies int8 sources as stored. A
  // transposed matrix reads such blocks and writes them as columns. So a load never holds a
  // second copy of a whole matrix.
  absl::Status LoadRows(const CheckpointSource& source, std::string_view name, Range rows,
                        Range cols, int64_t row_offset, std::vector<float>* tmp);
  // Fills bias[row_offset ...] from a 1-D tensor slice (rounded to fp16 unless kF32).
  absl::Status LoadBias(const CheckpointSource& source, std::string_view name, Range rows,
                        int64_t row_offset);

  // Whether f32() / f16() hold W^T [k, n] (Layout::kTransposed, fp32 / fp16 only).
  bool transposed() const { return transposed_; }

  // y [m, n] = x [m, k] W^T (+ bias). `threshold` and `scratch` are used by kInt8 only.
  // fp32 / fp16 need the transposed layout (else Internal).
  absl::Status Apply(std::span<const float> x, int64_t m, std::span<float> y, float threshold,
                     kernels::Int8LinearScratch* scratch) const;

  std::span<const float> f32() const { return f32_; }  // [n, k], or [k, n] when transposed()
  std::span<const Half> f16() const { return f16_; }
  std::span<const int8_t> q() const { return q_; }         // kInt8: [n, k]
  std::span<const float> absmax() const { return absmax_; }  // kInt8: [n]

  void AddBytes(MemoryStats* stats) const;

 private:
  // LoadRows of a transposed matrix.
  absl::Status LoadColumns(const CheckpointSource& source, std::string_view name, Range rows,
                           Range cols, int64_t row_offset, std::vector<float>* tmp);

  Precision precision_ = Precision::kF32;
  int64_t n_ = 0;
  int64_t k_ = 0;
  bool transposed_ = false;
  std::vector<float> f32_;
  std::vector<Half> f16_;
  std::vector<int8_t> q_;
  std::vector<float> absmax_;
  std::vector<float> bias_;
};

// LayerNorm gain and shift, both empty when the model has no elementwise affine.
struct NormWeights {
  std::vector<float> gain;
  std::vector<float> shift;
};

struct LayerWeights {
  NormWeights attn_norm;  // self_attn_layer_norm
  WeightMatrix qkv;       // [3 * local_width, hidden] + bias
  WeightMatrix out_proj;  // [hidden, local_width], bias below
  std::vector<float> out_bias;
  NormWeights ffn_norm;  // final_layer_norm of the layer
  WeightMatrix fc1;      // [local_ffn, hidden] + bias
  WeightMatrix fc2;      // [hidden, local_ffn], bias below
  std::vector<float> fc2_bias;
};

struct ShardWeights {
  WeightMatrix embed;      // rows [vocab_rows.begin, end) of embed_tokens; also the LM head
  Range vocab_rows;
  int64_t rows_per_rank = 0;  // logits each rank produces (vocab padding included)
  WeightMatrix positions;  // [max_position_embeddings + 2, hidden]
  WeightMatrix project_in;   // [hidden, proj] or empty
  WeightMatrix project_out;  // [proj, hidden] or empty
  NormWeights final_norm;    // empty unless do_layer_norm_before (and affine)
  bool has_final_norm = false;
  std::vector<LayerWeights> layers;

  void AddBytes(MemoryStats* stats) const;
};

// Bytes LoadShardWeights will hold for this plan and precision (computed from the config, so a
// memory limit is checked before anything is read).
MemoryStats EstimateShardWeightBytes(const OptConfig& config, const ShardPlan& plan,
                                     Precision precision);

// The two halves of LoadShardWeights, for a backend that moves each layer elsewhere (the GPU)
// before reading the next, so the host never holds more than one layer:
// LoadSharedWeights fills everything but `layers` (embeddings, positions, project_in/out, final
// norm); LoadLayerWeights reads decoder layer `layer` into `out` (`tmp` is reusable scratch).
// `layout` is that of the fp32 / fp16 linears: every one but the position table, which is only
// looked up; the tied token embedding is also the LM head.
absl::Status LoadSharedWeights(const OptConfig& config, const CheckpointSource& source,
                               const ShardPlan& plan, Precision precision, Layout layout,
                               ShardWeights* out);
absl::Status LoadLayerWeights(const OptConfig& config, const CheckpointSource& source,
                              const ShardPlan& plan, Precision precision, Layout layout,
                              int64_t layer, LayerWeights* out, std::vector<float>* tmp);

// Reads this rank's slices for the CPU forward (Layout::kTransposed), layer by layer, calling
// `progress` after each layer (its error ends the load).
absl::StatusOr<std::unique_ptr<ShardWeights>> LoadShardWeights(const OptConfig& config,
                                                               const CheckpointSource& source,
                                                               const ShardPlan& plan,
                                                               Precision precision,
                                                               const LoadProgressFn& progress);

}  // namespace llmint8::model

#endif  // LLMINT8_MODEL_FORWARD_WEIGHTS_H_
