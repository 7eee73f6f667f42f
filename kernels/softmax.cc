#include "kernels/softmax.h"

#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"

namespace llmint8::kernels {

void SoftmaxRowInPlace(std::span<float> row) {
  float mx = -std::numeric_limits<float>::infinity();
  for (float v : row) mx = v > mx ? v : mx;
  float sum = 0.0f;
  for (float& v : row) {
    v = std::exp(v - mx);
    sum += v;
  }
  const float inv = 1.0f / sum;
  for (float& v : row) v *= inv;
}

absl::Status SoftmaxRows(std::span<float> x, int64_t m, int64_t n) {
  if (m < 0 || n <= 0 || x.size() != static_cast<size_t>(m * n)) {
    return absl::InvalidArgumentError(
        absl::StrCat("SoftmaxRows: ", x.size(), " elements for m=", m, " n=", n));
  }
  for (int64_t i = 0; i < m; ++i) {
    std::span<float> row = x.subspan(i * n, n);
    bool any_finite = false;
    for (float v : row) any_finite |= v > -std::numeric_limits<float>::infinity();
    if (!any_finite) {  // NaN compares false too
      return absl::InvalidArgumentError(
          absl::StrCat("SoftmaxRows: row ", i, " is all -inf or NaN"));
    }
    SoftmaxRowInPlace(row);
  }
  return absl::OkStatus();
}

}  // namespace llmint8::kernels
