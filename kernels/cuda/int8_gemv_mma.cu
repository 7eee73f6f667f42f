// The small-M int8 kernel on the tensor cores: mma.sync m16n8k32 (s8 x s8 -> s32, sm_80+).
//
// A block owns 16 weight rows and up to 32 activation rows (4 tiles of 8); its 4 warps split k.
// The weight is the mma's A (16 x 32, row-major), the activations its B (32 x 8, "col": one
// activation row per column), the accumulators D (16 x 8) per tile of 8 activation rows.
//
// Fragments (PTX ISA, mma.m16n8k32 .s8; g = lane / 4, t = lane % 4; a word = 4 int8 along k):
//   A: a0 = row g,     k-bytes 4t..4t+3      a1 = row g + 8, k-bytes 4t..4t+3
//      a2 = row g,     k-bytes 16+4t..       a3 = row g + 8, k-bytes 16+4t..
//   B: b0 = column g,  k-bytes 4t..4t+3      b1 = column g,  k-bytes 16+4t..
//   D: d0, d1 = row g, columns 2t, 2t+1      d2, d3 = row g + 8, columns 2t, 2t+1
// A lane's A and B bytes sit at the same logical k positions (they depend on t alone), so any
// permutation of k applied to both leaves the dot products unchanged. We use that to load
// 16 bytes per access: in each 128-k step, lane t reads bytes [32t, 32t + 32) of its weight
// rows and activation rows, and mma step s (0..3) takes logical k 4t..4t+3 from physical
// 32t + 8s + 0..3 and logical 16+4t.. from 32t + 8s + 4..7. Every physical k of the step is
// used exactly once, by the same (row, column) pairs as without the permutation.
//
// Per 2 KiB of weight a warp reads (tiles x 1 KiB) of activations from L1 (the dp4a kernel
// reads 32 KiB at 32 rows), so the kernel stays on the weight stream up to m = 32. One block
// per 16 rows (split k over its warps) keeps ~4x more warps in flight than a warp per 16 rows
// would for the n of tensor-parallel shards (n = 4096: 256 blocks, 1024 warps).
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/cuda_status.h"
#include "kernels/cuda/device_math.cuh"
#include "kernels/cuda/int8_gemv.h"  // declares LaunchInt8GemvMma

namespace llmint8::kernels::internal {
namespace {

using gpu::internal::Int8Epilogue;
using gpu::internal::kWarpSize;

constexpr int kWarpsPerBlock = 4;
constexpr int kRowsPerBlock = 16;  // weight rows per block: the mma's M
constexpr int kTileRows = 8;       // activation rows per mma: its N
constexpr int kBlockK = 128;       // k per loop step: 4 mma steps of 32

// 16 bytes at p[i], or zeros when i >= k (i and k are multiples of 16).
__device__ __forceinline__ int4 Load16Streaming(const int8_t* p, int64_t i, int64_t k) {
  return i < k ? __ldcs(reinterpret_cast<const int4*>(p + i)) : make_int4(0, 0, 0, 0);
}
__device__ __forceinline__ int4 Load16Cached(const int8_t* p, int64_t i, int64_t k) {
  return i < k ? __ldg(reinterpret_cast<const int4*>(p + i)) : make_int4(0, 0, 0, 0);
}

// Word w (0..7) of 32 bytes held as two int4.
__device__ __forceinline__ int Word(const int4& lo, const int4& hi, int w) {
  const int4& v = w < 4 ? lo : hi;
  switch (w & 3) {
    case 0:
      return v.x;
    case 1:
      return v.y;
    case 2:
      return v.z;
    default:
      return v.w;
  }
}

__device__ __forceinline__ void MmaS8(int (&d)[4], int a0, int a1, int a2, int a3, int b0, int b1) {
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
  asm("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 "
      "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
      : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
#else
  __trap();  // int8 mma needs sm_80; the project builds for sm_80 and sm_90a
#endif
}

// y[i, r] (or out_i32) from the accumulator and the outlier product of weight row r and
// activation row i.
__device__ __forceinline__ void Finish(const Int8GemvParams& p, int64_t r, int64_t i, int32_t acc,
                                       float outlier_sum) {
  if (r >= p.n || i >= p.m) return;
  if (p.out_i32 != nullptr) {
    p.out_i32[i * p.n + r] = acc;
    return;
  }
  const __half* bias = reinterpret_cast<const __half*>(p.bias);
  const float b = bias != nullptr ? __half2float(bias[r]) : 0.0f;
  reinterpret_cast<__half*>(p.y)[i * p.n + r] =
      __float2half_rn(Int8Epilogue(acc, p.sx[i], p.sw[r], outlier_sum, b));
}

// A block of kWarpsPerBlock warps owns 16 weight rows and NT tiles of 8 activation rows
// (m <= 8 * NT). Warp w takes the 128-k steps w, w + 4, ... (split k: four times the warps of
// one warp per 16 rows, which matters for the small n of tensor-parallel shards) and the
// outlier columns w, w + 4, ...; warps 1..3 hand their partial sums to warp 0 through shared
// memory, and warp 0 applies the epilogue.
template <int NT>
__global__ void __launch_bounds__(kWarpsPerBlock* kWarpSize)
    Int8GemvMmaKernel(const Int8GemvParams p) {
  __shared__ int partial_acc[kWarpsPerBlock - 1][NT][4][kWarpSize];
  __shared__ float partial_out[kWarpsPerBlock - 1][NT][4][kWarpSize];
  const int warp = threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  const int g = lane / 4;
  const int t = lane % 4;
  const int64_t r0 = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock;  // < n: grid = ceil(n / 16)
  const int64_t k = p.k;
  // Rows past n read row n - 1 (valid memory) and are never written; activation rows past m
  // load zeros.
  const int64_t ra = min(r0 + g, p.n - 1);
  const int64_t rb = min(r0 + g + 8, p.n - 1);
  const int8_t* wa = p.w + ra * k;
  const int8_t* wb = p.w + rb * k;
  const int8_t* xr[NT];
  bool xvalid[NT];
#pragma unroll
  for (int j = 0; j < NT; ++j) {
    const int64_t i = j * kTileRows + g;
    xvalid[j] = i < p.m;
    xr[j] = p.x + (xvalid[j] ? i : 0) * k;
  }

  int acc[NT][4];
  float osum[NT][4];
#pragma unroll
  for (int j = 0; j < NT; ++j) {
#pragma unroll
    for (int c = 0; c < 4; ++c) {
      acc[j][c] = 0;
      osum[j][c] = 0.0f;
    }
  }

#pragma unroll 2
  for (int64_t k0 = warp * kBlockK; k0 < k; k0 += kWarpsPerBlock * kBlockK) {
    const int64_t base = k0 + 32 * t;
    const int4 wa_lo = Load16Streaming(wa, base, k), wa_hi = Load16Streaming(wa, base + 16, k);
    const int4 wb_lo = Load16Streaming(wb, base, k), wb_hi = Load16Streaming(wb, base + 16, k);
#pragma unroll
    for (int j = 0; j < NT; ++j) {
      int4 x_lo = make_int4(0, 0, 0, 0), x_hi = make_int4(0, 0, 0, 0);
      if (xvalid[j]) {
        x_lo = Load16Cached(xr[j], base, k);
        x_hi = Load16Cached(xr[j], base + 16, k);
      }
#pragma unroll
      for (int s = 0; s < 4; ++s) {
        MmaS8(acc[j], Word(wa_lo, wa_hi, 2 * s), Word(wb_lo, wb_hi, 2 * s),
              Word(wa_lo, wa_hi, 2 * s + 1), Word(wb_lo, wb_hi, 2 * s + 1), Word(x_lo, x_hi, 2 * s),
              Word(x_lo, x_hi, 2 * s + 1));
      }
    }
  }

  // The outlier product of this lane's accumulators (rows ra, rb; activation rows 8j + 2t + e),
  // dequantizing the weight as the CPU's DequantizeWeight: (sw / 127) * q.
  const int count = p.out_i32 == nullptr && p.outlier_count != nullptr ? *p.outlier_count : 0;
  if (count > 0) {  // block-uniform
    const float dq_a = __fdiv_rn(p.sw[ra], 127.0f);
    const float dq_b = __fdiv_rn(p.sw[rb], 127.0f);
    const __half* outl = reinterpret_cast<const __half*>(p.outliers);
    for (int c = warp; c < count; c += kWarpsPerBlock) {
      const int64_t col = p.outlier_cols[c];
      const float wd_a = __fmul_rn(dq_a, static_cast<float>(wa[col]));
      const float wd_b = __fmul_rn(dq_b, static_cast<float>(wb[col]));
#pragma unroll
      for (int j = 0; j < NT; ++j) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int64_t i = j * kTileRows + 2 * t + e;
          const float xo = i < p.m ? __half2float(outl[i * p.outlier_stride + c]) : 0.0f;
          osum[j][e] = fmaf(xo, wd_a, osum[j][e]);
          osum[j][2 + e] = fmaf(xo, wd_b, osum[j][2 + e]);
        }
      }
    }
  }

  if (warp > 0) {
#pragma unroll
    for (int j = 0; j < NT; ++j) {
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        partial_acc[warp - 1][j][c][lane] = acc[j][c];
        partial_out[warp - 1][j][c][lane] = osum[j][c];
      }
    }
  }
  __syncthreads();
  if (warp != 0) return;
#pragma unroll
  for (int w = 0; w < kWarpsPerBlock - 1; ++w) {
#pragma unroll
    for (int j = 0; j < NT; ++j) {
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        acc[j][c] += partial_acc[w][j][c][lane];
        osum[j][c] += partial_out[w][j][c][lane];
      }
    }
  }
#pragma unroll
  for (int j = 0; j < NT; ++j) {
    const int64_t i = j * kTileRows + 2 * t;
    Finish(p, r0 + g, i, acc[j][0], osum[j][0]);
    Finish(p, r0 + g, i + 1, acc[j][1], osum[j][1]);
    Finish(p, r0 + g + 8, i, acc[j][2], osum[j][2]);
    Finish(p, r0 + g + 8, i + 1, acc[j][3], osum[j][3]);
  }
}

template <int NT>
absl::Status Launch(const Int8GemvParams& p, cudaStream_t stream) {
  const unsigned blocks = static_cast<unsigned>((p.n + kRowsPerBlock - 1) / kRowsPerBlock);
  Int8GemvMmaKernel<NT><<<blocks, kWarpsPerBlock * kWarpSize, 0, stream>>>(p);
  RETURN_IF_LAUNCH_ERROR("Int8GemvMmaKernel");
  return absl::OkStatus();
}

}  // namespace

absl::Status LaunchInt8GemvMma(const Int8GemvParams& p, cudaStream_t stream) {
  if (p.m < 1 || p.m > 4 * kTileRows || p.k % 16 != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "LaunchInt8GemvMma: needs 1 <= m <= 32 and k % 16 == 0, got m=", p.m, " k=", p.k));
  }
  if (p.m <= 8) return Launch<1>(p, stream);
  if (p.m <= 16) return Launch<2>(p, stream);
  if (p.m <= 24) return Launch<3>(p, stream);
  return Launch<4>(p, stream);
}

}  // namespace llmint8::kernels::internal
