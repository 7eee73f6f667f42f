#include "kernels/layer_norm.h"

#include <cmath>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace llmint8::kernels {
namespace {

std::vector<double> RefLayerNorm(const std::vector<float>& x, int64_t m, int64_t n,
                                 const std::vector<float>& g, const std::vector<float>& b,
                                 double eps) {
  std::vector<double> y(x.size());
  for (int64_t i = 0; i < m; ++i) {
    double mean = 0, var = 0;
    for (int64_t j = 0; j < n; ++j) mean += x[i * n + j];
    mean /= n;
    for (int64_t j = 0; j < n; ++j) var += (x[i * n + j] - mean) * (x[i * n + j] - mean);
    var /= n;
    for (int64_t j = 0; j < n; ++j) {
      double v = (x[i * n + j] - mean) / std::sqrt(var + eps);
      y[i * n + j] = g.empty() ? v : v * g[j] + b[j];
    }
  }
  return y;
}

TEST(LayerNormTest, MatchesDoubleReferenceWithAndWithoutAffine) {
  const int64_t m = 5, n = 96;
  std::mt19937 rng(3);
  std::normal_distribution<float> nd(0.5f, 3.0f);
  std::vector<float> x(m * n), g(n), b(n), y(m * n);
  for (float& v : x) v = nd(rng);
  x[7] = 60.0f;  // an outlier feature, as in OPT activations
  for (float& v : g) v = 1.0f + 0.1f * nd(rng);
  for (float& v : b) v = 0.1f * nd(rng);
  for (bool affine : {true, false}) {
    std::vector<float> gg = affine ? g : std::vector<float>{};
    std::vector<float> bb = affine ? b : std::vector<float>{};
    ASSERT_TRUE(LayerNorm(x, m, n, gg, bb, kLayerNormEps, y).ok());
    std::vector<double> ref = RefLayerNorm(x, m, n, gg, bb, 1e-5);
    for (size_t i = 0; i < y.size(); ++i) {
      // |y| <= sqrt(n) * max|g| + |b|; a few fp32 roundings of that size.
      EXPECT_NEAR(y[i], ref[i], 8 * 1.2e-7 * (std::abs(ref[i]) + 1.0)) << i;
    }
  }
}

TEST(LayerNormTest, InPlaceAndErrors) {
  std::vector<float> x = {1, 2, 3, 4};
  std::vector<float> copy = x, y(4);
  ASSERT_TRUE(LayerNorm(copy, 1, 4, {}, {}, kLayerNormEps, y).ok());
  ASSERT_TRUE(LayerNorm(x, 1, 4, {}, {}, kLayerNormEps, x).ok());
  EXPECT_EQ(x, y);
  std::vector<float> g(3), b(3);
  EXPECT_EQ(LayerNorm(copy, 1, 4, g, b, kLayerNormEps, y).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(LayerNorm(copy, 2, 4, {}, {}, kLayerNormEps, y).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(LayerNorm(copy, 1, 4, {}, {}, 0.0f, y).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace llmint8::kernels
