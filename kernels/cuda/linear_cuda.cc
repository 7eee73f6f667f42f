#include "kernels/cuda/linear_cuda.h"

#include "absl/strings/str_cat.h"

namespace llmint8::kernels {

absl::Status LinearF16Cuda(gpu::CublasLt* lt, const Half* x, int64_t m, const Half* w, int64_t n,
                           int64_t k, const Half* bias, Half* y, cudaStream_t stream) {
  if (lt == nullptr || x == nullptr || w == nullptr || y == nullptr) {
    return absl::InvalidArgumentError("LinearF16Cuda: lt, x, w and y must be non-null");
  }
  if (m <= 0 || n <= 0 || k <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("LinearF16Cuda: m, n, k must be positive, got ", m, ", ", n, ", ", k));
  }
  gpu::MatmulArgs args;
  args.type = gpu::MatmulType::kF16F32Acc;
  args.a = x;
  args.b = w;
  args.c = y;
  args.bias = bias;
  args.m = m;
  args.n = n;
  args.k = k;
  return lt->Matmul(args, stream);
}

}  // namespace llmint8::kernels
