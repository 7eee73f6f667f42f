#include "kernels/quantize_weight.h"

#include <cmath>
#include <limits>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/int8_test_util.h"

namespace llmint8::kernels {
namespace {

using ::llmint8::kernels::testing::RandomNormal;
using ::llmint8::kernels::testing::ToFloat;
using ::llmint8::kernels::testing::ToHalf;

// Quantization error in units of one int8 step (absmax / 127): the exact math gives <= 0.5; fp32
// evaluation of x * (127 / absmax) adds a few ulps of 127.
constexpr double kHalfStepWithRounding = 0.5 + 4 * 127 * std::numeric_limits<float>::epsilon();

void ExpectWithinHalfStep(std::span<const float> w, std::span<const int8_t> q,
                          std::span<const float> absmax, int64_t n, int64_t k) {
  for (int64_t r = 0; r < n; ++r) {
    double want_amax = 0.0;
    for (int64_t j = 0; j < k; ++j)
      want_amax = std::max(want_amax, std::fabs(double{w[r * k + j]}));
    ASSERT_EQ(absmax[r], static_cast<float>(want_amax)) << "row " << r;
    const double step = want_amax / 127.0;
    for (int64_t j = 0; j < k; ++j) {
      const double dq = step * q[r * k + j];
      ASSERT_LE(std::fabs(dq - w[r * k + j]), kHalfStepWithRounding * step)
          << "row " << r << " col " << j;
    }
  }
}

TEST(QuantizeWeightTest, ErrorIsAtMostHalfAStep) {
  const int64_t n = 37, k = 129;
  std::vector<float> w = RandomNormal(n * k, 1, 0.02f);
  w[5] = 0.9f;  // a row with one large entry
  std::vector<int8_t> q(n * k);
  std::vector<float> absmax(n);
  ASSERT_TRUE(QuantizeWeight(w, n, k, q, absmax).ok());
  ExpectWithinHalfStep(w, q, absmax, n, k);
  // The largest entry of each row maps to +-127.
  EXPECT_EQ(q[5], 127);

  std::vector<float> back(n * k);
  ASSERT_TRUE(DequantizeWeight(q, absmax, n, k, back).ok());
  for (int64_t i = 0; i < n * k; ++i) {
    EXPECT_FLOAT_EQ(back[i], absmax[i / k] / 127.0f * q[i]);
  }
}

TEST(QuantizeWeightTest, HalfInputMatchesFloatOfSameValues) {
  const int64_t n = 8, k = 33;
  const std::vector<Half> wh = ToHalf(RandomNormal(n * k, 2));
  const std::vector<float> wf = ToFloat(wh);
  std::vector<int8_t> qh(n * k), qf(n * k);
  std::vector<float> ah(n), af(n);
  ASSERT_TRUE(QuantizeWeight(std::span<const Half>(wh), n, k, qh, ah).ok());
  ASSERT_TRUE(QuantizeWeight(std::span<const float>(wf), n, k, qf, af).ok());
  EXPECT_EQ(qh, qf);
  EXPECT_EQ(ah, af);
  ExpectWithinHalfStep(wf, qf, af, n, k);
}

TEST(QuantizeWeightTest, RoundsHalfAwayFromZeroAndHandlesZeroAndTinyRows) {
  // Row 0: absmax 127 -> scale 1, so q = round_half_away(w).
  // Row 1: all zeros -> q = 0, absmax = 0. Row 2: subnormal absmax (127 / absmax overflows).
  const float tiny = std::numeric_limits<float>::denorm_min() * 4;
  const std::vector<float> w = {127.0f, 2.5f, -2.5f, 0.5f, -0.5f, 1.49f,
                                0.0f,   0.0f, 0.0f,  0.0f, 0.0f,  0.0f,
                                tiny,   -tiny, tiny / 2, 0.0f, tiny, tiny};
  std::vector<int8_t> q(18);
  std::vector<float> absmax(3);
  ASSERT_TRUE(QuantizeWeight(w, 3, 6, q, absmax).ok());
  EXPECT_EQ(std::vector<int8_t>(q.begin(), q.begin() + 6),
            (std::vector<int8_t>{127, 3, -3, 1, -1, 1}));
  EXPECT_EQ(absmax[1], 0.0f);
  EXPECT_EQ(std::vector<int8_t>(q.begin() + 6, q.begin() + 12), std::vector<int8_t>(6, 0));
  EXPECT_EQ(absmax[2], tiny);
  EXPECT_EQ(std::vector<int8_t>(q.begin() + 12, q.end()),
            (std::vector<int8_t>{127, -127, 64, 0, 127, 127}));
}

TEST(QuantizeWeightTest, RejectsBadInput) {
  std::vector<float> w(6, 1.0f);
  std::vector<int8_t> q(6);
  std::vector<float> absmax(2);
  EXPECT_EQ(QuantizeWeight(w, 2, 4, q, absmax).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(QuantizeWeight(w, 0, 6, q, absmax).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(QuantizeWeight(w, 2, 3, q, std::span<float>(absmax).first(1)).code(),
            absl::StatusCode::kInvalidArgument);
  w[4] = std::numeric_limits<float>::quiet_NaN();
  const absl::Status s = QuantizeWeight(w, 2, 3, q, absmax);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("row 1"), std::string::npos) << s;
  w[4] = std::numeric_limits<float>::infinity();
  EXPECT_EQ(QuantizeWeight(w, 2, 3, q, absmax).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace llmint8::kernels
