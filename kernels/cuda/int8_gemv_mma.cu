// The small-M int8 kernel on the tensor cores: mma.sync m16n8k32 (s8 x s8 -> s32, sm_80+).
//
// A warp owns 16 weight rows and up to 32 activation rows (4 tiles of 8). The weight is the
// mma's A (16 x 32, row-major), the activations its B (32 x 8, "col": one activation row per
// column), the accumulators D (16 x 8) per tile of 8 activation rows.
//
// Fragments (PTX ISA, mma.m16n8k32 .s8; g = lane / 4, t = lane % 4; a word = 4 int8 along k):
//   A: a0 = row g,     k-bytes 4t..4t+3      a1 = row g + 8, k-bytes 4t..4t+3
//      a2 = row g,     k-bytes 16+4t..       a3 = row g + 8, k-bytes 16+4t..
//   B: b0 = column g,  k-bytes 4t..4t+3      b1 = column g,  k-bytes 16+4t..
//   D: d0, d1 = row g, columns 2t, 2t+1      d2, d3 = row g + 8, columns 2t, 2t+1
// A lane's A and B bytes sit at the same logical k positions (they depend on t alone), so any
// permutation of k applied to both leaves the dot products unchanged. We use that to load
// 16 bytes per access: in a block of 128 k, lane t reads bytes [32t, 32t + 32) of its weight
// rows and activation rows, and mma step s (0..3) takes logical k 4t..4t+3 from physical
// 32t + 8s + 0..3 and logical 16+4t.. from 32t + 8s + 4..7. Every physical k of the block is
// used exactly once, by the same (row, column) pairs as without the permutation.
//
// Per 2 KiB of weight a warp reads (tiles x 1 KiB) of activations from L1 (the dp4a kernel
// reads 32 KiB at 32 rows), so the kernel stays on the weight stream up to m = 32.
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/cuda/cuda_status.h"
#include "kernels/cuda/device_math.cuh"
#include "kernels/cuda/int8_gemv.h"  // declares LaunchInt8GemvMma

namespace llmint8::kernels::internal {
namespace {

using gpu::internal::Int8Epilogue;
using gpu::internal::kWarpSize;

constexpr int kWarpsPerBlock = 4;
constexpr int kRowsPerWarp = 16;  // weight rows: the mma's M
constexpr int kTileRows = 8;      // activation rows per mma: its N
constexpr int kBlockK = 128;      // k per loop step: 4 mma steps of 32

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
  asm volatile(
      "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 "
      "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
      : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// y (or out_i32) for weight row r and activation row i from the accumulator `acc`.
__device__ __forceinline__ void Finish(const Int8GemvParams& p, int64_t r, int64_t i, int32_t acc) {
  if (r >= p.n || i >= p.m) return;
  if (p.out_i32 != nullptr) {
    p.out_i32[i * p.n + r] = acc;
    return;
  }
  // The outlier product, dequantizing the weight as the CPU's DequantizeWeight: (sw / 127) * q.
  const float sw = p.sw[r];
  float osum = 0.0f;
  const int count = p.outlier_count != nullptr ? *p.outlier_count : 0;
  if (count > 0) {
    const float sw_dq = __fdiv_rn(sw, 127.0f);
    const __half* outl = reinterpret_cast<const __half*>(p.outliers) + i * p.outlier_stride;
    const int8_t* wrow = p.w + r * p.k;
    for (int c = 0; c < count; ++c) {
      const float wd = __fmul_rn(sw_dq, static_cast<float>(wrow[p.outlier_cols[c]]));
      osum = fmaf(__half2float(outl[c]), wd, osum);
    }
  }
  const __half* bias = reinterpret_cast<const __half*>(p.bias);
  const float b = bias != nullptr ? __half2float(bias[r]) : 0.0f;
  reinterpret_cast<__half*>(p.y)[i * p.n + r] =
      __float2half_rn(Int8Epilogue(acc, p.sx[i], sw, osum, b));
}

// NT tiles of 8 activation rows (m <= 8 * NT).
template <int NT>
__global__ void __launch_bounds__(kWarpsPerBlock* kWarpSize)
    Int8GemvMmaKernel(const Int8GemvParams p) {
  const int lane = threadIdx.x % kWarpSize;
  const int g = lane / 4;
  const int t = lane % 4;
  const int64_t r0 =
      (static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarpSize) * kRowsPerWarp;
  if (r0 >= p.n) return;  // whole warp exits together
  const int64_t k = p.k;
  // Rows past n read row n - 1 (valid memory) and are never written; activation rows past m
  // load zeros.
  const int8_t* wa = p.w + min(r0 + g, p.n - 1) * k;
  const int8_t* wb = p.w + min(r0 + g + 8, p.n - 1) * k;
  const int8_t* xr[NT];
  bool xvalid[NT];
#pragma unroll
  for (int j = 0; j < NT; ++j) {
    const int64_t i = j * kTileRows + g;
    xvalid[j] = i < p.m;
    xr[j] = p.x + (xvalid[j] ? i : 0) * k;
  }

  int acc[NT][4];
#pragma unroll
  for (int j = 0; j < NT; ++j) {
#pragma unroll
    for (int c = 0; c < 4; ++c) acc[j][c] = 0;
  }

#pragma unroll 2
  for (int64_t k0 = 0; k0 < k; k0 += kBlockK) {
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

#pragma unroll
  for (int j = 0; j < NT; ++j) {
    const int64_t i = j * kTileRows + 2 * t;
    Finish(p, r0 + g, i, acc[j][0]);
    Finish(p, r0 + g, i + 1, acc[j][1]);
    Finish(p, r0 + g + 8, i, acc[j][2]);
    Finish(p, r0 + g + 8, i + 1, acc[j][3]);
  }
}

template <int NT>
absl::Status Launch(const Int8GemvParams& p, cudaStream_t stream) {
  const int64_t warps = (p.n + kRowsPerWarp - 1) / kRowsPerWarp;
  const unsigned blocks = static_cast<unsigned>((warps + kWarpsPerBlock - 1) / kWarpsPerBlock);
  Int8GemvMmaKernel<NT><<<blocks, kWarpsPerBlock * kWarpSize, 0, stream>>>(p);
  RETURN_IF_LAUNCH_ERROR("Int8GemvMmaKernel");
  return absl::OkStatus();
}

}  // namespace

absl::Status LaunchInt8GemvMma(const Int8GemvParams& p, cudaStream_t stream) {
  if (p.m <= 8) return Launch<1>(p, stream);
  if (p.m <= 16) return Launch<2>(p, stream);
  if (p.m <= 24) return Launch<3>(p, stream);
  return Launch<4>(p, stream);
}

}  // namespace llmint8::kernels::internal
