#include "kernels/layer_norm.h"

#include <cmath>

#include "absl/strings/str_cat.h"

namespace llmint8::kernels {

absl::Status LayerNorm(std::span<const float> x, int64_t m, int64_t n,
                       std::span<const float> gamma, std::span<const float> beta, float eps,
                       std::span<float> y) {
  if (m < 0 || n <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("LayerNorm: bad shape m=", m, " n=", n));
  }
  const size_t total = static_cast<size_t>(m * n);
  if (x.size() != total || y.size() != total) {
    return absl::InvalidArgumentError(absl::StrCat("LayerNorm: x has ", x.size(), " and y ",
                                                   y.size(), " elements, want m*n = ", total));
  }
  const bool affine = !gamma.empty();
  if (gamma.size() != beta.size() || (affine && gamma.size() != static_cast<size_t>(n))) {
    return absl::InvalidArgumentError(
        absl::StrCat("LayerNorm: gamma (", gamma.size(), ") and beta (", beta.size(),
                     ") must both be empty or both have n = ", n, " elements"));
  }
  if (!(eps > 0.0f)) return absl::InvalidArgumentError("LayerNorm: eps must be > 0");
  for (int64_t i = 0; i < m; ++i) {
    const float* xi = x.data() + i * n;
    float* yi = y.data() + i * n;
    double sum = 0.0;
    for (int64_t j = 0; j < n; ++j) sum += xi[j];
    const double mean = sum / static_cast<double>(n);
    double sq = 0.0;
    for (int64_t j = 0; j < n; ++j) {
      const double d = xi[j] - mean;
      sq += d * d;
    }
    const double inv = 1.0 / std::sqrt(sq / static_cast<double>(n) + static_cast<double>(eps));
    const float meanf = static_cast<float>(mean);
    const float invf = static_cast<float>(inv);
    if (affine) {
      for (int64_t j = 0; j < n; ++j) yi[j] = (xi[j] - meanf) * invf * gamma[j] + beta[j];
    } else {
      for (int64_t j = 0; j < n; ++j) yi[j] = (xi[j] - meanf) * invf;
    }
  }
  return absl::OkStatus();
}

}  // namespace llmint8::kernels
