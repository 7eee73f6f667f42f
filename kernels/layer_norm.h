// LayerNorm over the last dimension (CPU, fp32), as torch.nn.LayerNorm:
//   y[i, j] = (x[i, j] - mean_i) / sqrt(var_i + eps) * gamma[j] + beta[j]
// with the biased variance var_i = mean_j (x[i, j] - mean_i)^2. Statistics are accumulated in
// double, so the result is within a few fp32 ulps of the exact value while |mean_i| is below
// about 1e4 standard deviations (the mean is rounded to fp32 before it is subtracted, as
// PyTorch does; OPT's activations are far from that).
//
// Shapes: x, y [m, n] row-major (x and y may alias); gamma, beta [n] or both empty (no affine).
// Thread-compatible; no allocation.
#ifndef LLMINT8_KERNELS_LAYER_NORM_H_
#define LLMINT8_KERNELS_LAYER_NORM_H_

#include <cstdint>
#include <span>

#include "absl/status/status.h"

namespace llmint8::kernels {

inline constexpr float kLayerNormEps = 1e-5f;

absl::Status LayerNorm(std::span<const float> x, int64_t m, int64_t n,
                       std::span<const float> gamma, std::span<const float> beta, float eps,
                       std::span<float> y);

}  // namespace llmint8::kernels

#endif  // LLMINT8_KERNELS_LAYER_NORM_H_
