#include "kernels/cuda/softmax_cuda.h"

#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <climits>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/block_reduce.cuh"
#include "kernels/cuda/cuda_status.h"

namespace llmint8::kernels {
namespace {

using gpu::internal::BlockReduceMax;
using gpu::internal::BlockReduceSum;
using gpu::internal::LoadAsFloat;

constexpr int kThreads = 512;

enum class Mode { kSoftmax, kLogSoftmax, kTokenLogProb };

// One block per row: max, then the sum of exp(x - max), then the output. A row whose max is not
// finite (all -inf, +inf present, or only NaN) yields NaN: exp(x - max) would be NaN or 0/0.
template <Mode kMode, typename T>
__global__ void SoftmaxKernel(const T* __restrict__ x, int64_t n,
                              const int32_t* __restrict__ targets, float* __restrict__ y) {
  const int64_t row = blockIdx.x;
  const T* xr = x + row * n;
  bool has_nan = false;
  float mx = -INFINITY;
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
    const float v = LoadAsFloat(xr + j);
    has_nan |= isnan(v);
    mx = fmaxf(mx, v);
  }
  mx = BlockReduceMax(mx);
  const bool bad = __syncthreads_or(has_nan) || !isfinite(mx);
  float sum = 0.0f;
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
    sum += expf(LoadAsFloat(xr + j) - mx);  // exp(-inf) = 0
  }
  sum = BlockReduceSum(sum);
  if constexpr (kMode == Mode::kTokenLogProb) {
    if (threadIdx.x == 0) {
      const int32_t t = targets[row];
      y[row] = (bad || t < 0 || t >= n) ? NAN : LoadAsFloat(xr + t) - mx - logf(sum);
    }
  } else {
    float* yr = y + row * n;
    const float inv = 1.0f / sum;
    const float log_sum = logf(sum);
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
      const float c = LoadAsFloat(xr + j) - mx;
      if (bad) {
        yr[j] = NAN;
      } else if constexpr (kMode == Mode::kSoftmax) {
        yr[j] = expf(c) * inv;
      } else {
        yr[j] = c - log_sum;
      }
    }
  }
}

template <Mode kMode, typename T>
absl::Status Run(const char* op, const T* x, int64_t m, int64_t n, const int32_t* targets,
                 float* y, cudaStream_t stream) {
  if (m < 0 || m > INT_MAX || n <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        op, ": shape must be 0 <= m < 2^31 and n > 0, got m=", m, " n=", n));
  }
  if (x == nullptr || y == nullptr || (kMode == Mode::kTokenLogProb && targets == nullptr)) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": null device pointer"));
  }
  if (static_cast<const void*>(x) == static_cast<const void*>(y)) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": x and y must not alias"));
  }
  if (m == 0) return absl::OkStatus();
  SoftmaxKernel<kMode, T><<<static_cast<unsigned>(m), kThreads, 0, stream>>>(x, n, targets, y);
  RETURN_IF_LAUNCH_ERROR("SoftmaxKernel");
  return absl::OkStatus();
}

const __half* Dev(const Half* p) { return reinterpret_cast<const __half*>(p); }

}  // namespace

absl::Status SoftmaxRowsCuda(const Half* x, int64_t m, int64_t n, float* y, cudaStream_t stream) {
  return Run<Mode::kSoftmax>("SoftmaxRowsCuda", Dev(x), m, n, nullptr, y, stream);
}
absl::Status SoftmaxRowsCuda(const float* x, int64_t m, int64_t n, float* y,
                             cudaStream_t stream) {
  return Run<Mode::kSoftmax>("SoftmaxRowsCuda", x, m, n, nullptr, y, stream);
}
absl::Status LogSoftmaxRowsCuda(const Half* x, int64_t m, int64_t n, float* y,
                                cudaStream_t stream) {
  return Run<Mode::kLogSoftmax>("LogSoftmaxRowsCuda", Dev(x), m, n, nullptr, y, stream);
}
absl::Status LogSoftmaxRowsCuda(const float* x, int64_t m, int64_t n, float* y,
                                cudaStream_t stream) {
  return Run<Mode::kLogSoftmax>("LogSoftmaxRowsCuda", x, m, n, nullptr, y, stream);
}
absl::Status TokenLogProbCuda(const Half* x, int64_t m, int64_t n, const int32_t* targets,
                              float* out, cudaStream_t stream) {
  return Run<Mode::kTokenLogProb>("TokenLogProbCuda", Dev(x), m, n, targets, out, stream);
}
absl::Status TokenLogProbCuda(const float* x, int64_t m, int64_t n, const int32_t* targets,
                              float* out, cudaStream_t stream) {
  return Run<Mode::kTokenLogProb>("TokenLogProbCuda", x, m, n, targets, out, stream);
}

}  // namespace llmint8::kernels
