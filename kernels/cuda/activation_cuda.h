// OPT's FFN activations on the GPU, in place, optionally fused with the bias add that precedes
// them: the CUDA twins of kernels/activation.h (fp16 in memory, fp32 math, one rounding).
//   BiasReluCuda: x[i, j] = fp16( max(x[i, j] + bias[j], 0) )
//   BiasGeluCuda: x[i, j] = fp16( 0.5 v (1 + erf(v / sqrt(2))) ),  v = x[i, j] + bias[j]
//                 (the exact erf form, HF ACT2FN["gelu"]; erff is within 2 ulp)
// Relu is bit-identical to the CPU reference applied to fp32(x) + fp32(bias).
//
// Shapes: x [m, n] row-major fp16, bias [n] fp16 or null; device memory. m == 0 is a no-op.
// Errors (InvalidArgument): m < 0, n <= 0, null x. Asynchronous on `stream`; no allocation.
#ifndef LLMINT8_KERNELS_CUDA_ACTIVATION_CUDA_H_
#define LLMINT8_KERNELS_CUDA_ACTIVATION_CUDA_H_

#include <cstdint>

#include "absl/status/status.h"
#include "common/half.h"
#include "kernels/cuda/cuda_types.h"

namespace llmint8::kernels {

absl::Status BiasReluCuda(Half* x, int64_t m, int64_t n, const Half* bias, cudaStream_t stream);
absl::Status BiasGeluCuda(Half* x, int64_t m, int64_t n, const Half* bias, cudaStream_t stream);

}  // namespace llmint8::kernels

#endif  // LLMINT8_KERNELS_CUDA_ACTIVATION_CUDA_H_
