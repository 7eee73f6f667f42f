// The 16-bit linear baseline on the GPU: Y = X W^T + b in fp16 with fp32 accumulation (cuBLASLt,
// bias fused in its epilogue). The CUDA twin of kernels/linear.h LinearF16.
//
// Shapes: x [m, k], w [n, k], bias [n] or null, y [m, n]; row-major fp16 in device memory.
// Errors: m, n, k <= 0, null x/w/y (InvalidArgument); no cuBLASLt algorithm (Unimplemented).
// Asynchronous on `stream`; `lt` must not be used concurrently.
#ifndef LLMINT8_KERNELS_CUDA_LINEAR_CUDA_H_
#define LLMINT8_KERNELS_CUDA_LINEAR_CUDA_H_

#include <cstdint>

#include "absl/status/status.h"
#include "common/half.h"
#include "kernels/cuda/cublaslt.h"
#include "kernels/cuda/cuda_types.h"

namespace llmint8::kernels {

absl::Status LinearF16Cuda(gpu::CublasLt* lt, const Half* x, int64_t m, const Half* w, int64_t n,
                           int64_t k, const Half* bias, Half* y, cudaStream_t stream);

}  // namespace llmint8::kernels

#endif  // LLMINT8_KERNELS_CUDA_LINEAR_CUDA_H_
