#include "kernels/int8_gemm.h"

#include <cstdint>
#include <random>
#include <tuple>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/int8_test_util.h"

namespace llmint8::kernels {
namespace {

using ::llmint8::kernels::testing::RandomInt8;

// Uniform over all of int8, -128 included (RandomInt8 stops at -127).
std::vector<int8_t> RandomFullRangeInt8(int64_t size, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_int_distribution<int> dist(-128, 127);
  std::vector<int8_t> v(size);
  for (int8_t& x : v) x = static_cast<int8_t>(dist(gen));
  return v;
}

// Int8Gemm against Int8GemmReference, bit for bit.
void ExpectMatchesReference(const std::vector<int8_t>& a, const std::vector<int8_t>& b, int64_t m,
                            int64_t n, int64_t k) {
  std::vector<int32_t> want(m * n), got(m * n, -1);
  ASSERT_TRUE(Int8GemmReference(a, b, m, n, k, want).ok());
  ASSERT_TRUE(Int8Gemm(a, b, m, n, k, got).ok());
  EXPECT_EQ(got, want) << "m=" << m << " n=" << n << " k=" << k;
}

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
    a[1 * k + j] = -127;  // row 1: -127 everywhere
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

// Every tail of the CPU kernels (the small-m one below m = 8, the packed one above, which
// blocks k by 512, n by 16 and 64 and m by 6): m, n and k around those sizes, full int8 range.
class Int8GemmTailTest : public ::testing::TestWithParam<std::tuple<int64_t, int64_t, int64_t>> {};

TEST_P(Int8GemmTailTest, FullRangeMatchesReferenceExactly) {
  const auto [m, n, k] = GetParam();
  ExpectMatchesReference(RandomFullRangeInt8(m * k, 21), RandomFullRangeInt8(n * k, 22), m, n, k);
}

INSTANTIATE_TEST_SUITE_P(Tails, Int8GemmTailTest,
                         ::testing::Combine(::testing::Values(1, 2, 3, 5, 7, 8, 33, 130),
                                            ::testing::Values(1, 3, 5, 17, 67),
                                            ::testing::Values(1, 15, 16, 17, 31, 257, 1000, 4099)));

// Extreme values: -128 everywhere, 127 everywhere, and rows that alternate them, so the
// int32 sums reach +-128^2 * k; any int16 saturation (vpmaddubsw-style) would show.
TEST(Int8GemmTest, ExtremeValuesAreExact) {
  for (const int64_t m : {1, 7, 33}) {
    for (const int64_t k : {17, 1000, 4099}) {
      const int64_t n = 19;
      std::vector<int8_t> a(m * k), b(n * k);
      for (int64_t i = 0; i < m; ++i) {
        for (int64_t j = 0; j < k; ++j) {
          const int8_t alternate = j % 2 ? 127 : -128;
          a[i * k + j] = i % 3 == 0 ? -128 : i % 3 == 1 ? 127 : alternate;
        }
      }
      for (int64_t r = 0; r < n; ++r) {
        for (int64_t j = 0; j < k; ++j) {
          const int8_t alternate = (j / (r % 4 + 1)) % 2 ? -128 : 127;
          b[r * k + j] = r % 3 == 0 ? -128 : r % 3 == 1 ? 127 : alternate;
        }
      }
      std::vector<int32_t> want(m * n);
      ASSERT_TRUE(Int8GemmReference(a, b, m, n, k, want).ok());
      EXPECT_EQ(want[0], 128 * 128 * static_cast<int32_t>(k));  // -128 * -128 over all of k
      ExpectMatchesReference(a, b, m, n, k);
    }
  }
}

// The deepest allowed K with -128 in A, for both CPU kernels: -128 * 127 * 2^17 is within 1.6%
// of -2^31. (-128 * -128 * 2^17 = 2^31 itself would overflow int32 in any implementation.)
TEST(Int8GemmTest, MinusOneTwentyEightAtMaxDepthIsExact) {
  const int64_t k = int64_t{1} << 17, n = 3;
  std::vector<int8_t> b(n * k);
  for (int64_t j = 0; j < k; ++j) {
    b[0 * k + j] = 127;
    b[1 * k + j] = -127;
    b[2 * k + j] = j % 2 ? 127 : -127;
  }
  for (const int64_t m : {2, 17}) {
    const std::vector<int8_t> a(m * k, -128);
    std::vector<int32_t> want(m * n);
    ASSERT_TRUE(Int8GemmReference(a, b, m, n, k, want).ok());
    EXPECT_EQ(want[0], -128 * 127 * static_cast<int32_t>(k));
    EXPECT_EQ(want[1], 128 * 127 * static_cast<int32_t>(k));
    ExpectMatchesReference(a, b, m, n, k);
  }
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
