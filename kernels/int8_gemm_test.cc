#include "kernels/int8_gemm.h"

#include <tuple>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/int8_test_util.h"

namespace llmint8::kernels {
namespace {

using ::llmint8::kernels::testing::RandomInt8;

class Int8GemmShapeTest : public ::testing::TestWithParam<std::tuple<int64_t, int64_t, int64_t>> {};

// Integer math is exact: the fast path must equal the reference bit for bit.
TEST_P(Int8GemmShapeTest, MatchesReferenceExactly) {
  const auto [m, n, k] = GetParam();
  const std::vector<int8_t> a = RandomInt8(m * k, 11);
  const std::vector<int8_t> b = RandomInt8(n * k, 12);
  std::vector<int32_t> want(m * n), got(m * n, -1);
  ASSERT_TRUE(Int8GemmReference(a, b, m, n, k, want).ok());
  ASSERT_TRUE(Int8Gemm(a, b, m, n, k, got).ok());
  EXPECT_EQ(got, want);
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, Int8GemmShapeTest,
    ::testing::Values(std::make_tuple(1, 1, 1), std::make_tuple(1, 77, 100),
                      std::make_tuple(1, 1000, 4097), std::make_tuple(3, 50, 33),
                      std::make_tuple(3, 129, 1023), std::make_tuple(17, 65, 257),
                      std::make_tuple(17, 300, 31), std::make_tuple(2048, 19, 61),
                      std::make_tuple(2048, 64, 130)));

// Extreme values at the deepest allowed K: the accumulators reach +-127^2 * 2^17, just below
// 2^31, where any int16 saturation or float rounding inside the GEMM would show.
TEST(Int8GemmTest, ExtremeValuesAtMaxDepthAreExact) {
  const int64_t m = 3, n = 5, k = int64_t{1} << 17;
  std::vector<int8_t> a(m * k, 127), b(n * k, 127);
  for (int64_t j = 0; j < k; ++j) {
    a[1 * k + j] = -127;           // row 1: -127 everywhere
    a[2 * k + j] = j % 2 ? 127 : -127;
    b[3 * k + j] = -127;
    b[4 * k + j] = j % 3 ? 127 : -127;
  }
  std::vector<int32_t> want(m * n), got(m * n);
  ASSERT_TRUE(Int8GemmReference(a, b, m, n, k, want).ok());
  ASSERT_TRUE(Int8Gemm(a, b, m, n, k, got).ok());
  EXPECT_EQ(want[0], 127 * 127 * k);
  EXPECT_EQ(want[1 * n + 0], -127 * 127 * k);
  EXPECT_EQ(got, want);
}

TEST(Int8GemmTest, RejectsBadShapes) {
  std::vector<int8_t> a(6), b(6);
  std::vector<int32_t> c(4);
  for (auto fn : {&Int8Gemm, &Int8GemmReference}) {
    EXPECT_EQ(fn(a, b, 2, 2, 3, c).code(), absl::StatusCode::kOk);
    EXPECT_EQ(fn(a, b, 2, 2, 4, c).code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(fn(a, b, 0, 2, 3, c).code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(fn(a, b, 2, 2, 0, c).code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(fn(a, b, -2, -2, 3, c).code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(fn(a, b, 2, 2, 3, std::span<int32_t>(c).first(3)).code(),
              absl::StatusCode::kInvalidArgument);
    std::vector<int8_t> big(int64_t{1} << 18);
    std::vector<int32_t> one(1);
    EXPECT_EQ(fn(big, big, 1, 1, int64_t{1} << 18, one).code(), absl::StatusCode::kInvalidArgument);
  }
}

}  // namespace
}  // namespace llmint8::kernels
