// LLM.int8() activation quantization in one pass, with outlier column detection (CPU).
//
// X is [m, k] row-major (m tokens). With threshold t > 0:
//   outlier columns O = { j : max_i |X[i, j]| >= t }                      (ascending)
//   absmax[i]         = max_{j not in O} |X[i, j]|
//   q[i, j]           = round_half_away(127 * X[i, j] / absmax[i]) for j not in O, 0 for j in O
//   outliers[i, c]    = X[i, O[c]]                                      ([m, |O|] row-major)
// t == 0 disables decomposition (O is empty). t < 0 is InvalidArgument.
//
// Non-finite values: with t > 0 a column holding NaN or +-Inf is an outlier column, so the
// value flows through the floating-point outlier product and poisons only the outputs IEEE math
// says it should, never the int8 scale of the whole token. With t == 0 a non-finite value makes
// that row's absmax non-finite and its whole output row NaN. Nothing traps or crashes.
#ifndef LLMINT8_KERNELS_QUANTIZE_ACTIVATION_H_
#define LLMINT8_KERNELS_QUANTIZE_ACTIVATION_H_

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/status.h"

namespace llmint8::kernels {

inline constexpr float kDefaultOutlierThreshold = 6.0f;

// Output of QuantizeActivation; reused across calls (buffers only grow).
struct QuantizedActivation {
  int64_t m = 0;
  int64_t k = 0;
  std::vector<int8_t> q;               // m * k
  std::vector<float> absmax;           // m
  std::vector<int32_t> outlier_cols;   // |O|, ascending
  std::vector<float> outliers;         // m * |O|
};

absl::Status QuantizeActivation(std::span<const float> x, int64_t m, int64_t k, float threshold,
                                QuantizedActivation* out);

}  // namespace llmint8::kernels

#endif  // LLMINT8_KERNELS_QUANTIZE_ACTIVATION_H_
