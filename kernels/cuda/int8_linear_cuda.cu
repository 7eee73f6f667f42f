#include "kernels/cuda/int8_linear_cuda.h"

#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "kernels/cuda/cuda_status.h"
#include "kernels/cuda/device_math.cuh"
#include "kernels/cuda/int8_gemm_cuda.h"
#include "kernels/cuda/int8_gemv.h"

namespace llmint8::kernels {
namespace {

using gpu::internal::Int8Epilogue;

constexpr int64_t kMaxK = int64_t{1} << 17;
constexpr int kThreads = 256;
constexpr int kEpilogueRows = 8;  // rows per thread in the epilogue: amortizes the weight loads

// ow[c, r] = (sw[r] / 127) * q[r, cols[c]] for c < count: the outlier weight columns,
// dequantized once per call so the epilogue reads them coalesced.
__global__ void GatherOutlierWeightKernel(const int8_t* __restrict__ q,
                                          const float* __restrict__ sw, int64_t n, int64_t k,
                                          const int32_t* __restrict__ cols,
                                          const int32_t* __restrict__ count,
                                          float* __restrict__ ow) {
  const int64_t r = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (r >= n) return;
  const float scale = __fdiv_rn(sw[r], 127.0f);
  const int cnt = *count;
  for (int c = 0; c < cnt; ++c) {
    ow[c * n + r] = __fmul_rn(scale, static_cast<float>(q[r * k + cols[c]]));
  }
}

// One thread per output column r of the chunk [col0, col0 + nc) and kEpilogueRows rows:
// y[i, col0 + r] = fp16(acc[i, r] * sx * sw / 127^2 + sum_c outliers[i, c] * ow[c, col0 + r]
//                       + bias). acc is the chunk's [m, nc] int32 GEMM output; y is [m, n].
__global__ void Int8EpilogueKernel(const int32_t* __restrict__ acc, int64_t m, int64_t n,
                                   int64_t col0, int64_t nc, const float* __restrict__ sx,
                                   const float* __restrict__ sw,
                                   const __half* __restrict__ outliers, int64_t outlier_stride,
                                   const float* __restrict__ ow,
                                   const int32_t* __restrict__ count,  // null: no outliers
                                   const __half* __restrict__ bias, __half* __restrict__ y) {
  const int64_t rc = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t i0 = static_cast<int64_t>(blockIdx.y) * kEpilogueRows;
  if (rc >= nc) return;
  const int64_t r = col0 + rc;
  float osum[kEpilogueRows];
#pragma unroll
  for (int i = 0; i < kEpilogueRows; ++i) osum[i] = 0.0f;
  const int cnt = count != nullptr ? *count : 0;
  for (int c = 0; c < cnt; ++c) {
    const float wv = ow[c * n + r];
#pragma unroll
    for (int i = 0; i < kEpilogueRows; ++i) {
      if (i0 + i < m) {
        osum[i] = fmaf(__half2float(outliers[(i0 + i) * outlier_stride + c]), wv, osum[i]);
      }
    }
  }
  const float s = sw[r];
  const float b = bias != nullptr ? __half2float(bias[r]) : 0.0f;
#pragma unroll
  for (int i = 0; i < kEpilogueRows; ++i) {
    if (i0 + i < m) {
      y[(i0 + i) * n + r] =
          __float2half_rn(Int8Epilogue(acc[(i0 + i) * nc + rc], sx[i0 + i], s, osum[i], b));
    }
  }
}

// Columns per GEMM chunk: the int32 scratch of a chunk (max_m x chunk x 4 bytes) stays within
// kAccBudgetBytes, so the epilogue reads it back from L2 rather than device memory, and the
// scratch is megabytes instead of max_m x n x 4 (400 MB for OPT-175B's fc1 at 2048 tokens).
constexpr int64_t kAccBudgetBytes = int64_t{16} << 20;
constexpr int64_t kChunkGranule = 256;

int64_t GemmChunkColumns(int64_t max_m, int64_t n, int64_t requested) {
  if (requested > 0) return std::min(n, (requested + 3) / 4 * 4);
  const int64_t fit = kAccBudgetBytes / (4 * max_m) / kChunkGranule * kChunkGranule;
  return std::min(n, std::max(kChunkGranule, fit));
}

// Columns per chunk for a call of m rows: as many as the scratch holds (max_m * chunk_n ints),
// so a call with fewer rows than max_m runs fewer, wider GEMMs (m = 512 in a 2048-row
// workspace: 4x the columns, enough tiles to fill the GPU). A multiple of 256 where that fits,
// else of 4 (cuBLASLt int8 needs n % 4 == 0).
int64_t CallChunkColumns(const Int8LinearCudaWorkspace& ws, int64_t m) {
  const int64_t fit = static_cast<int64_t>(ws.acc.size()) / m;
  const int64_t granule = fit >= kChunkGranule ? kChunkGranule : 4;
  return std::min(ws.n, fit / granule * granule);
}

}  // namespace

int64_t Int8LinearCudaWorkspace::Bytes(int64_t max_m, int64_t k, int64_t n, int64_t max_outliers,
                                       int64_t gemm_min_m, int64_t gemm_chunk_n) {
  int64_t b = QuantizedActivationCuda::Bytes(max_m, k, max_outliers);
  if (max_m > gemm_min_m) {
    b += max_m * GemmChunkColumns(max_m, n, gemm_chunk_n) * 4;
    b += std::min(max_outliers, k) * n * 4;
  }
  return b;
}

absl::StatusOr<Int8LinearCudaWorkspace> Int8LinearCudaWorkspace::Create(int64_t max_m, int64_t k,
                                                                        int64_t n,
                                                                        int64_t max_outliers,
                                                                        int64_t gemm_min_m,
                                                                        int64_t gemm_chunk_n) {
  if (n <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("Int8LinearCudaWorkspace: n must be positive, got ", n));
  }
  Int8LinearCudaWorkspace ws;
  ws.max_m = max_m;
  ws.k = k;
  ws.n = n;
  ASSIGN_OR_RETURN(ws.act, QuantizedActivationCuda::Create(max_m, k, max_outliers));
  if (max_m > gemm_min_m) {
    ws.chunk_n = GemmChunkColumns(max_m, n, gemm_chunk_n);
    ASSIGN_OR_RETURN(ws.acc, gpu::DeviceBuffer<int32_t>::Allocate(max_m * ws.chunk_n));
    ASSIGN_OR_RETURN(ws.outlier_weight,
                     gpu::DeviceBuffer<float>::Allocate(ws.act.max_outliers * n));
  }
  return ws;
}

absl::Status Int8LinearCuda(gpu::CublasLt* lt, const Half* x, int64_t m,
                            const Int8WeightCudaView& w, const Half* bias,
                            const Int8LinearCudaOptions& options, Int8LinearCudaWorkspace* ws,
                            Half* y, cudaStream_t stream) {
  if (ws == nullptr || x == nullptr || y == nullptr || w.q == nullptr || w.absmax == nullptr) {
    return absl::InvalidArgumentError(
        "Int8LinearCuda: x, y, the weight (q, absmax) and the workspace must be non-null");
  }
  if (w.n != ws->n || w.k != ws->k) {
    return absl::InvalidArgumentError(absl::StrCat("Int8LinearCuda: weight [", w.n, ", ", w.k,
                                                   "] does not match the workspace [", ws->n, ", ",
                                                   ws->k, "]"));
  }
  if (w.k > kMaxK) {
    return absl::InvalidArgumentError(
        absl::StrCat("Int8LinearCuda: k must be <= 2^17 so int32 cannot overflow, got ", w.k));
  }
  const int64_t n = w.n;
  const int64_t k = w.k;
  // Validates m, threshold; enqueues quantization + outlier detection.
  RETURN_IF_ERROR(QuantizeActivationCuda(x, m, k, options.threshold, &ws->act, stream));
  QuantizedActivationCuda& act = ws->act;

  const bool gemm_ok = lt != nullptr && ws->chunk_n > 0 &&
                       CublasLtInt8Supported(n, k, act.q.data(), w.q, ws->acc.data());
  Int8LinearPath path = options.path;
  if (path == Int8LinearPath::kAuto) {
    path = (m <= options.gemv_max_m || !gemm_ok) ? Int8LinearPath::kGemv : Int8LinearPath::kGemm;
  }
  const bool has_outliers = options.threshold > 0.0f;

  const auto launch_gemv = [&] {
    internal::Int8GemvParams p;
    p.x = act.q.data();
    p.w = w.q;
    p.m = m;
    p.n = n;
    p.k = k;
    p.sx = act.absmax.data();
    p.sw = w.absmax;
    p.outliers = act.outliers.data();
    p.outlier_stride = act.max_outliers;
    p.outlier_cols = act.outlier_cols.data();
    p.outlier_count = has_outliers ? act.counts.data() : nullptr;
    p.bias = bias;
    p.y = y;
    return internal::LaunchInt8Gemv(p, stream);
  };
  if (path == Int8LinearPath::kGemv) return launch_gemv();

  if (!gemm_ok) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Int8LinearCuda: the kGemm path needs k % 4 == 0 and n % 4 == 0, a CublasLt and a "
        "workspace created with max_m > gemm_min_m; got m=",
        m, " n=", n, " k=", k, " (use kAuto to fall back to the small-M kernel)"));
  }
  const int64_t row_blocks = (m + kEpilogueRows - 1) / kEpilogueRows;
  if (row_blocks > 65535) {  // gridDim.y limit
    return absl::InvalidArgumentError(
        absl::StrCat("Int8LinearCuda: m = ", m, " exceeds the epilogue's limit of ",
                     65535 * kEpilogueRows, " rows per call; split the batch"));
  }
  const unsigned col_blocks = static_cast<unsigned>((n + kThreads - 1) / kThreads);
  if (has_outliers) {
    GatherOutlierWeightKernel<<<col_blocks, kThreads, 0, stream>>>(
        w.q, w.absmax, n, k, act.outlier_cols.data(), act.counts.data(), ws->outlier_weight.data());
    RETURN_IF_LAUNCH_ERROR("GatherOutlierWeightKernel");
  }
  // Chunks of weight rows: GEMM into the int32 scratch, then the epilogue of that chunk.
  const int64_t chunk = CallChunkColumns(*ws, m);
  for (int64_t col0 = 0; col0 < n; col0 += chunk) {
    const int64_t nc = std::min(chunk, n - col0);
    const absl::Status gemm = Int8GemmCuda(lt, act.q.data(), w.q + col0 * k, m, nc, k,
                                           ws->acc.data(), Int8GemmAlgo::kCublasLt, stream);
    if (!gemm.ok()) {
      // No cuBLASLt int8 algorithm for this shape, or none for want of memory now: kAuto takes
      // the small-M kernel instead, which writes all of y (whatever a failed chunk left).
      if (options.path == Int8LinearPath::kAuto && gpu::CublasLtMayFallBack(gemm)) {
        (void)cudaGetLastError();  // a cudaMalloc cuBLASLt failed: not the GEMV launch's error
        return launch_gemv();
      }
      return gemm;
    }
    const dim3 grid(static_cast<unsigned>((nc + kThreads - 1) / kThreads),
                    static_cast<unsigned>(row_blocks));
    Int8EpilogueKernel<<<grid, kThreads, 0, stream>>>(
        ws->acc.data(), m, n, col0, nc, act.absmax.data(), w.absmax,
        reinterpret_cast<const __half*>(act.outliers.data()), act.max_outliers,
        ws->outlier_weight.data(), has_outliers ? act.counts.data() : nullptr,
        reinterpret_cast<const __half*>(bias), reinterpret_cast<__half*>(y));
    RETURN_IF_LAUNCH_ERROR("Int8EpilogueKernel");
  }
  return absl::OkStatus();
}

}  // namespace llmint8::kernels
