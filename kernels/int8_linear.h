// The LLM.int8() linear layer (CPU): Y = X W^T + b with vector-wise int8 and outlier decomposition.
//
//   Y[i, r] = C[i, r] * absmax_x[i] * absmax_w[r] / 127^2            (C = int32 Xq Wq^T)
//           + sum_{c : |X[i, c]| >= t} X[i, c] * Wdq[r, c]              (fp outlier product)
//           + bias[r]
// where Wdq = absmax_w * Wq / 127 (dequantized from the int8 weight; no fp16 copy is kept).
//
// Shapes: x [m, k] fp32, weight [n, k] int8 + absmax [n], bias [n] or empty, y [m, n] fp32.
// Outliers and row scales follow QuantizeActivation (threshold 0 disables the decomposition):
// per token, so a token's output does not depend on the other rows of x.
// Errors (InvalidArgument): m, n or k <= 0, k > 2^17, any size that does not match, threshold
// < 0 or NaN. Non-finite activations give the NaN/Inf pattern documented in
// quantize_activation.h (t > 0: only the token rows holding them; t == 0: those whole rows NaN).
// Thread-compatible: give each thread its own Int8LinearScratch. Int8Linear runs its GEMM and
// epilogue on the OpenMP thread pool.
#ifndef LLMINT8_KERNELS_INT8_LINEAR_H_
#define LLMINT8_KERNELS_INT8_LINEAR_H_

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "kernels/quantize_activation.h"

namespace llmint8::kernels {

// A non-owning view of a quantized weight; the storage outlives the view.
struct Int8WeightView {
  std::span<const int8_t> q;      // n * k, row-major
  std::span<const float> absmax;  // n
  int64_t n = 0;
  int64_t k = 0;
};

struct Int8LinearScratch {
  QuantizedActivation act;
  std::vector<int32_t> acc;        // m * n
  std::vector<float> outlier_w;    // |O| * n: Wdq[:, O]^T, gathered per call
};

// Plain loops end to end; the ground truth for the fast path and for the CUDA kernels.
absl::Status Int8LinearReference(std::span<const float> x, int64_t m, const Int8WeightView& w,
                                 std::span<const float> bias, float threshold, std::span<float> y);

// Same result (bit-identical int32 part; the float epilogue may differ by rounding order) using
// the fast GEMM. `scratch` may be reused across calls.
absl::Status Int8Linear(std::span<const float> x, int64_t m, const Int8WeightView& w,
                        std::span<const float> bias, float threshold, std::span<float> y,
                        Int8LinearScratch* scratch);

}  // namespace llmint8::kernels

#endif  // LLMINT8_KERNELS_INT8_LINEAR_H_
