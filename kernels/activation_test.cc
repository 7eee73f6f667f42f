#include "kernels/activation.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <limits>
#include <vector>

#include "gtest/gtest.h"

namespace llmint8::kernels {
namespace {

TEST(ActivationTest, GeluIsTheExactErfForm) {
  std::vector<float> x;
  for (float v = -8.0f; v <= 8.0f; v += 0.125f) x.push_back(v);
  std::vector<float> y = x;
  GeluInPlace(y);
  for (size_t i = 0; i < x.size(); ++i) {
    const double xd = x[i];
    const double ref = 0.5 * xd * (1.0 + std::erf(xd / std::sqrt(2.0)));
    // Same fp32 formula as torch: 1 + erf() cancels for x << 0, an absolute error of about
    // 0.5 * |x| * eps(1.0); relative error elsewhere.
    EXPECT_NEAR(y[i], ref, 4 * 1.2e-7 * (std::abs(ref) + 0.5 * std::abs(xd))) << x[i];
  }
  // Differs from the tanh approximation by more than the tolerance somewhere.
  const double t = 0.5 * -3.0 * (1 + std::tanh(std::sqrt(2 / M_PI) * (-3.0 - 0.044715 * 27)));
  std::vector<float> z = {-3.0f};
  GeluInPlace(z);
  EXPECT_GT(std::abs(z[0] - t), 1e-5);
}

TEST(ActivationTest, Relu) {
  std::vector<float> x = {-2.0f, -0.0f, 0.0f, 1.5f, 1e30f};
  ReluInPlace(x);
  EXPECT_EQ(x, (std::vector<float>{0.0f, 0.0f, 0.0f, 1.5f, 1e30f}));
}

// Every value, in the vector loop and the tail alike, is exactly v > 0 ? v : 0: NaN and -0
// become +0, infinities and subnormals keep their sign's rule.
TEST(ActivationTest, ReluIsExactlyTheComparisonForEveryValue) {
  const float specials[] = {std::numeric_limits<float>::quiet_NaN(),
                            -std::numeric_limits<float>::quiet_NaN(),
                            std::numeric_limits<float>::infinity(),
                            -std::numeric_limits<float>::infinity(),
                            -0.0f,
                            0.0f,
                            1e-45f,
                            -1e-45f,
                            3.0f,
                            -3.0f,
                            std::numeric_limits<float>::max()};
  for (size_t n = 1; n <= 2 * std::size(specials) + 3; ++n) {
    std::vector<float> x(n);
    for (size_t i = 0; i < n; ++i) x[i] = specials[(i * 7 + n) % std::size(specials)];
    std::vector<float> y = x;
    ReluInPlace(y);
    for (size_t i = 0; i < n; ++i) {
      const float want = x[i] > 0.0f ? x[i] : 0.0f;
      uint32_t got_bits, want_bits;
      std::memcpy(&got_bits, &y[i], 4);
      std::memcpy(&want_bits, &want, 4);
      EXPECT_EQ(got_bits, want_bits) << "n=" << n << " i=" << i << " x=" << x[i];
    }
  }
}

}  // namespace
}  // namespace llmint8::kernels
