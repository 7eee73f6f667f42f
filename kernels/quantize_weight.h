// LLM.int8() weight quantization: per output row absmax -> int8 + fp32 scale (CPU).
//
// W is [n, k] row-major (an nn.Linear weight: n outputs, k inputs).
//   absmax[r] = max_j |W[r, j]|
//   q[r, j]   = round_half_away(W[r, j] * (127 / absmax[r]))  (0 where absmax[r] == 0; fp32 math
//               as QuantizeToInt8 in quantize_activation.h, clamped to [-127, 127])
// so |W - absmax * q / 127| <= absmax / 254 per element.
// Non-finite weights are rejected (InvalidArgument naming the row), since a checkpoint with
// them cannot be served meaningfully.
#ifndef LLMINT8_KERNELS_QUANTIZE_WEIGHT_H_
#define LLMINT8_KERNELS_QUANTIZE_WEIGHT_H_

#include <cstdint>
#include <span>

#include "absl/status/status.h"
#include "common/half.h"

namespace llmint8::kernels {

// Quantizes rows of W. Sizes: w = n*k, q = n*k, absmax = n. Errors: size mismatch,
// n or k <= 0, non-finite input. Thread-compatible; no allocation.
absl::Status QuantizeWeight(std::span<const float> w, int64_t n, int64_t k, std::span<int8_t> q,
                            std::span<float> absmax);
absl::Status QuantizeWeight(std::span<const Half> w, int64_t n, int64_t k, std::span<int8_t> q,
                            std::span<float> absmax);

// W'[r, j] = absmax[r] * q[r, j] / 127.
absl::Status DequantizeWeight(std::span<const int8_t> q, std::span<const float> absmax, int64_t n,
                              int64_t k, std::span<float> w);

}  // namespace llmint8::kernels

#endif  // LLMINT8_KERNELS_QUANTIZE_WEIGHT_H_
