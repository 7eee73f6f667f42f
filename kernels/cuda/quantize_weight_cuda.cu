#include "kernels/cuda/quantize_weight_cuda.h"

#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <climits>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "kernels/cuda/block_reduce.cuh"
#include "kernels/cuda/cuda_status.h"
#include "kernels/cuda/device.h"
#include "kernels/cuda/device_math.cuh"

namespace llmint8::kernels {
namespace {

using gpu::internal::BlockReduceMax;
using gpu::internal::QuantizeToInt8;
using gpu::internal::QuantScale;

constexpr int kThreads = 256;

// One block per weight row: absmax (and a finiteness check) over the row, then quantize.
__global__ void QuantizeWeightKernel(const __half* __restrict__ w, int64_t k,
                                     int8_t* __restrict__ q, float* __restrict__ absmax,
                                     int* __restrict__ first_bad_row) {
  const int64_t r = blockIdx.x;
  const __half* row = w + r * k;
  int8_t* qrow = q + r * k;
  float amax = 0.0f;
  bool finite = true;
  for (int64_t j = threadIdx.x; j < k; j += blockDim.x) {
    const float v = __half2float(row[j]);
    finite &= isfinite(v);
    amax = fmaxf(amax, fabsf(v));
  }
  amax = BlockReduceMax(amax);
  if (!__syncthreads_and(finite)) {
    if (threadIdx.x == 0) atomicMin(first_bad_row, static_cast<int>(r));
    return;
  }
  if (threadIdx.x == 0) absmax[r] = amax;
  if (amax == 0.0f) {
    for (int64_t j = threadIdx.x; j < k; j += blockDim.x) qrow[j] = 0;
    return;
  }
  const float scale = QuantScale(amax);
  for (int64_t j = threadIdx.x; j < k; j += blockDim.x) {
    qrow[j] = QuantizeToInt8(__half2float(row[j]), scale);
  }
}

// Grid-stride over all n*k elements.
__global__ void DequantizeWeightKernel(const int8_t* __restrict__ q,
                                       const float* __restrict__ absmax, int64_t n, int64_t k,
                                       __half* __restrict__ w) {
  const int64_t total = n * k;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float scale = __fdiv_rn(absmax[i / k], 127.0f);
    w[i] = __float2half_rn(__fmul_rn(scale, static_cast<float>(q[i])));
  }
}

absl::Status CheckShape(const char* op, int64_t n, int64_t k) {
  if (n <= 0 || k <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": weight shape must be positive, got [", n, ", ", k, "]"));
  }
  if (n > INT_MAX) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": at most 2^31 - 1 weight rows, got ", n));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status QuantizeWeightCuda(const Half* w, int64_t n, int64_t k, int8_t* q, float* absmax,
                                cudaStream_t stream) {
  RETURN_IF_ERROR(CheckShape("QuantizeWeightCuda", n, k));
  if (w == nullptr || q == nullptr || absmax == nullptr) {
    return absl::InvalidArgumentError("QuantizeWeightCuda: w, q and absmax must be non-null");
  }
  ASSIGN_OR_RETURN(auto flag, gpu::DeviceBuffer<int>::Allocate(1));
  const int no_bad_row = INT_MAX;
  RETURN_IF_ERROR(flag.CopyFromHost({&no_bad_row, 1}, stream));
  QuantizeWeightKernel<<<static_cast<unsigned>(n), kThreads, 0, stream>>>(
      reinterpret_cast<const __half*>(w), k, q, absmax, flag.data());
  RETURN_IF_LAUNCH_ERROR("QuantizeWeightKernel");
  int bad_row = INT_MAX;
  RETURN_IF_ERROR(flag.CopyToHost({&bad_row, 1}, stream));
  RETURN_IF_CUDA_ERROR(cudaStreamSynchronize(stream));
  if (bad_row != INT_MAX) {
    return absl::InvalidArgumentError(
        absl::StrCat("weight row ", bad_row, " holds a non-finite value (NaN or Inf)"));
  }
  return absl::OkStatus();
}

absl::Status DequantizeWeightCuda(const int8_t* q, const float* absmax, int64_t n, int64_t k,
                                  Half* w, cudaStream_t stream) {
  RETURN_IF_ERROR(CheckShape("DequantizeWeightCuda", n, k));
  if (w == nullptr || q == nullptr || absmax == nullptr) {
    return absl::InvalidArgumentError("DequantizeWeightCuda: q, absmax and w must be non-null");
  }
  const int64_t total = n * k;
  const int64_t blocks = std::min<int64_t>((total + kThreads - 1) / kThreads, 65535 * 8);
  DequantizeWeightKernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
      q, absmax, n, k, reinterpret_cast<__half*>(w));
  RETURN_IF_LAUNCH_ERROR("DequantizeWeightKernel");
  return absl::OkStatus();
}

}  // namespace llmint8::kernels
