#include "kernels/layer_norm.h"

#include <cmath>

#include "absl/strings/str_cat.h"

namespace llmint8::kernels {
namespace {

// The sum of f(x[j]) in double, in four interleaved partial sums: independent additions, so
// the loop is not bound by the latency of one chain (the order depends only on n).
template <typename F>
double SumDouble(const float* x, int64_t n, F f) {
  double s[4] = {0.0, 0.0, 0.0, 0.0};
  int64_t j = 0;
  for (; j + 4 <= n; j += 4) {
    for (int l = 0; l < 4; ++l) s[l] += f(double{x[j + l]});
  }
  for (; j < n; ++j) s[0] += f(double{x[j]});
  return (s[0] + s[1]) + (s[2] + s[3]);
}

}  // namespace

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
    const double mean = SumDouble(xi, n, [](double v) { return v; }) / static_cast<double>(n);
    const double sq = SumDouble(xi, n, [mean](double v) { return (v - mean) * (v - mean); });
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
