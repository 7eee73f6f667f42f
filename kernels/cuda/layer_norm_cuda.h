// LayerNorm on the GPU, fp16 in memory and fp32 math: the CUDA twin of kernels/layer_norm.h.
//
//   y[i, j] = fp16( (x[i, j] - mean_i) / sqrt(var_i + eps) * gamma[j] + beta[j] )
// with the biased variance over the row (two passes in fp32: mean, then sum (x - mean)^2).
//
// AddResidualLayerNormCuda fuses the residual add that precedes each LayerNorm of an OPT
// decoder layer (one read of the row instead of two):
//   r[i, j]        = fp16( (residual[i, j] + delta[i, j]) + bias[j] )   (fp32 adds, one rounding)
//   residual[i, j] = r[i, j]
//   y              = LayerNorm(r)     (statistics of the rounded r, as the next layer sees it)
// Pre-LN layers pass y = the normed scratch; post-LN layers (opt-350m) pass y == residual.
//
// Shapes: x, residual, delta, y [m, n] row-major fp16; gamma, beta [n] fp16, both null for no
// affine; bias [n] fp16 or null. All device memory. x may alias y (LayerNormCuda); y may alias
// residual or be null (AddResidualLayerNormCuda: only the add); delta must not alias either.
// m == 0 is a no-op. Errors (InvalidArgument): m < 0 or m >= 2^31, n <= 0, null x/residual/
// delta/y where required, exactly one of gamma/beta null, !(eps > 0).
// Asynchronous on `stream`; no allocation; thread-safe (no state).
#ifndef LLMINT8_KERNELS_CUDA_LAYER_NORM_CUDA_H_
#define LLMINT8_KERNELS_CUDA_LAYER_NORM_CUDA_H_

#include <cstdint>

#include "absl/status/status.h"
#include "common/half.h"
#include "kernels/cuda/cuda_types.h"

namespace llmint8::kernels {

absl::Status LayerNormCuda(const Half* x, int64_t m, int64_t n, const Half* gamma,
                           const Half* beta, float eps, Half* y, cudaStream_t stream);

absl::Status AddResidualLayerNormCuda(Half* residual, const Half* delta, const Half* bias,
                                      int64_t m, int64_t n, const Half* gamma, const Half* beta,
                                      float eps, Half* y, cudaStream_t stream);

}  // namespace llmint8::kernels

#endif  // LLMINT8_KERNELS_CUDA_LAYER_NORM_CUDA_H_
