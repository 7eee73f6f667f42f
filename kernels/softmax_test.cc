#include "kernels/softmax.h"

#include <cmath>
#include <limits>
#include <vector>

#include "gtest/gtest.h"

namespace llmint8::kernels {
namespace {

TEST(SoftmaxTest, MatchesDoubleReferenceAndMasks) {
  const float ninf = -std::numeric_limits<float>::infinity();
  std::vector<float> x = {1.0f, 2.0f, 3.0f, ninf, 80.0f, 100.0f, -100.0f, ninf};
  std::vector<float> in = x;
  ASSERT_TRUE(SoftmaxRows(x, 2, 4).ok());
  for (int r = 0; r < 2; ++r) {
    double mx = -1e300, sum = 0;
    for (int j = 0; j < 4; ++j) mx = std::max<double>(mx, in[r * 4 + j]);
    for (int j = 0; j < 4; ++j) sum += std::exp(static_cast<double>(in[r * 4 + j]) - mx);
    for (int j = 0; j < 4; ++j) {
      const double ref = std::exp(static_cast<double>(in[r * 4 + j]) - mx) / sum;
      EXPECT_NEAR(x[r * 4 + j], ref, 4 * 1.2e-7) << r << "," << j;
    }
  }
  EXPECT_EQ(x[3], 0.0f);
  EXPECT_EQ(x[7], 0.0f);
}

TEST(SoftmaxTest, Errors) {
  const float ninf = -std::numeric_limits<float>::infinity();
  std::vector<float> x = {ninf, ninf};
  EXPECT_EQ(SoftmaxRows(x, 1, 2).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(SoftmaxRows(x, 1, 3).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace llmint8::kernels
