// The small-M int8 kernels (internal to kernels/cuda): stream the int8 weight once per 32
// activation rows, int32 accumulation.
//
// Two outputs:
//   - fused (out_i32 == nullptr): y[i, r] = fp16(C[i, r] * sx[i] * sw[r] / 127^2
//       + sum_{c < count} outliers[i, c] * (sw[r] / 127) * w[r, cols[c]] + bias[r]),
//     the whole LLM.int8() epilogue in registers;
//   - raw (out_i32 != nullptr): out_i32[i, r] = C[i, r] (the int32 accumulators).
// Any m (chunks of 32 rows, one launch each), any n, any k <= 2^17. k % 16 == 0 with 16-byte
// aligned x and w runs on the tensor cores (int8_gemv_mma.cu: mma.sync m16n8k32, 16-byte
// loads); other shapes take the dp4a kernel with 4-byte, bounds-checked loads (int8_gemv.cu).
// One header for the two .cu files: they are one op (the small-M int8 GEMM) in two variants
// chosen by shape, and callers see one entry point.
#ifndef LLMINT8_KERNELS_CUDA_INT8_GEMV_H_
#define LLMINT8_KERNELS_CUDA_INT8_GEMV_H_

#include <cstdint>

#include "absl/status/status.h"
#include "common/half.h"
#include "kernels/cuda/cuda_types.h"

namespace llmint8::kernels::internal {

struct Int8GemvParams {
  const int8_t* x = nullptr;  // [m, k] int8 activations (outlier columns zeroed)
  const int8_t* w = nullptr;  // [n, k] int8 weight
  int64_t m = 0;
  int64_t n = 0;
  int64_t k = 0;
  int32_t* out_i32 = nullptr;  // raw mode: [m, n]
  // Fused mode:
  const float* sx = nullptr;              // [m] activation row absmax
  const float* sw = nullptr;              // [n] weight row absmax
  const Half* outliers = nullptr;         // [m, outlier_stride] fp16 outlier values
  int64_t outlier_stride = 0;
  const int32_t* outlier_cols = nullptr;  // device list
  const int32_t* outlier_count = nullptr; // device scalar; null = no outliers
  const Half* bias = nullptr;             // [n] or null
  Half* y = nullptr;                      // [m, n]
};

// Enqueues the kernel(s) on `stream`. The caller validates shapes and pointers.
absl::Status LaunchInt8Gemv(const Int8GemvParams& p, cudaStream_t stream);

// The tensor-core kernel alone, for m <= 32, k % 16 == 0 and 16-byte aligned x and w (what
// LaunchInt8Gemv checks before calling it).
absl::Status LaunchInt8GemvMma(const Int8GemvParams& p, cudaStream_t stream);

}  // namespace llmint8::kernels::internal

#endif  // LLMINT8_KERNELS_CUDA_INT8_GEMV_H_
