// Softmax and log-softmax over the vocabulary on the GPU, for sampling and perplexity: the CUDA
// twins of kernels/softmax.h SoftmaxRows (and of log_softmax), fp32 math and fp32 output.
//
//   SoftmaxRowsCuda:    y[i, j] = exp(x[i, j] - max_i) / sum_k exp(x[i, k] - max_i)
//   LogSoftmaxRowsCuda: y[i, j] = x[i, j] - max_i - log(sum_k exp(x[i, k] - max_i))
//   TokenLogProbCuda:   out[i]  = log_softmax(x[i, :])[targets[i]]   (perplexity: no [m, n] output)
// -inf entries (masked ids, the -inf padding of a vocab-parallel all-gather) give probability 0
// and log-probability -inf. Rows are independent; one block per row (three passes over it).
//
// Bad values cannot be reported without a device sync, so they are defined instead: a row that
// is all -inf (the CPU twin's InvalidArgument) or holds NaN/+inf gives NaN outputs; a target
// outside [0, n) gives NaN. Callers that need an error check the result on the host.
//
// Shapes: x [m, n] row-major, fp16 (the LM head's output) or fp32; y [m, n] fp32; targets [m]
// int32, out [m] fp32; all device memory. x and y must not alias. m == 0 is a no-op.
// Errors (InvalidArgument): m < 0 or m >= 2^31, n <= 0, null pointers.
// Asynchronous on `stream`; no allocation.
#ifndef LLMINT8_KERNELS_CUDA_SOFTMAX_CUDA_H_
#define LLMINT8_KERNELS_CUDA_SOFTMAX_CUDA_H_

#include <cstdint>

#include "absl/status/status.h"
#include "common/half.h"
#include "kernels/cuda/cuda_types.h"

namespace llmint8::kernels {

absl::Status SoftmaxRowsCuda(const Half* x, int64_t m, int64_t n, float* y, cudaStream_t stream);
absl::Status SoftmaxRowsCuda(const float* x, int64_t m, int64_t n, float* y,
                             cudaStream_t stream);

absl::Status LogSoftmaxRowsCuda(const Half* x, int64_t m, int64_t n, float* y,
                                cudaStream_t stream);
absl::Status LogSoftmaxRowsCuda(const float* x, int64_t m, int64_t n, float* y,
                                cudaStream_t stream);

absl::Status TokenLogProbCuda(const Half* x, int64_t m, int64_t n, const int32_t* targets,
                              float* out, cudaStream_t stream);
absl::Status TokenLogProbCuda(const float* x, int64_t m, int64_t n, const int32_t* targets,
                              float* out, cudaStream_t stream);

}  // namespace llmint8::kernels

#endif  // LLMINT8_KERNELS_CUDA_SOFTMAX_CUDA_H_
