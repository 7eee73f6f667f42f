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

// One thread per output column r and kEpilogueRows rows:
// y = fp16(acc * sx * sw / 127^2 + sum_c outliers[i, c] * ow[c, r] + bias[r]).
__global__ void Int8EpilogueKernel(const int32_t* __restrict__ acc, int64_t m, int64_t n,
                                   const float* __restrict__ sx, const float* __restrict__ sw,
                                   const __half* __restrict__ outliers, int64_t outlier_stride,
                                   const float* __restrict__ ow,
                                   const int32_t* __restrict__ count,  // null: no outliers
                                   const __half* __restrict__ bias, __half* __restrict__ y) {
  const int64_t r = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t i0 = static_cast<int64_t>(blockIdx.y) * kEpilogueRows;
  if (r >= n) return;
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
      const int64_t idx = (i0 + i) * n + r;
      y[idx] = __float2half_rn(Int8Epilogue(acc[idx], sx[i0 + i], s, osum[i], b));
    }
  }
}

}  // namespace

absl::StatusOr<Int8LinearCudaWorkspace> Int8LinearCudaWorkspace::Create(int64_t max_m, int64_t k,
                                                                        int64_t n,
                                                                        int64_t max_outliers,
                                                                        int64_t gemm_min_m) {
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
    ASSIGN_OR_RETURN(ws.acc, gpu::DeviceBuffer<int32_t>::Allocate(max_m * n));
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
    return absl::InvalidArgumentError(absl::StrCat(
        "Int8LinearCuda: weight [", w.n, ", ", w.k, "] does not match the workspace [", ws->n,
        ", ", ws->k, "]"));
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

  const bool gemm_ok = lt != nullptr && ws->acc.size() >= static_cast<size_t>(m * n) &&
                       CublasLtInt8Supported(n, k, act.q.data(), w.q, ws->acc.data());
  Int8LinearPath path = options.path;
  if (path == Int8LinearPath::kAuto) {
    path = (m <= options.gemv_max_m || !gemm_ok) ? Int8LinearPath::kGemv : Int8LinearPath::kGemm;
  }
  const bool has_outliers = options.threshold > 0.0f;

  if (path == Int8LinearPath::kGemv) {
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
  }

  if (!gemm_ok) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Int8LinearCuda: the kGemm path needs k % 4 == 0 and n % 4 == 0, a CublasLt and a "
        "workspace created with max_m > gemm_min_m; got m=", m, " n=", n, " k=", k,
        " (use kAuto to fall back to the dp4a kernel)"));
  }
  RETURN_IF_ERROR(Int8GemmCuda(lt, act.q.data(), w.q, m, n, k, ws->acc.data(),
                               Int8GemmAlgo::kCublasLt, stream));
  const unsigned col_blocks = static_cast<unsigned>((n + kThreads - 1) / kThreads);
  if (has_outliers) {
    GatherOutlierWeightKernel<<<col_blocks, kThreads, 0, stream>>>(
        w.q, w.absmax, n, k, act.outlier_cols.data(), act.counts.data(),
        ws->outlier_weight.data());
    RETURN_IF_LAUNCH_ERROR("GatherOutlierWeightKernel");
  }
  const int64_t row_blocks = (m + kEpilogueRows - 1) / kEpilogueRows;
  if (row_blocks > 65535) {  // gridDim.y limit
    return absl::InvalidArgumentError(absl::StrCat(
        "Int8LinearCuda: m = ", m, " exceeds the epilogue's limit of ", 65535 * kEpilogueRows,
        " rows per call; split the batch"));
  }
  const dim3 grid(col_blocks, static_cast<unsigned>(row_blocks));
  Int8EpilogueKernel<<<grid, kThreads, 0, stream>>>(
      ws->acc.data(), m, n, act.absmax.data(), w.absmax,
      reinterpret_cast<const __half*>(act.outliers.data()), act.max_outliers,
      ws->outlier_weight.data(), has_outliers ? act.counts.data() : nullptr,
      reinterpret_cast<const __half*>(bias), reinterpret_cast<__half*>(y));
  RETURN_IF_LAUNCH_ERROR("Int8EpilogueKernel");
  return absl::OkStatus();
}

}  // namespace llmint8::kernels
