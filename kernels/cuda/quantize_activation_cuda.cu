#include "kernels/cuda/quantize_activation_cuda.h"

#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <climits>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "kernels/cuda/block_reduce.cuh"
#include "kernels/cuda/cuda_status.h"
#include "kernels/cuda/device_math.cuh"

namespace llmint8::kernels {
namespace {

using gpu::internal::BlockReduceMax;
using gpu::internal::kWarpSize;
using gpu::internal::QuantizeToInt8;
using gpu::internal::QuantScale;

// ---- 1. Column detection: flags[j] = any_i !(|X[i, j]| < t) --------------------------------
// Block (32, 8): threadIdx.x picks the column (a warp reads 32 adjacent halves), threadIdx.y
// strides over rows; the 8 partial flags of a column are OR-ed through shared memory.
constexpr int kDetectCols = 32;
constexpr int kDetectRowLanes = 8;

__global__ void DetectOutlierColumnsKernel(const __half* __restrict__ x, int64_t m, int64_t k,
                                           float threshold, uint8_t* __restrict__ flags) {
  __shared__ uint8_t partial[kDetectRowLanes][kDetectCols];
  const int64_t col = static_cast<int64_t>(blockIdx.x) * kDetectCols + threadIdx.x;
  bool outlier = false;
  if (col < k) {
#pragma unroll 4
    for (int64_t i = threadIdx.y; i < m; i += kDetectRowLanes) {
      // !(a < t) is true for a >= t and for NaN; |Inf| >= t.
      outlier |= !(fabsf(__half2float(x[i * k + col])) < threshold);
    }
  }
  partial[threadIdx.y][threadIdx.x] = outlier ? 1 : 0;
  __syncthreads();
  if (threadIdx.y == 0 && col < k) {
    uint8_t any = 0;
#pragma unroll
    for (int r = 0; r < kDetectRowLanes; ++r) any |= partial[r][threadIdx.x];
    flags[col] = any;
  }
}

// ---- 2. Compaction: ascending outlier list, per-column slot, counts --------------------------
// One block of 1024 threads walks the flags 1024 at a time: a ballot gives each thread its rank
// inside its warp, the 32 warp totals (shared memory) its warp's offset.
constexpr int kCompactThreads = 1024;

__global__ void CompactOutlierColumnsKernel(const uint8_t* __restrict__ flags, int64_t k,
                                            int32_t cap, int32_t* __restrict__ col_slot,
                                            int32_t* __restrict__ outlier_cols,
                                            int32_t* __restrict__ counts) {
  __shared__ int warp_totals[kCompactThreads / kWarpSize];
  const int lane = threadIdx.x % kWarpSize;
  const int warp = threadIdx.x / kWarpSize;
  int base = 0;  // outliers found before this chunk; the same in every thread
  for (int64_t start = 0; start < k; start += kCompactThreads) {
    const int64_t j = start + threadIdx.x;
    const bool flagged = j < k && flags[j] != 0;
    const unsigned ballot = __ballot_sync(0xffffffffu, flagged);
    const int rank_in_warp = __popc(ballot & ((1u << lane) - 1u));
    if (lane == 0) warp_totals[warp] = __popc(ballot);
    __syncthreads();
    int warp_offset = 0;
    int chunk_total = 0;
    for (int w = 0; w < kCompactThreads / kWarpSize; ++w) {
      const int t = warp_totals[w];
      warp_offset += w < warp ? t : 0;
      chunk_total += t;
    }
    const int slot = base + warp_offset + rank_in_warp;
    if (j < k) {
      const bool kept = flagged && slot < cap;
      col_slot[j] = kept ? slot : -1;
      if (kept) outlier_cols[slot] = static_cast<int32_t>(j);
    }
    base += chunk_total;
    __syncthreads();  // warp_totals is rewritten by the next chunk
  }
  if (threadIdx.x == 0) {
    counts[0] = min(base, cap);
    counts[1] = base;
  }
}

// ---- 3. Rows: absmax over non-outlier columns, gather outliers, quantize ---------------------
constexpr int kRowThreads = 256;

__global__ void QuantizeRowsKernel(const __half* __restrict__ x, int64_t k,
                                   const int32_t* __restrict__ col_slot,  // null: no outliers
                                   const int32_t* __restrict__ outlier_cols,
                                   const int32_t* __restrict__ counts, int64_t cap,
                                   int8_t* __restrict__ q, float* __restrict__ absmax,
                                   __half* __restrict__ outliers) {
  const int64_t i = blockIdx.x;
  const __half* row = x + i * k;
  int8_t* qrow = q + i * k;
  float amax = 0.0f;
  bool finite = true;
  for (int64_t j = threadIdx.x; j < k; j += blockDim.x) {
    if (col_slot != nullptr && col_slot[j] >= 0) continue;
    const float v = __half2float(row[j]);
    finite &= isfinite(v);
    amax = fmaxf(amax, fabsf(v));
  }
  amax = BlockReduceMax(amax);
  if (!__syncthreads_and(finite)) amax = __int_as_float(0x7fc00000);  // quiet NaN, as the CPU
  if (threadIdx.x == 0) absmax[i] = amax;

  if (col_slot != nullptr) {
    const int32_t kept = counts[0];
    for (int32_t c = threadIdx.x; c < kept; c += blockDim.x) {
      outliers[i * cap + c] = row[outlier_cols[c]];
    }
  }

  if (!(amax > 0.0f) || !isfinite(amax)) {  // zero row, or a non-finite value: all zeros
    for (int64_t j = threadIdx.x; j < k; j += blockDim.x) qrow[j] = 0;
    return;
  }
  const float scale = QuantScale(amax);
  for (int64_t j = threadIdx.x; j < k; j += blockDim.x) {
    const bool is_outlier = col_slot != nullptr && col_slot[j] >= 0;
    qrow[j] = is_outlier ? int8_t{0} : QuantizeToInt8(__half2float(row[j]), scale);
  }
}

}  // namespace

absl::StatusOr<QuantizedActivationCuda> QuantizedActivationCuda::Create(int64_t max_m,
                                                                        int64_t k,
                                                                        int64_t max_outliers) {
  if (max_m <= 0 || k <= 0 || max_outliers <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "QuantizedActivationCuda: max_m, k and max_outliers must be positive, got ", max_m, ", ",
        k, ", ", max_outliers));
  }
  if (k > INT_MAX || max_m > INT_MAX) {
    return absl::InvalidArgumentError(
        absl::StrCat("QuantizedActivationCuda: max_m and k must be < 2^31, got ", max_m, ", ", k));
  }
  QuantizedActivationCuda a;
  a.max_m = max_m;
  a.k = k;
  a.max_outliers = std::min(max_outliers, k);
  ASSIGN_OR_RETURN(a.q, gpu::DeviceBuffer<int8_t>::Allocate(max_m * k));
  ASSIGN_OR_RETURN(a.absmax, gpu::DeviceBuffer<float>::Allocate(max_m));
  ASSIGN_OR_RETURN(a.outlier_cols, gpu::DeviceBuffer<int32_t>::Allocate(a.max_outliers));
  ASSIGN_OR_RETURN(a.outliers, gpu::DeviceBuffer<Half>::Allocate(max_m * a.max_outliers));
  ASSIGN_OR_RETURN(a.counts, gpu::DeviceBuffer<int32_t>::Allocate(2));
  ASSIGN_OR_RETURN(a.col_slot, gpu::DeviceBuffer<int32_t>::Allocate(k));
  ASSIGN_OR_RETURN(a.col_flags, gpu::DeviceBuffer<uint8_t>::Allocate(k));
  return a;
}

absl::Status QuantizeActivationCuda(const Half* x, int64_t m, int64_t k, float threshold,
                                    QuantizedActivationCuda* out, cudaStream_t stream) {
  if (out == nullptr || x == nullptr) {
    return absl::InvalidArgumentError("QuantizeActivationCuda: x and out must be non-null");
  }
  if (m <= 0 || m > out->max_m) {
    return absl::InvalidArgumentError(absl::StrCat("QuantizeActivationCuda: m must be in [1, ",
                                                   out->max_m, "] (the buffers' max_m), got ", m));
  }
  if (k != out->k) {
    return absl::InvalidArgumentError(absl::StrCat(
        "QuantizeActivationCuda: k = ", k, " but the buffers were created for k = ", out->k));
  }
  if (!(threshold >= 0.0f)) {  // also rejects NaN
    return absl::InvalidArgumentError(absl::StrCat(
        "outlier threshold must be >= 0 (0 disables decomposition), got ", threshold));
  }
  out->m = m;
  const __half* xh = reinterpret_cast<const __half*>(x);
  const int32_t* col_slot = nullptr;
  if (threshold > 0.0f) {
    const unsigned detect_blocks = static_cast<unsigned>((k + kDetectCols - 1) / kDetectCols);
    DetectOutlierColumnsKernel<<<detect_blocks, dim3(kDetectCols, kDetectRowLanes), 0, stream>>>(
        xh, m, k, threshold, out->col_flags.data());
    RETURN_IF_LAUNCH_ERROR("DetectOutlierColumnsKernel");
    CompactOutlierColumnsKernel<<<1, kCompactThreads, 0, stream>>>(
        out->col_flags.data(), k, static_cast<int32_t>(out->max_outliers), out->col_slot.data(),
        out->outlier_cols.data(), out->counts.data());
    RETURN_IF_LAUNCH_ERROR("CompactOutlierColumnsKernel");
    col_slot = out->col_slot.data();
  } else {
    RETURN_IF_ERROR(out->counts.SetZero(stream));
  }
  QuantizeRowsKernel<<<static_cast<unsigned>(m), kRowThreads, 0, stream>>>(
      xh, k, col_slot, out->outlier_cols.data(), out->counts.data(), out->max_outliers,
      out->q.data(), out->absmax.data(), reinterpret_cast<__half*>(out->outliers.data()));
  RETURN_IF_LAUNCH_ERROR("QuantizeRowsKernel");
  return absl::OkStatus();
}

absl::StatusOr<OutlierCounts> ReadOutlierCounts(const QuantizedActivationCuda& act,
                                                cudaStream_t stream) {
  int32_t host[2] = {0, 0};
  RETURN_IF_ERROR(act.counts.CopyToHost({host, 2}, stream));
  RETURN_IF_CUDA_ERROR(cudaStreamSynchronize(stream));
  return OutlierCounts{host[0], host[1]};
}

}  // namespace llmint8::kernels
