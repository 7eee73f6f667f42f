// LLM.int8() activation quantization in one pass, with outlier column detection (CPU).
//
// X is [m, k] row-major (m tokens). With threshold t > 0, a value is an outlier when
// !(|X[i, j]| < t): |X| >= t, NaN and +-Inf alike.
//   outlier columns O = { j : X[., j] holds an outlier }                       (ascending)
//   absmax[i]         = max |X[i, j]| over the row's values that are not outliers
//   q[i, j]           = round_half_away(X[i, j] * (127 / absmax[i])), 0 for an outlier value
//                       (fp32 arithmetic in exactly that order; clamped to [-127, 127]; a row
//                       with absmax 0 is all zeros; if 127 / absmax overflows fp32, as it does for
//                       absmax below about 3.7e-37, q = round_half_away((X / absmax) * 127)
//                       instead)
//   outliers[i, c]    = X[i, O[c]] if that value is an outlier, else 0  ([m, |O|] row-major)
// t == 0 disables decomposition (O is empty). t < 0, NaN t, m or k <= 0 or x.size() != m*k is
// InvalidArgument.
//
// Per-token outliers. The paper (and bitsandbytes) moves a whole column to the fp16 product
// for every token once any token of the batch exceeds t there; then a token's result depends on
// which other tokens share its batch, and a server's output on the load (continuous batching
// changes the batch every step). Here only the token's own outlier values leave the int8 path:
// the gathered columns are the same O, the other tokens' entries in them are quantized, and
// token i's q, absmax and outlier row depend on row i alone. The outlier product adds exact
// zeros for them, so a token's output is the same in any batch. The accuracy is the paper's:
// every value >= t is still carried exactly; a row's scale now also spans its values below t
// in O's columns, which are < t by definition (docs/model.md compares the perplexity). With
// one token per call (a lone sequence's decode steps) both rules are the same; they differ
// for a token batched with others that exceed t in a column where it holds a value below t
// (e.g. 5.9 beside another token's 7.0): the paper carries that 5.9 in fp16, here it sets
// the token's int8 scale, coarser for its other values than the paper's. Not yet measured on
// a model with emergent outlier features (OPT >= 6.7B; docs/model.md).
//
// Non-finite values: with t > 0 a NaN or +-Inf value is an outlier, so it flows through the
// floating-point outlier product and poisons only the outputs IEEE math says it should, never
// the int8 scale of the token. With t == 0 a non-finite value makes that row's absmax NaN
// (stored as quiet NaN, its q row all zeros) and so its whole output row NaN. Nothing traps.
//
// Thread-compatible: concurrent calls need distinct `out` objects.
#ifndef LLMINT8_KERNELS_QUANTIZE_ACTIVATION_H_
#define LLMINT8_KERNELS_QUANTIZE_ACTIVATION_H_

#include <algorithm>
#include <cmath>
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

// With AVX2 where the CPU has it; the same bits as the reference below.
absl::Status QuantizeActivation(std::span<const float> x, int64_t m, int64_t k, float threshold,
                                QuantizedActivation* out);
// Plain loops, the ground truth QuantizeActivation is tested against.
absl::Status QuantizeActivationReference(std::span<const float> x, int64_t m, int64_t k,
                                         float threshold, QuantizedActivation* out);

// The fp32 math of one element, shared by every CPU implementation so they agree bit for bit:
// round_half_away(x * scale) clamped to [-127, 127], where scale = 127 / absmax, and NaN to 0
// as on the GPU (callers skip rows whose absmax is 0 or non-finite, so only the GPU's columns
// past its outlier cap can meet NaN).
inline int8_t QuantizeToInt8(float x, float scale) {
  const float r = std::round(x * scale);
  if (std::isnan(r)) return 0;  // (casting NaN to an integer is undefined)
  return static_cast<int8_t>(std::clamp(r, -127.0f, 127.0f));
}

}  // namespace llmint8::kernels

#endif  // LLMINT8_KERNELS_QUANTIZE_ACTIVATION_H_
