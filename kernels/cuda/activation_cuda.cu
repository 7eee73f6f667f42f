#include "kernels/cuda/activation_cuda.h"

#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/block_reduce.cuh"
#include "kernels/cuda/cuda_status.h"

namespace llmint8::kernels {
namespace {

using gpu::internal::GridStrideBlocks;

constexpr int kThreads = 256;

enum class Act { kRelu, kGelu };

template <Act kAct>
__device__ __forceinline__ float Apply(float v) {
  if constexpr (kAct == Act::kRelu) {
    return v > 0.0f ? v : 0.0f;
  } else {
    constexpr float kInvSqrt2 = 0.70710678118654752440f;
    return 0.5f * v * (1.0f + erff(v * kInvSqrt2));
  }
}

// Grid-stride over the m*n elements; column = index mod n picks the bias.
template <Act kAct>
__global__ void BiasActKernel(__half* __restrict__ x, int64_t total, int64_t n,
                              const __half* __restrict__ bias) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float v = __half2float(x[i]);
    if (bias != nullptr) v = __fadd_rn(v, __half2float(bias[i % n]));
    x[i] = __float2half_rn(Apply<kAct>(v));
  }
}

template <Act kAct>
absl::Status Run(const char* op, Half* x, int64_t m, int64_t n, const Half* bias,
                 cudaStream_t stream) {
  if (m < 0 || n <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": shape must be m >= 0 and n > 0, got m=", m, " n=", n));
  }
  if (x == nullptr) return absl::InvalidArgumentError(absl::StrCat(op, ": x must be non-null"));
  const int64_t total = m * n;
  if (total == 0) return absl::OkStatus();
  BiasActKernel<kAct><<<GridStrideBlocks(total, kThreads), kThreads, 0, stream>>>(
      reinterpret_cast<__half*>(x), total, n, reinterpret_cast<const __half*>(bias));
  RETURN_IF_LAUNCH_ERROR("BiasActKernel");
  return absl::OkStatus();
}

}  // namespace

absl::Status BiasReluCuda(Half* x, int64_t m, int64_t n, const Half* bias, cudaStream_t stream) {
  return Run<Act::kRelu>("BiasReluCuda", x, m, n, bias, stream);
}

absl::Status BiasGeluCuda(Half* x, int64_t m, int64_t n, const Half* bias, cudaStream_t stream) {
  return Run<Act::kGelu>("BiasGeluCuda", x, m, n, bias, stream);
}

}  // namespace llmint8::kernels
