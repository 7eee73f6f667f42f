#include <cooperative_groups.h>
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
#include "kernels/cuda/quantize_activation_cuda.h"

namespace llmint8::kernels {
namespace {

using gpu::internal::BlockReduceMax;
using gpu::internal::kWarpSize;
using gpu::internal::QuantizeToInt8;
using gpu::internal::QuantScale;
using gpu::internal::WarpMax;
using gpu::internal::WarpSum;

// ---- t > 0: one cooperative launch ----------------------------------------------------------
// The grid walks X in tiles of kTileCols columns x all m rows; block (32, 8): threadIdx.x picks
// the column (a warp reads 32 adjacent halves of one row), threadIdx.y strides over rows, so
// warp w of the block is row lane w. Each block owns a contiguous run of tiles.
//
// Phase A, per tile: the column flags (any row !(|x| < t)); the tile's outlier count; each
// row's max |x| over the tile's non-outlier columns, merged into absmax[i] with an integer
// atomicMax (valid for floats >= 0; absmax is zeroed before the launch; non-outlier values are
// finite because NaN/Inf columns are outliers).
// grid.sync(): every flag, count and absmax is final.
// Phase B, per tile: the tile's first slot = the outlier count of all earlier tiles (ascending
// list, as the CPU); gather the kept outlier values; quantize the tile with the final absmax.
// X is read once from device memory: phase A's second read of a tile and phase B's read hit
// L1 / L2 at decode sizes.
constexpr int kTileCols = kWarpSize;
constexpr int kRowLanes = 8;
constexpr int kFusedThreads = kTileCols * kRowLanes;

struct FusedParams {
  const __half* x;
  int64_t m;
  int64_t k;
  float threshold;
  int32_t cap;
  int64_t num_tiles;
  int8_t* q;
  float* absmax;  // zero on entry; atomicMax target
  __half* outliers;
  int32_t* outlier_cols;
  int32_t* counts;
  uint8_t* col_flags;    // k: phase A -> phase B
  int32_t* tile_counts;  // num_tiles: phase A -> phase B
};

// Sum over all threads of the (32, 8) block, returned to every thread.
__device__ __forceinline__ int BlockSumInt(int v) {
  __shared__ int partial[kRowLanes];
  v = WarpSum(v);
  __syncthreads();  // a previous call may still be reading `partial`
  if (threadIdx.x == 0) partial[threadIdx.y] = v;
  __syncthreads();
  int total = 0;
#pragma unroll
  for (int w = 0; w < kRowLanes; ++w) total += partial[w];
  return total;
}

__global__ void __launch_bounds__(kFusedThreads)
    QuantizeActivationFusedKernel(const FusedParams p) {
  __shared__ uint8_t partial_flags[kRowLanes][kTileCols];
  const int tx = threadIdx.x;
  const int ty = threadIdx.y;
  const int64_t tile_begin = p.num_tiles * blockIdx.x / gridDim.x;
  const int64_t tile_end = p.num_tiles * (blockIdx.x + 1) / gridDim.x;

  // Phase A.
  for (int64_t tile = tile_begin; tile < tile_end; ++tile) {
    const int64_t col = tile * kTileCols + tx;
    const bool in = col < p.k;
    bool outlier = false;
    if (in) {
#pragma unroll 4
      for (int64_t i = ty; i < p.m; i += kRowLanes) {
        // !(a < t) is true for a >= t and for NaN; |Inf| >= t.
        outlier |= !(fabsf(__half2float(p.x[i * p.k + col])) < p.threshold);
      }
    }
    partial_flags[ty][tx] = outlier ? 1 : 0;
    __syncthreads();
    uint8_t any = 0;
#pragma unroll
    for (int r = 0; r < kRowLanes; ++r) any |= partial_flags[r][tx];
    const bool flagged = in && any != 0;
    if (ty == 0) {
      if (in) p.col_flags[col] = flagged ? 1 : 0;
      const unsigned ballot = __ballot_sync(0xffffffffu, flagged);
      if (tx == 0) p.tile_counts[tile] = __popc(ballot);
    }
    for (int64_t i = ty; i < p.m; i += kRowLanes) {  // warp-uniform trip count
      const float v = in && !flagged ? fabsf(__half2float(p.x[i * p.k + col])) : 0.0f;
      const float row_max = WarpMax(v);
      if (tx == 0 && row_max > 0.0f) {
        atomicMax(reinterpret_cast<unsigned int*>(p.absmax + i), __float_as_uint(row_max));
      }
    }
    __syncthreads();  // partial_flags is rewritten by the next tile
  }

  cooperative_groups::this_grid().sync();

  // Phase B.
  int partial_base = 0;
  for (int64_t t = ty * kTileCols + tx; t < tile_begin; t += kFusedThreads) {
    partial_base += __ldcg(p.tile_counts + t);
  }
  int base = BlockSumInt(partial_base);
  for (int64_t tile = tile_begin; tile < tile_end; ++tile) {
    const int64_t col = tile * kTileCols + tx;
    const bool in = col < p.k;
    const bool flagged = in && __ldcg(p.col_flags + col) != 0;
    const unsigned ballot = __ballot_sync(0xffffffffu, flagged);
    const int slot = base + __popc(ballot & ((1u << tx) - 1u));
    const bool kept = flagged && slot < p.cap;
    if (ty == 0 && kept) p.outlier_cols[slot] = static_cast<int32_t>(col);
    if (in) {
      for (int64_t i = ty; i < p.m; i += kRowLanes) {
        const __half h = p.x[i * p.k + col];
        if (kept) p.outliers[i * p.cap + slot] = h;
        const float amax = __ldcg(p.absmax + i);
        // Outliers past the cap are quantized with the row's scale (they saturate at +-127).
        p.q[i * p.k + col] =
            kept || !(amax > 0.0f) ? int8_t{0} : QuantizeToInt8(__half2float(h), QuantScale(amax));
      }
    }
    base += __popc(ballot);
  }
  if (blockIdx.x == gridDim.x - 1 && tx == 0 && ty == 0) {  // its base is now the total
    p.counts[0] = min(base, p.cap);
    p.counts[1] = base;
  }
}

// ---- t == 0: no outliers; one block per row --------------------------------------------------
constexpr int kRowThreads = 256;

__global__ void QuantizeRowsKernel(const __half* __restrict__ x, int64_t k, int8_t* __restrict__ q,
                                   float* __restrict__ absmax) {
  const int64_t i = blockIdx.x;
  const __half* row = x + i * k;
  int8_t* qrow = q + i * k;
  float amax = 0.0f;
  bool finite = true;
  for (int64_t j = threadIdx.x; j < k; j += blockDim.x) {
    const float v = __half2float(row[j]);
    finite &= isfinite(v);
    amax = fmaxf(amax, fabsf(v));
  }
  amax = BlockReduceMax(amax);
  if (!__syncthreads_and(finite)) amax = __int_as_float(0x7fc00000);  // quiet NaN, as the CPU
  if (threadIdx.x == 0) absmax[i] = amax;
  if (!(amax > 0.0f) || !isfinite(amax)) {  // zero row, or a non-finite value: all zeros
    for (int64_t j = threadIdx.x; j < k; j += blockDim.x) qrow[j] = 0;
    return;
  }
  const float scale = QuantScale(amax);
  for (int64_t j = threadIdx.x; j < k; j += blockDim.x) {
    qrow[j] = QuantizeToInt8(__half2float(row[j]), scale);
  }
}

}  // namespace

int64_t QuantizedActivationCuda::Bytes(int64_t max_m, int64_t k, int64_t max_outliers) {
  const int64_t mo = std::min(max_outliers, k);
  const int64_t tiles = (k + kTileCols - 1) / kTileCols;
  return max_m * k /* q */ + max_m * 4 /* absmax */ + mo * 4 /* outlier_cols */ +
         max_m * mo * 2 /* outliers */ + 2 * 4 /* counts */ + k /* col_flags */ +
         tiles * 4 /* tile_counts */;
}

absl::StatusOr<QuantizedActivationCuda> QuantizedActivationCuda::Create(int64_t max_m, int64_t k,
                                                                        int64_t max_outliers) {
  if (max_m <= 0 || k <= 0 || max_outliers <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("QuantizedActivationCuda: max_m, k and max_outliers must be positive, got ",
                     max_m, ", ", k, ", ", max_outliers));
  }
  if (k > INT_MAX || max_m > INT_MAX) {
    return absl::InvalidArgumentError(
        absl::StrCat("QuantizedActivationCuda: max_m and k must be < 2^31, got ", max_m, ", ", k));
  }
  // A cooperative launch needs every block resident at once: the grid is capped at what the
  // current device holds of this kernel.
  int device = 0;
  int sms = 0;
  int cooperative = 0;
  int per_sm = 0;
  RETURN_IF_CUDA_ERROR(cudaGetDevice(&device));
  RETURN_IF_CUDA_ERROR(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  RETURN_IF_CUDA_ERROR(cudaDeviceGetAttribute(&cooperative, cudaDevAttrCooperativeLaunch, device));
  if (cooperative == 0) {
    return absl::FailedPreconditionError(absl::StrCat("QuantizedActivationCuda: device ", device,
                                                      " does not support cooperative launches"));
  }
  RETURN_IF_CUDA_ERROR(cudaOccupancyMaxActiveBlocksPerMultiprocessor(
      &per_sm, QuantizeActivationFusedKernel, kFusedThreads, 0));
  QuantizedActivationCuda a;
  a.max_m = max_m;
  a.k = k;
  a.max_outliers = std::min(max_outliers, k);
  a.num_tiles = (k + kTileCols - 1) / kTileCols;
  a.grid = std::max<int64_t>(1, std::min<int64_t>(a.num_tiles, int64_t{per_sm} * sms));
  ASSIGN_OR_RETURN(a.q, gpu::DeviceBuffer<int8_t>::Allocate(max_m * k));
  ASSIGN_OR_RETURN(a.absmax, gpu::DeviceBuffer<float>::Allocate(max_m));
  ASSIGN_OR_RETURN(a.outlier_cols, gpu::DeviceBuffer<int32_t>::Allocate(a.max_outliers));
  ASSIGN_OR_RETURN(a.outliers, gpu::DeviceBuffer<Half>::Allocate(max_m * a.max_outliers));
  ASSIGN_OR_RETURN(a.counts, gpu::DeviceBuffer<int32_t>::Allocate(2));
  ASSIGN_OR_RETURN(a.col_flags, gpu::DeviceBuffer<uint8_t>::Allocate(k));
  ASSIGN_OR_RETURN(a.tile_counts, gpu::DeviceBuffer<int32_t>::Allocate(a.num_tiles));
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
    return absl::InvalidArgumentError(
        absl::StrCat("outlier threshold must be >= 0 (0 disables decomposition), got ", threshold));
  }
  out->m = m;
  const __half* xh = reinterpret_cast<const __half*>(x);
  if (threshold == 0.0f) {
    RETURN_IF_ERROR(out->counts.SetZero(stream));
    QuantizeRowsKernel<<<static_cast<unsigned>(m), kRowThreads, 0, stream>>>(xh, k, out->q.data(),
                                                                             out->absmax.data());
    RETURN_IF_LAUNCH_ERROR("QuantizeRowsKernel");
    return absl::OkStatus();
  }
  RETURN_IF_CUDA_ERROR(
      cudaMemsetAsync(out->absmax.data(), 0, static_cast<size_t>(m) * sizeof(float), stream));
  FusedParams p;
  p.x = xh;
  p.m = m;
  p.k = k;
  p.threshold = threshold;
  p.cap = static_cast<int32_t>(out->max_outliers);
  p.num_tiles = out->num_tiles;
  p.q = out->q.data();
  p.absmax = out->absmax.data();
  p.outliers = reinterpret_cast<__half*>(out->outliers.data());
  p.outlier_cols = out->outlier_cols.data();
  p.counts = out->counts.data();
  p.col_flags = out->col_flags.data();
  p.tile_counts = out->tile_counts.data();
  void* args[] = {&p};
  RETURN_IF_CUDA_ERROR(cudaLaunchCooperativeKernel(
      reinterpret_cast<const void*>(QuantizeActivationFusedKernel),
      dim3(static_cast<unsigned>(out->grid)), dim3(kTileCols, kRowLanes), args, 0, stream));
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
