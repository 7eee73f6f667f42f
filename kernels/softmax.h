// Numerically stable softmax of each row (CPU, fp32, in place):
//   y[j] = exp(x[j] - max) / sum_k exp(x[k] - max)
// -inf entries give 0 (masked positions); a row that is all -inf (or NaN) is rejected; a row
// with +inf or NaN among finite values gives NaN.
// Thread-compatible; no allocation.
#ifndef LLMINT8_KERNELS_SOFTMAX_H_
#define LLMINT8_KERNELS_SOFTMAX_H_

#include <cstdint>
#include <span>

#include "absl/status/status.h"

namespace llmint8::kernels {

// One row; the building block of attention. Precondition (unchecked): the row has at least
// one finite entry.
void SoftmaxRowInPlace(std::span<float> row);

// x is [m, n] row-major. InvalidArgument on a size mismatch or a row with no value > -inf.
absl::Status SoftmaxRows(std::span<float> x, int64_t m, int64_t n);

}  // namespace llmint8::kernels

#endif  // LLMINT8_KERNELS_SOFTMAX_H_
