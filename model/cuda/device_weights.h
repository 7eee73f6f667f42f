// The weights of one shard in CUDA device memory (internal to the CUDA backend), and their
// upload from the host form the CPU runtime loads (model/forward_weights.h), one layer at a time.
//
// Everything the forward reads in 16 bits is fp16 on the device: embeddings, positions,
// project_in/out, the tied LM head, LayerNorm gains/shifts and biases (the host keeps those as
// fp32 holding fp16 values in kF16 / kInt8, so the conversion is exact). Linears are fp16
// [n, k] (kF16) or int8 [n, k] + fp32 row absmax [n] (kInt8, exactly the host quantization).
// Move-only; the buffers are freed with the object (on the device that allocated them).
#ifndef LLMINT8_MODEL_CUDA_DEVICE_WEIGHTS_H_
#define LLMINT8_MODEL_CUDA_DEVICE_WEIGHTS_H_

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/half.h"
#include "kernels/cuda/cuda_types.h"
#include "kernels/cuda/device.h"
#include "kernels/cuda/int8_linear_cuda.h"
#include "model/forward_weights.h"
#include "model/shard_model.h"

namespace llmint8::model::cuda {

// y [m, n] = x [m, k] W^T (+ bias), W held as fp16 or int8 + row scales.
struct DeviceLinear {
  Precision precision = Precision::kF16;  // kF16 or kInt8
  int64_t n = 0;
  int64_t k = 0;
  gpu::DeviceBuffer<Half> w;        // kF16: [n, k]
  gpu::DeviceBuffer<int8_t> q;      // kInt8: [n, k]
  gpu::DeviceBuffer<float> absmax;  // kInt8: [n]
  gpu::DeviceBuffer<Half> bias;     // [n], or empty (data() == nullptr)

  bool empty() const { return n == 0; }
  kernels::Int8WeightCudaView int8_view() const { return {q.data(), absmax.data(), n, k}; }
  void AddBytes(MemoryStats* stats) const;
};

// LayerNorm affine parameters [hidden]; both empty when the model has no elementwise affine.
struct DeviceNorm {
  gpu::DeviceBuffer<Half> gain;
  gpu::DeviceBuffer<Half> shift;
  void AddBytes(MemoryStats* stats) const;
};

struct DeviceLayer {
  DeviceNorm attn_norm;
  DeviceLinear qkv;                  // [3 * local_width, hidden] + bias
  DeviceLinear out_proj;             // [hidden, local_width], no bias (added after the reduce)
  gpu::DeviceBuffer<Half> out_bias;  // [hidden] or empty
  DeviceNorm ffn_norm;
  DeviceLinear fc1;                  // [local_ffn, hidden] + bias
  DeviceLinear fc2;                  // [hidden, local_ffn], no bias
  gpu::DeviceBuffer<Half> fc2_bias;  // [hidden] or empty
  void AddBytes(MemoryStats* stats) const;
};

struct DeviceShardWeights {
  DeviceLinear embed;     // [vocab_rows.size(), proj] fp16; also the LM head; empty if no rows
  Range vocab_rows;
  int64_t rows_per_rank = 0;
  DeviceLinear positions;    // [max_position_embeddings + 2, hidden] fp16
  DeviceLinear project_in;   // [hidden, proj] fp16 or empty
  DeviceLinear project_out;  // [proj, hidden] fp16 or empty
  DeviceNorm final_norm;
  bool has_final_norm = false;
  std::vector<DeviceLayer> layers;
  void AddBytes(MemoryStats* stats) const;
};

// Copies a host matrix (kF16 or kInt8; kF32 is InvalidArgument) to the device. The copies are
// enqueued on `stream`; the caller synchronizes before freeing `host`.
absl::StatusOr<DeviceLinear> UploadLinear(const WeightMatrix& host, cudaStream_t stream);
absl::StatusOr<DeviceNorm> UploadNorm(const NormWeights& host, cudaStream_t stream);
// fp32 values that are already fp16 numbers (biases) -> fp16 device buffer; empty -> empty.
absl::StatusOr<gpu::DeviceBuffer<Half>> UploadHalf(std::span<const float> host,
                                                   cudaStream_t stream);

// Upload of one decoder layer and of the shared tables (embeddings, positions, projections,
// final norm; `host.layers` is ignored). Both synchronize `stream` before returning, so the
// host copy may be dropped right after.
absl::StatusOr<DeviceLayer> UploadLayer(const LayerWeights& host, cudaStream_t stream);
absl::Status UploadShared(const ShardWeights& host, DeviceShardWeights* out, cudaStream_t stream);

// Device bytes UploadLayer allocates for one layer of this shape (for memory-limit checks
// before reading it): the same categories as DeviceLayer::AddBytes.
MemoryStats DeviceLayerBytes(const OptConfig& config, int64_t local_width, int64_t local_ffn,
                             Precision precision);

}  // namespace llmint8::model::cuda

#endif  // LLMINT8_MODEL_CUDA_DEVICE_WEIGHTS_H_
