// LLM.int8() weight quantization on the GPU: the CUDA twin of kernels/quantize_weight.h.
//
// W is [n, k] row-major fp16 (Half has __half's layout), in device memory.
//   absmax[r] = max_j |W[r, j]|
//   q[r, j]   = round_half_away(W[r, j] * (127 / absmax[r]))  (0 where absmax[r] == 0)
// Bit-identical to the CPU QuantizeWeight(span<const Half>, ...) (same fp32 operations).
//
// QuantizeWeightCuda runs once at load time: it synchronizes `stream` to report non-finite
// weights as InvalidArgument naming the first bad row (that row's q and absmax are then
// unspecified). Errors: n or k <= 0, null pointers, n >= 2^31.
// DequantizeWeightCuda: W'[r, j] = fp16((absmax[r] / 127) * q[r, j]) (fp32 math, round to
// nearest even), asynchronous on `stream`.
// All pointers are device memory; no allocation besides a 4-byte flag in QuantizeWeightCuda.
#ifndef LLMINT8_KERNELS_CUDA_QUANTIZE_WEIGHT_CUDA_H_
#define LLMINT8_KERNELS_CUDA_QUANTIZE_WEIGHT_CUDA_H_

#include <cstdint>

#include "absl/status/status.h"
#include "common/half.h"
#include "kernels/cuda/cuda_types.h"

namespace llmint8::kernels {

absl::Status QuantizeWeightCuda(const Half* w, int64_t n, int64_t k, int8_t* q, float* absmax,
                                cudaStream_t stream);

absl::Status DequantizeWeightCuda(const int8_t* q, const float* absmax, int64_t n, int64_t k,
                                  Half* w, cudaStream_t stream);

}  // namespace llmint8::kernels

#endif  // LLMINT8_KERNELS_CUDA_QUANTIZE_WEIGHT_CUDA_H_
