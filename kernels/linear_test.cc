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

// W [n, k] as the kernels take it: wt = W^T [k, n].
template <typename T>
std::vector<T> Transposed(const std::vector<T>& w, int64_t n, int64_t k) {
  std::vector<T> wt(w.size());
  EXPECT_TRUE(TransposeWeight(w, n, k, wt).ok());
  return wt;
}

// The order linear.h defines: one FMA chain over j from 0, then the bias.
std::vector<float> DefinedOrder(std::span<const float> x, int64_t m, std::span<const float> w,
                                int64_t n, int64_t k, std::span<const float> bias) {
  std::vector<float> y(m * n);
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t c = 0; c < n; ++c) {
      float acc = 0.0f;
      for (int64_t j = 0; j < k; ++j) acc = std::fma(x[i * k + j], w[c * k + j], acc);
      y[i * n + c] = bias.empty() ? acc : acc + bias[c];
    }
  }
  return y;
}

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
  const std::vector<float> wt = Transposed(w, n, k);
  ASSERT_TRUE(LinearF32(x, m, wt, n, k, bias, y).ok());
  ExpectWithinDotBound(y, MatMulNTDouble(x, w, bias, m, n, k),
                       AbsMatMulNTDouble(x, w, bias, m, n, k), k);
  ASSERT_TRUE(LinearF32(x, m, wt, n, k, {}, y).ok());
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
  ASSERT_TRUE(LinearF16(x, m, Transposed(wh, n, k), n, k, bias, y).ok());
  ExpectWithinDotBound(y, MatMulNTDouble(x, w, bias, m, n, k),
                       AbsMatMulNTDouble(x, w, bias, m, n, k), k);
}

// Where the order of linear.h holds (LinearRowsAreBatchInvariant), every output has its bits,
// whichever path (streamed, widened), tile and strip (whole, partial) computed it.
TEST_P(LinearShapeTest, FollowsTheDefinedOrderExactly) {
  if (!LinearRowsAreBatchInvariant()) {
    GTEST_SKIP() << "no AVX2 / FMA / F16C: oneDNN's sgemm picks its summation order by m";
  }
  const auto [m, n, k] = GetParam();
  if (m * n * k > (int64_t{1} << 24)) GTEST_SKIP() << "the scalar order is too slow here";
  const std::vector<float> x = RandomNormal(m * k, 51);
  const std::vector<Half> wh = ToHalf(RandomNormal(n * k, 52, 0.05f));
  const std::vector<float> w = ToFloat(wh);
  const std::vector<float> bias = RandomNormal(n, 53);
  for (const bool with_bias : {true, false}) {
    const std::span<const float> b =
        with_bias ? std::span<const float>(bias) : std::span<const float>();
    const std::vector<float> want = DefinedOrder(x, m, w, n, k, b);
    std::vector<float> y16(m * n), y32(m * n);
    ASSERT_TRUE(LinearF16(x, m, Transposed(wh, n, k), n, k, b, y16).ok());
    ASSERT_TRUE(LinearF32(x, m, Transposed(w, n, k), n, k, b, y32).ok());
    for (int64_t e = 0; e < m * n; ++e) {
      ASSERT_EQ(y16[e], want[e]) << "fp16 row " << e / n << " col " << e % n << " bias "
                                 << with_bias;
      ASSERT_EQ(y32[e], want[e]) << "fp32 row " << e / n << " col " << e % n << " bias "
                                 << with_bias;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, LinearShapeTest,
    ::testing::Values(std::make_tuple(1, 1, 1), std::make_tuple(1, 300, 77),
                      std::make_tuple(3, 33, 1000), std::make_tuple(17, 129, 65),
                      // streamed (< 24 rows) and widened: whole
                      // and partial tiles of 6 rows and strips of
                      // 16 / 64 columns, k off the 32- and 128-row
                      // blocks of wt
                      std::make_tuple(8, 40, 64), std::make_tuple(13, 40, 37),
                      std::make_tuple(16, 48, 64), std::make_tuple(23, 128, 100),
                      std::make_tuple(24, 64, 16), std::make_tuple(31, 70, 129),
                      std::make_tuple(130, 13, 37), std::make_tuple(67, 200, 300),
                      // k past the sgemm fallback's fp16 blocks of W^T
                      // (2^20 / n rows each), and past many stream blocks.
                      std::make_tuple(2, 3, (1 << 20) + 9),
                      // several blocks of rows, last one partial.
                      std::make_tuple(5, 2500, 1000)));

// Each row of x gets the same bits whatever else is in its batch (LinearRowsAreBatchInvariant):
// single rows (streamed) against batches on both paths, across the tiles' edges (6 rows of x,
// strips of 16 or 64 columns), with k off the blocks of wt (32 and 128 rows).
TEST(LinearTest, RowsDoNotDependOnTheBatch) {
  if (!LinearRowsAreBatchInvariant()) {
    GTEST_SKIP() << "no AVX2 / FMA / F16C: oneDNN's sgemm picks its summation order by m";
  }
  for (const int64_t k : {83, 256}) {
    for (const int64_t n : {1, 7, 50, 130}) {
      const std::vector<float> wf = Transposed(RandomNormal(n * k, 41, 0.05f), n, k);
      const std::vector<Half> wh = ToHalf(wf);
      const std::vector<float> bias = RandomNormal(n, 42);
      for (const int64_t m : {2, 5, 9, 17, 25, 131}) {
        const std::vector<float> x = RandomNormal(m * k, 43);
        std::vector<float> batch16(m * n), batch32(m * n);
        ASSERT_TRUE(LinearF16(x, m, wh, n, k, bias, batch16).ok());
        ASSERT_TRUE(LinearF32(x, m, wf, n, k, bias, batch32).ok());
        for (int64_t i = 0; i < m; ++i) {
          const std::span<const float> row = std::span<const float>(x).subspan(i * k, k);
          std::vector<float> alone16(n), alone32(n);
          ASSERT_TRUE(LinearF16(row, 1, wh, n, k, bias, alone16).ok());
          ASSERT_TRUE(LinearF32(row, 1, wf, n, k, bias, alone32).ok());
          for (int64_t r = 0; r < n; ++r) {
            ASSERT_EQ(batch16[i * n + r], alone16[r])
                << "fp16 k " << k << " m " << m << " row " << i << " col " << r;
            ASSERT_EQ(batch32[i * n + r], alone32[r])
                << "fp32 k " << k << " m " << m << " row " << i << " col " << r;
          }
        }
      }
    }
  }
}

// Both paths return with VZEROUPPER's clean state (cpu_features.h: else the thread's SSE code,
// glibc's exp in the sampler, pays the AVX-SSE transition penalty; 5bdeae0's tiles did not).
TEST(LinearTest, LeavesTheUpperHalvesOfTheVectorRegistersClean) {
  if (!VectorUpperHalvesInUse().has_value())
    GTEST_SKIP() << "the vector state is not readable here (no XGETBV(1), or ASan)";
  const int64_t n = 100, k = 70;
  const std::vector<float> wf = RandomNormal(k * n, 71);
  const std::vector<Half> wh = ToHalf(wf);
  for (const int64_t m : {1, 5, 24, 130}) {
    const std::vector<float> x = RandomNormal(m * k, 72);
    std::vector<float> y(m * n);
    ASSERT_TRUE(LinearF16(x, m, wh, n, k, {}, y).ok());
    EXPECT_EQ(VectorUpperHalvesInUse(), false) << "LinearF16, m " << m;
    ASSERT_TRUE(LinearF32(x, m, wf, n, k, {}, y).ok());
    EXPECT_EQ(VectorUpperHalvesInUse(), false) << "LinearF32, m " << m;
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
  std::vector<float> wt(6);
  EXPECT_EQ(TransposeWeight(w, 2, 4, wt).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(TransposeWeight(w, 2, 3, std::span<float>(wt).first(5)).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(LinearTest, TransposeWeightMakesTheColumnsRows) {
  const std::vector<float> w = {1, 2, 3, 4, 5, 6};  // [2, 3]
  std::vector<float> wt(6);
  ASSERT_TRUE(TransposeWeight(w, 2, 3, wt).ok());
  EXPECT_EQ(wt, (std::vector<float>{1, 4, 2, 5, 3, 6}));
  // Past the 32 x 32 blocks on both sides.
  const int64_t n = 70, k = 33;
  const std::vector<Half> big = ToHalf(RandomNormal(n * k, 61));
  std::vector<Half> bigt(n * k);
  ASSERT_TRUE(TransposeWeight(big, n, k, bigt).ok());
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t j = 0; j < k; ++j) ASSERT_EQ(bigt[j * n + r].bits, big[r * k + j].bits);
  }
}

// Rows of W into a column range of a wider W^T (how the CPU load fills a matrix block by block):
// the other columns stay as they were; a range past the matrix is refused.
TEST(LinearTest, TransposeWeightRowsFillsItsColumnsOnly) {
  const std::vector<float> w = {1, 2, 3, 4, 5, 6};  // 2 rows of k = 3
  std::vector<float> wt(3 * 5, -1.0f);              // [3, 5]
  ASSERT_TRUE(TransposeWeightRows(w, 2, 3, 2, 5, wt).ok());
  EXPECT_EQ(wt, (std::vector<float>{-1, -1, 1, 4, -1,  //
                                    -1, -1, 2, 5, -1,  //
                                    -1, -1, 3, 6, -1}));
  EXPECT_EQ(TransposeWeightRows(w, 2, 3, 4, 5, wt).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(TransposeWeightRows(w, 2, 3, -1, 5, wt).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(TransposeWeightRows(w, 2, 3, 0, 5, std::span<float>(wt).first(14)).code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace llmint8::kernels
