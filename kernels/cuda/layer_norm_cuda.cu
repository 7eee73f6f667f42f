#include "kernels/cuda/layer_norm_cuda.h"

#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <climits>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "kernels/cuda/block_reduce.cuh"
#include "kernels/cuda/cuda_status.h"

namespace llmint8::kernels {
namespace {

using gpu::internal::BlockReduceSum;

constexpr int kThreads = 256;

// One block per row. `src` is the row source: x, or (when delta != nullptr) the residual, which
// pass 1 updates in place. Each thread touches only the columns j = tid (mod blockDim), so the
// re-reads of passes 2 and 3 see the thread's own writes, and writing y over x or the residual
// in pass 3 is safe (no pointer here is __restrict__ for that reason).
__global__ void LayerNormKernel(__half* src, const __half* delta, const __half* bias, int64_t n,
                                const __half* gamma, const __half* beta, float eps, __half* y) {
  const int64_t row = blockIdx.x;
  __half* s = src + row * n;
  float sum = 0.0f;
  if (delta != nullptr) {
    const __half* d = delta + row * n;
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
      float v = __fadd_rn(__half2float(s[j]), __half2float(d[j]));
      if (bias != nullptr) v = __fadd_rn(v, __half2float(bias[j]));
      const __half r = __float2half_rn(v);
      s[j] = r;
      sum += __half2float(r);
    }
  } else {
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) sum += __half2float(s[j]);
  }
  if (y == nullptr) return;  // uniform across the block: no barrier is skipped by some threads
  const float mean = BlockReduceSum(sum) / static_cast<float>(n);
  float sq = 0.0f;
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
    const float c = __half2float(s[j]) - mean;
    sq += c * c;
  }
  const float var = BlockReduceSum(sq) / static_cast<float>(n);
  const float inv = 1.0f / sqrtf(var + eps);
  __half* out = y + row * n;
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
    float v = (__half2float(s[j]) - mean) * inv;
    if (gamma != nullptr) v = v * __half2float(gamma[j]) + __half2float(beta[j]);
    out[j] = __float2half_rn(v);
  }
}

absl::Status CheckArgs(const char* op, int64_t m, int64_t n, const Half* gamma, const Half* beta,
                       float eps) {
  if (m < 0 || m > INT_MAX || n <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        op, ": shape must be 0 <= m < 2^31 and n > 0, got m=", m, " n=", n));
  }
  if ((gamma == nullptr) != (beta == nullptr)) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": gamma and beta must both be set (affine) or both be null"));
  }
  if (!(eps > 0.0f)) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": eps must be > 0, got ", eps));
  }
  return absl::OkStatus();
}

absl::Status Launch(Half* src, const Half* delta, const Half* bias, int64_t m, int64_t n,
                    const Half* gamma, const Half* beta, float eps, Half* y,
                    cudaStream_t stream) {
  if (m == 0) return absl::OkStatus();
  LayerNormKernel<<<static_cast<unsigned>(m), kThreads, 0, stream>>>(
      reinterpret_cast<__half*>(src), reinterpret_cast<const __half*>(delta),
      reinterpret_cast<const __half*>(bias), n, reinterpret_cast<const __half*>(gamma),
      reinterpret_cast<const __half*>(beta), eps, reinterpret_cast<__half*>(y));
  RETURN_IF_LAUNCH_ERROR("LayerNormKernel");
  return absl::OkStatus();
}

}  // namespace

absl::Status LayerNormCuda(const Half* x, int64_t m, int64_t n, const Half* gamma,
                           const Half* beta, float eps, Half* y, cudaStream_t stream) {
  RETURN_IF_ERROR(CheckArgs("LayerNormCuda", m, n, gamma, beta, eps));
  if (x == nullptr || y == nullptr) {
    return absl::InvalidArgumentError("LayerNormCuda: x and y must be non-null");
  }
  // The kernel only reads its source when delta is null.
  return Launch(const_cast<Half*>(x), nullptr, nullptr, m, n, gamma, beta, eps, y, stream);
}

absl::Status AddResidualLayerNormCuda(Half* residual, const Half* delta, const Half* bias,
                                      int64_t m, int64_t n, const Half* gamma, const Half* beta,
                                      float eps, Half* y, cudaStream_t stream) {
  RETURN_IF_ERROR(CheckArgs("AddResidualLayerNormCuda", m, n, gamma, beta, eps));
  if (residual == nullptr || delta == nullptr) {
    return absl::InvalidArgumentError(
        "AddResidualLayerNormCuda: residual and delta must be non-null");
  }
  if (delta == residual || delta == y) {
    return absl::InvalidArgumentError(
        "AddResidualLayerNormCuda: delta must not alias the residual or y");
  }
  return Launch(residual, delta, bias, m, n, gamma, beta, eps, y, stream);
}

}  // namespace llmint8::kernels
