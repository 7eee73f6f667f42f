#include "kernels/cuda/int8_gemv.h"

#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>

#include "kernels/cuda/cuda_status.h"
#include "kernels/cuda/device_math.cuh"

namespace llmint8::kernels::internal {
namespace {

using gpu::internal::Int8Epilogue;
using gpu::internal::kWarpSize;
using gpu::internal::WarpSum;

constexpr int kWarpsPerBlock = 4;
constexpr int kMaxRowsPerLaunch = 32;

// Packs bytes p[k0 .. k0+3] (zero past k) into the int dp4a expects (byte 0 lowest).
__device__ __forceinline__ int LoadPacked4(const int8_t* __restrict__ p, int64_t k0, int64_t k) {
  uint32_t v = 0;
#pragma unroll
  for (int b = 0; b < 4; ++b) {
    if (k0 + b < k) v |= static_cast<uint32_t>(static_cast<uint8_t>(p[k0 + b])) << (8 * b);
  }
  return static_cast<int>(v);
}

// One warp computes NR consecutive output columns r (weight rows) for MT activation rows
// (rows >= m are skipped); every lane loads 4 bytes of each row per step with per-byte bounds
// checks, so any k and any alignment work. (k % 16 == 0 with 16-byte aligned rows takes the
// tensor-core kernel of int8_gemv_mma.cu instead.)
template <int MT, int NR>
__global__ void __launch_bounds__(kWarpsPerBlock * kWarpSize)
    Int8GemvKernel(const Int8GemvParams p) {
  const int lane = threadIdx.x % kWarpSize;
  const int64_t warp_global = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock +
                              threadIdx.x / kWarpSize;
  const int64_t r0 = warp_global * NR;
  if (r0 >= p.n) return;  // whole warp exits together
  const int m = static_cast<int>(p.m);
  const int64_t k = p.k;

  int32_t acc[NR][MT];
#pragma unroll
  for (int r = 0; r < NR; ++r) {
#pragma unroll
    for (int i = 0; i < MT; ++i) acc[r][i] = 0;
  }

  // Rows past n read row n-1 (valid memory) and are never written.
  const int8_t* wrow[NR];
#pragma unroll
  for (int r = 0; r < NR; ++r) wrow[r] = p.w + (r0 + r < p.n ? r0 + r : p.n - 1) * k;

  for (int64_t k0 = static_cast<int64_t>(lane) * 4; k0 < k; k0 += kWarpSize * 4) {
    int wv[NR];
#pragma unroll
    for (int r = 0; r < NR; ++r) wv[r] = LoadPacked4(wrow[r], k0, k);
#pragma unroll
    for (int i = 0; i < MT; ++i) {
      if (i < m) {
        const int xv = LoadPacked4(p.x + i * k, k0, k);
#pragma unroll
        for (int r = 0; r < NR; ++r) acc[r][i] = __dp4a(wv[r], xv, acc[r][i]);
      }
    }
  }

#pragma unroll
  for (int r = 0; r < NR; ++r) {
#pragma unroll
    for (int i = 0; i < MT; ++i) acc[r][i] = WarpSum(acc[r][i]);
  }

  if (p.out_i32 != nullptr) {
#pragma unroll
    for (int r = 0; r < NR; ++r) {
#pragma unroll
      for (int i = 0; i < MT; ++i) {
        // Spread the stores over the lanes; indices stay compile-time so acc stays in registers.
        if (lane == (r * MT + i) % kWarpSize && i < m && r0 + r < p.n) {
          p.out_i32[i * p.n + r0 + r] = acc[r][i];
        }
      }
    }
    return;
  }

  // Fused epilogue. The outlier product: lane c handles outlier columns c, c+32, ...; the
  // dequantized weight value (sw / 127) * q matches the CPU's DequantizeWeight.
  float sw[NR];
  float sw_dq[NR];
#pragma unroll
  for (int r = 0; r < NR; ++r) {
    sw[r] = p.sw[r0 + r < p.n ? r0 + r : p.n - 1];
    sw_dq[r] = __fdiv_rn(sw[r], 127.0f);
  }
  float osum[NR][MT];
#pragma unroll
  for (int r = 0; r < NR; ++r) {
#pragma unroll
    for (int i = 0; i < MT; ++i) osum[r][i] = 0.0f;
  }
  const int count = p.outlier_count != nullptr ? *p.outlier_count : 0;
  if (count > 0) {  // uniform across the warp
    const __half* outl = reinterpret_cast<const __half*>(p.outliers);
    for (int c = lane; c < count; c += kWarpSize) {
      const int64_t col = p.outlier_cols[c];
      float wd[NR];
#pragma unroll
      for (int r = 0; r < NR; ++r) wd[r] = __fmul_rn(sw_dq[r], static_cast<float>(wrow[r][col]));
#pragma unroll
      for (int i = 0; i < MT; ++i) {
        if (i < m) {
          const float xo = __half2float(outl[i * p.outlier_stride + c]);
#pragma unroll
          for (int r = 0; r < NR; ++r) osum[r][i] = fmaf(xo, wd[r], osum[r][i]);
        }
      }
    }
#pragma unroll
    for (int r = 0; r < NR; ++r) {
#pragma unroll
      for (int i = 0; i < MT; ++i) osum[r][i] = WarpSum(osum[r][i]);
    }
  }

  const __half* bias = reinterpret_cast<const __half*>(p.bias);
  __half* y = reinterpret_cast<__half*>(p.y);
#pragma unroll
  for (int r = 0; r < NR; ++r) {
#pragma unroll
    for (int i = 0; i < MT; ++i) {
      if (lane == (r * MT + i) % kWarpSize && i < m && r0 + r < p.n) {
        const float b = bias != nullptr ? __half2float(bias[r0 + r]) : 0.0f;
        y[i * p.n + r0 + r] =
            __float2half_rn(Int8Epilogue(acc[r][i], p.sx[i], sw[r], osum[r][i], b));
      }
    }
  }
}

template <int MT, int NR>
absl::Status LaunchTiled(const Int8GemvParams& p, cudaStream_t stream) {
  const int64_t warps = (p.n + NR - 1) / NR;
  const unsigned blocks = static_cast<unsigned>((warps + kWarpsPerBlock - 1) / kWarpsPerBlock);
  Int8GemvKernel<MT, NR><<<blocks, kWarpsPerBlock * kWarpSize, 0, stream>>>(p);
  RETURN_IF_LAUNCH_ERROR("Int8GemvKernel");
  return absl::OkStatus();
}

// Rows per launch -> template: the accumulators of MT rows x NR columns live in registers, so
// NR shrinks as MT grows (NR * MT <= 32).
absl::Status LaunchChunk(const Int8GemvParams& p, cudaStream_t stream) {
  if (p.m <= 1) return LaunchTiled<1, 4>(p, stream);
  if (p.m <= 2) return LaunchTiled<2, 4>(p, stream);
  if (p.m <= 4) return LaunchTiled<4, 4>(p, stream);
  if (p.m <= 8) return LaunchTiled<8, 4>(p, stream);
  if (p.m <= 16) return LaunchTiled<16, 2>(p, stream);
  return LaunchTiled<32, 1>(p, stream);
}

bool Aligned16(const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0; }

}  // namespace

absl::Status LaunchInt8Gemv(const Int8GemvParams& p, cudaStream_t stream) {
  const bool vec = p.k % 16 == 0 && Aligned16(p.x) && Aligned16(p.w);
  for (int64_t m0 = 0; m0 < p.m; m0 += kMaxRowsPerLaunch) {
    Int8GemvParams c = p;
    c.m = std::min<int64_t>(kMaxRowsPerLaunch, p.m - m0);
    c.x = p.x + m0 * p.k;
    if (p.out_i32 != nullptr) {
      c.out_i32 = p.out_i32 + m0 * p.n;
    } else {
      c.sx = p.sx + m0;
      c.outliers = p.outliers != nullptr ? p.outliers + m0 * p.outlier_stride : nullptr;
      c.y = p.y + m0 * p.n;
    }
    absl::Status s = vec ? LaunchInt8GemvMma(c, stream) : LaunchChunk(c, stream);
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

}  // namespace llmint8::kernels::internal
