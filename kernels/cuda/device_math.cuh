// Device helpers shared by the .cu files of this directory (internal; include from .cu only).
//
// The quantization math is written with explicit round-to-nearest intrinsics so nvcc cannot
// contract or approximate it: the result is bit-identical to the CPU reference
// (kernels/quantize_activation.h QuantizeToInt8, kernels/quantize_weight.cc), which computes
// scale = 127.0f / absmax and round_half_away(x * scale) in IEEE fp32.
#ifndef LLMINT8_KERNELS_CUDA_DEVICE_MATH_CUH_
#define LLMINT8_KERNELS_CUDA_DEVICE_MATH_CUH_

#include <cuda_fp16.h>

#include <cstdint>

namespace llmint8::gpu::internal {

inline constexpr int kWarpSize = 32;

// 127 / absmax with IEEE division (what the CPU computes).
__device__ __forceinline__ float QuantScale(float absmax) { return __fdiv_rn(127.0f, absmax); }

// round_half_away(x * scale) clamped to [-127, 127], NaN to 0; roundf rounds halves away from
// zero. (fmaxf would turn NaN into -127.)
__device__ __forceinline__ int8_t QuantizeToInt8(float x, float scale) {
  const float r = roundf(__fmul_rn(x, scale));
  if (isnan(r)) return 0;
  return static_cast<int8_t>(fminf(fmaxf(r, -127.0f), 127.0f));
}

// Y = C * sx * sw / 127^2 + outlier_sum + bias, in this order (as the CPU reference).
__device__ __forceinline__ float Int8Epilogue(int32_t acc, float sx, float sw, float outlier_sum,
                                              float bias) {
  const float v = __fdiv_rn(__fmul_rn(__fmul_rn(static_cast<float>(acc), sx), sw), 16129.0f);
  return __fadd_rn(__fadd_rn(v, outlier_sum), bias);
}

template <typename T>
__device__ __forceinline__ T WarpSum(T v) {
#pragma unroll
  for (int offset = kWarpSize / 2; offset > 0; offset >>= 1) {
    v += __shfl_xor_sync(0xffffffffu, v, offset);
  }
  return v;
}

__device__ __forceinline__ float WarpMax(float v) {
#pragma unroll
  for (int offset = kWarpSize / 2; offset > 0; offset >>= 1) {
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
  }
  return v;
}

}  // namespace llmint8::gpu::internal

#endif  // LLMINT8_KERNELS_CUDA_DEVICE_MATH_CUH_
