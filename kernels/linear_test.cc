#include "kernels/linear.h"

#include <cmath>
#include <limits>
#include <tuple>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu_features.h"
#include "kernels/int8_test_util.h"

namespace llmint8::kernels {
namespace {

using ::llmint8::kernels::testing::AbsMatMulNTDouble;
using ::llmint8::kernels::testing::MatMulNTDouble;
using ::llmint8::kernels::testing::RandomNormal;
using ::llmint8::kernels::testing::ToFloat;
using ::llmint8::kernels::testing::ToHalf;

constexpr double kEps = std::numeric_limits<float>::epsilon();

// A float dot product of length k is within (k + 2) * eps * sum|x_j w_j| (+ |bias|) of the exact
// value (the deterministic bound; blocked/FMA summation only does better).
void ExpectWithinDotBound(std::span<const float> got, std::span<const double> want,
                          std::span<const double> magnitude, int64_t k) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    ASSERT_LE(std::fabs(got[i] - want[i]), (k + 2) * kEps * magnitude[i] + 1e-30)
        << "element " << i;
  }
}

class LinearShapeTest : public ::testing::TestWithParam<std::tuple<int64_t, int64_t, int64_t>> {};

TEST_P(LinearShapeTest, F32MatchesDoubleReference) {
  const auto [m, n, k] = GetParam();
  const std::vector<float> x = RandomNormal(m * k, 21);
  const std::vector<float> w = RandomNormal(n * k, 22, 0.05f);
  const std::vector<float> bias = RandomNormal(n, 23);
  std::vector<float> y(m * n, std::numeric_limits<float>::quiet_NaN());  // must be overwritten
  ASSERT_TRUE(LinearF32(x, m, w, n, k, bias, y).ok());
  ExpectWithinDotBound(y, MatMulNTDouble(x, w, bias, m, n, k),
                       AbsMatMulNTDouble(x, w, bias, m, n, k), k);
  ASSERT_TRUE(LinearF32(x, m, w, n, k, {}, y).ok());
  ExpectWithinDotBound(y, MatMulNTDouble(x, w, {}, m, n, k), AbsMatMulNTDouble(x, w, {}, m, n, k),
                       k);
}

// The reference uses the fp16 weights widened exactly to float, so only summation error remains.
TEST_P(LinearShapeTest, F16MatchesDoubleReferenceOfTheHalfWeights) {
  const auto [m, n, k] = GetParam();
  const std::vector<float> x = RandomNormal(m * k, 31);
  const std::vector<Half> wh = ToHalf(RandomNormal(n * k, 32, 0.05f));
  const std::vector<float> w = ToFloat(wh);
  const std::vector<float> bias = RandomNormal(n, 33);
  std::vector<float> y(m * n, std::numeric_limits<float>::quiet_NaN());
  ASSERT_TRUE(LinearF16(x, m, wh, n, k, bias, y).ok());
  ExpectWithinDotBound(y, MatMulNTDouble(x, w, bias, m, n, k),
                       AbsMatMulNTDouble(x, w, bias, m, n, k), k);
}

INSTANTIATE_TEST_SUITE_P(Shapes, LinearShapeTest,
                         ::testing::Values(std::make_tuple(1, 1, 1), std::make_tuple(1, 300, 77),
                                           std::make_tuple(3, 33, 1000),
                                           std::make_tuple(17, 129, 65),
                                           // the direct kernel: a whole group of 8 rows of x,
                                           // a group and a tail, its largest batch
                                           std::make_tuple(8, 40, 64), std::make_tuple(13, 40, 37),
                                           std::make_tuple(16, 40, 64),
                                           // k > the 2^20-value block: one row per block.
                                           std::make_tuple(2, 3, (1 << 20) + 9),
                                           // several blocks of rows, last one partial.
                                           std::make_tuple(5, 2500, 1000)));

// Decode batches (up to 16 rows) take the direct kernel, which computes each row of x alone:
// a sequence's output does not depend on what else is in its batch, to the bit.
TEST(LinearTest, F16DecodeRowsDoNotDependOnTheBatch) {
  if (!Cpu().avx2_fma_f16c()) {
    GTEST_SKIP() << "no AVX2 / FMA / F16C: every batch takes the blocked SGEMM";
  }
  constexpr int64_t kN = 50, kK = 83;
  const std::vector<Half> wh = ToHalf(RandomNormal(kN * kK, 41, 0.05f));
  const std::vector<float> bias = RandomNormal(kN, 42);
  for (int64_t m : {1, 7, 8, 9, 13, 16}) {
    const std::vector<float> x = RandomNormal(m * kK, 43);
    std::vector<float> batch(m * kN);
    ASSERT_TRUE(LinearF16(x, m, wh, kN, kK, bias, batch).ok());
    for (int64_t i = 0; i < m; ++i) {
      std::vector<float> alone(kN);
      ASSERT_TRUE(
          LinearF16(std::span<const float>(x).subspan(i * kK, kK), 1, wh, kN, kK, bias, alone)
              .ok());
      for (int64_t r = 0; r < kN; ++r) {
        ASSERT_EQ(batch[i * kN + r], alone[r]) << "m " << m << " row " << i << " col " << r;
      }
    }
  }
}

TEST(LinearTest, RejectsBadShapes) {
  std::vector<float> x(6, 1.0f), w(6, 1.0f), y(4), bias(2, 1.0f);
  const std::vector<Half> wh = ToHalf(w);
  EXPECT_TRUE(LinearF32(x, 2, w, 2, 3, bias, y).ok());
  EXPECT_TRUE(LinearF16(x, 2, wh, 2, 3, bias, y).ok());
  EXPECT_EQ(y[0], 4.0f);  // 3 * 1 * 1 + bias 1
  for (int64_t bad_k : {int64_t{0}, int64_t{-3}, int64_t{4}}) {
    EXPECT_EQ(LinearF32(x, 2, w, 2, bad_k, bias, y).code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(LinearF16(x, 2, wh, 2, bad_k, bias, y).code(), absl::StatusCode::kInvalidArgument);
  }
  EXPECT_EQ(LinearF32(x, 0, w, 2, 3, bias, y).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(LinearF32(x, 2, w, 2, 3, std::span<const float>(bias).first(1), y).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(LinearF16(x, 2, wh, 2, 3, bias, std::span<float>(y).first(3)).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(LinearF16(x, 2, std::span<const Half>(wh).first(5), 2, 3, bias, y).code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace llmint8::kernels
