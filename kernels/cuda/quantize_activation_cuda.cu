#include "kernels/cuda/quantize_activation_cuda.h"

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

namespace llmint8::kernels {
namespace {

using gpu::internal::BlockReduceMax;
using gpu::internal::kWarpSize;
using gpu::internal::QuantizeToInt8;
using gpu::internal::QuantScale;
using gpu::internal::WarpMax;
using gpu::internal::WarpSum;

// ---- t > 0: one cooperative launch ----------------------------------------------------------
// The grid walks X in units of kTileCols columns x up to kChunkRows rows; block (32, 8):
// threadIdx.x picks the column (a warp reads 32 adjacent halves of one row), threadIdx.y strides
// over the unit's rows, so warp w of the block is row lane w. Units are ordered column tile
// major (unit = tile * row_chunks + chunk) and each block owns a contiguous run of them.
//
// Outliers are per value (!(|x| < t): |x| >= t, NaN and Inf), so a row's scale is its own:
// Phase 1, per unit, one read of its values: its columns' outlier flags over its rows, and each
// row's max |x| over its values below t, merged into absmax[i] with an integer atomicMax (valid
// for floats >= 0; absmax is zeroed before the launch; values below t are finite). With one row
// chunk (m <= kChunkRows: decode) a unit sees whole columns, so its flags are final and chunk 0
// stores its tile's outlier column count on the spot; otherwise the flags are OR-ed into
// col_flags (zeroed before the launch), and after a grid.sync() the units of chunk 0 count them.
// grid.sync(): every flag, count and absmax is final.
// Phase 2, per unit: the tile's first slot = the outlier count of all earlier tiles (ascending
// list, as the CPU); gather the unit's rows' values in the kept columns (the outliers, 0 where
// a row's value is below t) and quantize the rest.
// Row chunks give large m (prefill) many units in flight instead of one block walking 2048
// rows per 32 columns. At decode sizes X is read once from device memory; the later reads of a
// unit hit L1 / L2.
constexpr int kTileCols = kWarpSize;
constexpr int kRowLanes = 8;
constexpr int kFusedThreads = kTileCols * kRowLanes;
constexpr int64_t kChunkRows = 64;

struct FusedParams {
  const __half* x;
  int64_t m;
  int64_t k;
  float threshold;
  int32_t cap;
  int64_t num_tiles;
  int64_t row_chunks;  // ceil(m / kChunkRows)
  int8_t* q;
  float* absmax;  // zero on entry; atomicMax target
  __half* outliers;
  int32_t* outlier_cols;
  int32_t* counts;
  uint8_t* col_flags;    // k: zero on entry when row_chunks > 1
  int32_t* tile_counts;  // num_tiles
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

// One unit of the grid: column tile `tile`, rows [row_begin, row_end).
struct Unit {
  int64_t tile;
  int64_t chunk;
  int64_t row_begin;
  int64_t row_end;
  int64_t col;  // this thread's column
  bool in;      // col < k
};

__device__ __forceinline__ Unit UnitAt(const FusedParams& p, int64_t u) {
  Unit t;
  t.tile = u / p.row_chunks;
  t.chunk = u % p.row_chunks;
  t.row_begin = t.chunk * kChunkRows;
  t.row_end = min(p.m, t.row_begin + kChunkRows);
  t.col = t.tile * kTileCols + threadIdx.x;
  t.in = t.col < p.k;
  return t;
}

// Phase 1 of one unit: merges each row's max |x| below t into absmax and returns whether this
// thread's column holds an outlier in the unit's rows (every thread of the block calls; each
// gets its own column's answer).
__device__ __forceinline__ bool UnitScan(const FusedParams& p, const Unit& t) {
  __shared__ uint8_t partial[kRowLanes][kTileCols];
  bool outlier = false;
  for (int64_t i = t.row_begin + threadIdx.y; i < t.row_end; i += kRowLanes) {  // warp-uniform
    const float a = t.in ? fabsf(__half2float(p.x[i * p.k + t.col])) : 0.0f;
    const bool inlier = a < p.threshold;  // false for NaN; |Inf| >= t
    outlier |= !inlier;
    const float row_max = WarpMax(inlier ? a : 0.0f);
    if (threadIdx.x == 0 && row_max > 0.0f) {
      atomicMax(reinterpret_cast<unsigned int*>(p.absmax + i), __float_as_uint(row_max));
    }
  }
  __syncthreads();  // the previous unit may still be reading `partial`
  partial[threadIdx.y][threadIdx.x] = outlier ? 1 : 0;
  __syncthreads();
  uint8_t any = 0;
#pragma unroll
  for (int r = 0; r < kRowLanes; ++r) any |= partial[r][threadIdx.x];
  return t.in && any != 0;
}

// The tile's outlier column count, stored by warp 0 of the unit of chunk 0 once `flagged` (this
// thread's column) is final.
__device__ __forceinline__ void UnitTileCount(const FusedParams& p, const Unit& t, bool flagged) {
  if (t.chunk == 0 && threadIdx.y == 0) {
    const unsigned ballot = __ballot_sync(0xffffffffu, flagged);
    if (threadIdx.x == 0) p.tile_counts[t.tile] = __popc(ballot);
  }
}

__global__ void __launch_bounds__(kFusedThreads)
    QuantizeActivationFusedKernel(const FusedParams p) {
  const int tx = threadIdx.x;
  const int ty = threadIdx.y;
  const int64_t num_units = p.num_tiles * p.row_chunks;
  const int64_t unit_begin = num_units * blockIdx.x / gridDim.x;
  const int64_t unit_end = num_units * (blockIdx.x + 1) / gridDim.x;
  const bool whole_columns = p.row_chunks == 1;
  cooperative_groups::grid_group grid = cooperative_groups::this_grid();

  // Phase 1.
  for (int64_t u = unit_begin; u < unit_end; ++u) {
    const Unit t = UnitAt(p, u);
    const bool flagged = UnitScan(p, t);
    if (whole_columns) {
      if (ty == 0 && t.in) p.col_flags[t.col] = flagged ? 1 : 0;
      UnitTileCount(p, t, flagged);
    } else if (ty == 0 && flagged) {
      p.col_flags[t.col] = 1;  // racing stores of the same value
    }
  }
  if (!whole_columns) {  // the same branch in every block
    grid.sync();
    for (int64_t u = unit_begin; u < unit_end; ++u) {
      const Unit t = UnitAt(p, u);
      UnitTileCount(p, t, t.in && __ldcg(p.col_flags + t.col) != 0);
    }
  }

  grid.sync();

  // Phase 2. base = outliers in the tiles before the current one.
  const int64_t first_tile = unit_begin / p.row_chunks;
  int partial_base = 0;
  for (int64_t i = ty * kTileCols + tx; i < first_tile; i += kFusedThreads) {
    partial_base += __ldcg(p.tile_counts + i);
  }
  int base = BlockSumInt(partial_base);
  int64_t tile = first_tile;
  for (int64_t u = unit_begin; u < unit_end; ++u) {
    const Unit t = UnitAt(p, u);
    for (; tile < t.tile; ++tile) base += __ldcg(p.tile_counts + tile);
    const bool flagged = t.in && __ldcg(p.col_flags + t.col) != 0;
    const unsigned ballot = __ballot_sync(0xffffffffu, flagged);
    const int slot = base + __popc(ballot & ((1u << tx) - 1u));
    const bool kept = flagged && slot < p.cap;
    if (t.chunk == 0 && ty == 0 && kept) p.outlier_cols[slot] = static_cast<int32_t>(t.col);
    if (t.in) {
      for (int64_t i = t.row_begin + ty; i < t.row_end; i += kRowLanes) {
        const __half h = p.x[i * p.k + t.col];
        const float v = __half2float(h);
        const bool outlier = kept && !(fabsf(v) < p.threshold);
        if (kept) p.outliers[i * p.cap + slot] = outlier ? h : __float2half_rn(0.0f);
        const float amax = __ldcg(p.absmax + i);
        // Outliers past the cap are quantized with the row's scale (see the header).
        p.q[i * p.k + t.col] =
            outlier || !(amax > 0.0f) ? int8_t{0} : QuantizeToInt8(v, QuantScale(amax));
      }
    }
  }
  if (blockIdx.x == gridDim.x - 1 && tx == 0 && ty == 0) {  // it holds the last tile
    const int total = base + __ldcg(p.tile_counts + tile);
    p.counts[0] = min(total, p.cap);
    p.counts[1] = total;
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
  a.grid = std::max<int64_t>(1, int64_t{per_sm} * sms);
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
  const int64_t row_chunks = (m + kChunkRows - 1) / kChunkRows;
  RETURN_IF_ERROR(out->absmax.SetZero(stream));
  if (row_chunks > 1) RETURN_IF_ERROR(out->col_flags.SetZero(stream));
  FusedParams p;
  p.x = xh;
  p.m = m;
  p.k = k;
  p.threshold = threshold;
  p.cap = static_cast<int32_t>(out->max_outliers);
  p.num_tiles = out->num_tiles;
  p.row_chunks = row_chunks;
  p.q = out->q.data();
  p.absmax = out->absmax.data();
  p.outliers = reinterpret_cast<__half*>(out->outliers.data());
  p.outlier_cols = out->outlier_cols.data();
  p.counts = out->counts.data();
  p.col_flags = out->col_flags.data();
  p.tile_counts = out->tile_counts.data();
  void* args[] = {&p};
  const int64_t grid = std::min(out->grid, out->num_tiles * row_chunks);
  RETURN_IF_CUDA_ERROR(cudaLaunchCooperativeKernel(
      reinterpret_cast<const void*>(QuantizeActivationFusedKernel),
      dim3(static_cast<unsigned>(grid)), dim3(kTileCols, kRowLanes), args, 0, stream));
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
