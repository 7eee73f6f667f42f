#include "kernels/quantize_activation.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kernels/cpu_features.h"
#include "kernels/int8_test_util.h"

namespace llmint8::kernels {
namespace {

using ::llmint8::kernels::testing::RandomNormal;

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();
// Error bound in int8 steps (absmax / 127): 0.5 exactly, plus a few ulps of 127 from fp32.
constexpr double kHalfStepWithRounding = 0.5 + 4 * 127 * std::numeric_limits<float>::epsilon();

TEST(QuantizeActivationTest, FindsOutlierColumnsAndBoundsTheRest) {
  const int64_t m = 17, k = 97;
  std::vector<float> x = RandomNormal(m * k, 3);
  for (float& v : x) v = std::clamp(v, -5.9f, 5.9f);  // no accidental outliers
  // Columns 4 and 60 get one outlier each (one row only); column 90 reaches exactly the threshold.
  x[2 * k + 4] = 9.0f;
  x[16 * k + 60] = -7.5f;
  x[0 * k + 90] = 6.0f;
  const auto is_outlier = [&](int64_t i, int64_t j) {
    return (i == 2 && j == 4) || (i == 16 && j == 60) || (i == 0 && j == 90);
  };
  QuantizedActivation qa;
  ASSERT_TRUE(QuantizeActivation(x, m, k, 6.0f, &qa).ok());
  ASSERT_EQ(qa.outlier_cols, (std::vector<int32_t>{4, 60, 90}));
  ASSERT_EQ(qa.outliers.size(), static_cast<size_t>(m * 3));
  const int64_t cols[3] = {4, 60, 90};
  for (int64_t i = 0; i < m; ++i) {
    // The row's own values below the threshold set its scale, O's columns included.
    double amax = 0.0;
    for (int64_t j = 0; j < k; ++j) {
      if (!is_outlier(i, j)) amax = std::max(amax, std::fabs(double{x[i * k + j]}));
    }
    ASSERT_EQ(qa.absmax[i], static_cast<float>(amax)) << "row " << i;
    for (int c = 0; c < 3; ++c) {
      EXPECT_EQ(qa.outliers[i * 3 + c], is_outlier(i, cols[c]) ? x[i * k + cols[c]] : 0.0f)
          << "row " << i << " outlier column " << cols[c];
    }
    const double step = amax / 127.0;
    for (int64_t j = 0; j < k; ++j) {
      const int8_t q = qa.q[i * k + j];
      if (is_outlier(i, j)) {
        EXPECT_EQ(q, 0) << "outlier value " << i << ", " << j << " must be zeroed";
        continue;
      }
      ASSERT_LE(std::fabs(step * q - x[i * k + j]), kHalfStepWithRounding * step)
          << "row " << i << " col " << j;
    }
  }
}

// A token's quantization is a function of its own row: the same row gives the same q, absmax
// and outlier values alone and in a batch whose other rows add outlier columns.
TEST(QuantizeActivationTest, RowResultDoesNotDependOnTheBatch) {
  const int64_t k = 64;
  std::vector<float> row = RandomNormal(k, 11);
  row[9] = 8.0f;
  std::vector<float> batch = RandomNormal(3 * k, 12);
  batch[0 * k + 20] = -30.0f;  // outlier columns only the other rows have
  batch[2 * k + 41] = 7.0f;
  std::copy(row.begin(), row.end(), batch.begin() + k);  // row 1

  QuantizedActivation alone, in_batch;
  ASSERT_TRUE(QuantizeActivation(row, 1, k, 6.0f, &alone).ok());
  ASSERT_TRUE(QuantizeActivation(batch, 3, k, 6.0f, &in_batch).ok());
  ASSERT_EQ(alone.outlier_cols, std::vector<int32_t>{9});
  ASSERT_EQ(in_batch.outlier_cols, (std::vector<int32_t>{9, 20, 41}));
  EXPECT_EQ(in_batch.absmax[1], alone.absmax[0]);
  for (int64_t j = 0; j < k; ++j) EXPECT_EQ(in_batch.q[k + j], alone.q[j]) << "col " << j;
  EXPECT_EQ(in_batch.outliers[1 * 3 + 0], 8.0f);
  EXPECT_EQ(in_batch.outliers[1 * 3 + 1], 0.0f);
  EXPECT_EQ(in_batch.outliers[1 * 3 + 2], 0.0f);
}

TEST(QuantizeActivationTest, ThresholdZeroDisablesDecomposition) {
  const int64_t m = 3, k = 40;
  std::vector<float> x = RandomNormal(m * k, 4);
  x[7] = 50.0f;
  QuantizedActivation qa;
  ASSERT_TRUE(QuantizeActivation(x, m, k, 0.0f, &qa).ok());
  EXPECT_TRUE(qa.outlier_cols.empty());
  EXPECT_TRUE(qa.outliers.empty());
  EXPECT_EQ(qa.absmax[0], 50.0f);
  EXPECT_EQ(qa.q[7], 127);
  // Reuse with a different shape: buffers are resized to the new shape.
  ASSERT_TRUE(QuantizeActivation(std::span<const float>(x).first(k), 1, k, 6.0f, &qa).ok());
  EXPECT_EQ(qa.m, 1);
  EXPECT_EQ(qa.q.size(), static_cast<size_t>(k));
  EXPECT_EQ(qa.outlier_cols, std::vector<int32_t>{7});
}

TEST(QuantizeActivationTest, RoundsHalfAwayFromZeroAndClamps) {
  // absmax 127 -> scale exactly 1.
  const std::vector<float> x = {127.0f, 2.5f, -2.5f, 0.5f, -0.5f, -126.5f, 1.4999999f, 0.0f};
  QuantizedActivation qa;
  ASSERT_TRUE(QuantizeActivation(x, 1, 8, 0.0f, &qa).ok());
  EXPECT_EQ(qa.q, (std::vector<int8_t>{127, 3, -3, 1, -1, -127, 1, 0}));
  // A zero row quantizes to zeros with absmax 0.
  const std::vector<float> zeros(5, 0.0f);
  ASSERT_TRUE(QuantizeActivation(zeros, 1, 5, 6.0f, &qa).ok());
  EXPECT_EQ(qa.absmax[0], 0.0f);
  EXPECT_EQ(qa.q, std::vector<int8_t>(5, 0));
  // The element math itself: clamped at +-127, NaN to 0 (the GPU's past-cap columns).
  EXPECT_EQ(QuantizeToInt8(1000.0f, 1.0f), 127);
  EXPECT_EQ(QuantizeToInt8(-std::numeric_limits<float>::infinity(), 1.0f), -127);
  EXPECT_EQ(QuantizeToInt8(std::numeric_limits<float>::quiet_NaN(), 1.0f), 0);
  EXPECT_EQ(QuantizeToInt8(1.0f, std::numeric_limits<float>::quiet_NaN()), 0);
}

TEST(QuantizeActivationTest, NonFiniteColumnsAreOutliersWhenThresholdPositive) {
  // Row 1 holds NaN in column 2 and -Inf in column 5; everything else is small.
  const int64_t m = 3, k = 6;
  std::vector<float> x = RandomNormal(m * k, 5, 0.5f);
  x[1 * k + 2] = kNaN;
  x[1 * k + 5] = -kInf;
  QuantizedActivation qa;
  ASSERT_TRUE(QuantizeActivation(x, m, k, 6.0f, &qa).ok());
  ASSERT_EQ(qa.outlier_cols, (std::vector<int32_t>{2, 5}));
  for (int64_t i = 0; i < m; ++i) {
    EXPECT_TRUE(std::isfinite(qa.absmax[i])) << "row " << i;
    EXPECT_GT(qa.absmax[i], 0.0f);
  }
  EXPECT_TRUE(std::isnan(qa.outliers[1 * 2 + 0]));
  EXPECT_EQ(qa.outliers[1 * 2 + 1], -kInf);
  EXPECT_EQ(qa.q[1 * k + 2], 0);
  EXPECT_EQ(qa.q[1 * k + 5], 0);
}

TEST(QuantizeActivationTest, NonFiniteRowHasNaNScaleWhenThresholdZero) {
  const int64_t m = 3, k = 4;
  std::vector<float> x = RandomNormal(m * k, 6);
  x[0 * k + 1] = kInf;
  x[2 * k + 3] = kNaN;
  QuantizedActivation qa;
  ASSERT_TRUE(QuantizeActivation(x, m, k, 0.0f, &qa).ok());
  EXPECT_TRUE(std::isnan(qa.absmax[0]));
  EXPECT_TRUE(std::isfinite(qa.absmax[1]));
  EXPECT_TRUE(std::isnan(qa.absmax[2]));
  for (int64_t j = 0; j < k; ++j) {
    EXPECT_EQ(qa.q[0 * k + j], 0);
    EXPECT_EQ(qa.q[2 * k + j], 0);
  }
}

TEST(QuantizeActivationTest, RejectsBadInput) {
  std::vector<float> x(12, 1.0f);
  QuantizedActivation qa;
  EXPECT_EQ(QuantizeActivation(x, 3, 5, 6.0f, &qa).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(QuantizeActivation(x, 0, 12, 6.0f, &qa).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(QuantizeActivation(x, 12, 0, 6.0f, &qa).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(QuantizeActivation({}, 0, 0, 6.0f, &qa).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(QuantizeActivation(x, 3, 4, -1.0f, &qa).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(QuantizeActivation(x, 3, 4, kNaN, &qa).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(QuantizeActivation(x, 3, 4, 6.0f, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
}

uint32_t Bits(float v) {
  uint32_t b;
  std::memcpy(&b, &v, sizeof(b));
  return b;
}

// The fast path (AVX2 where the CPU has it) gives the reference's bits: the same outlier
// columns, row scales (NaN rows too), int8 values and outlier values, on widths around the
// vector length, ties at .5, values at and past the threshold, non-finite values, zero rows
// and a subnormal row scale.
TEST(QuantizeActivationTest, FastPathEqualsTheReferenceBitForBit) {
  if (!Cpu().avx2) {
    GTEST_SKIP() << "this CPU has no AVX2: the fast path is the reference itself";
  }
  const int64_t m = 9;
  for (const int64_t k : {1, 7, 8, 9, 15, 16, 17, 31, 33, 64, 100, 256, 1027}) {
    std::vector<float> x = RandomNormal(m * k, 100 + static_cast<uint32_t>(k), 2.5f);
    // Row 1: absmax 127 so the scale is 1 and these values are exact ties.
    x[1 * k] = 127.0f;
    for (int64_t j = 1; j < k; ++j) x[1 * k + j] = static_cast<float>(j % 41) - 20.5f;
    std::fill(x.begin() + 2 * k, x.begin() + 3 * k, 0.0f);  // row 2: zeros
    x[3 * k + (k - 1)] = 6.0f;                              // row 3: at the threshold
    x[4 * k + k / 2] = kNaN;                                // row 4: NaN
    x[5 * k] = -kInf;                                       // row 5: -Inf
    for (int64_t j = 0; j < k; ++j) x[6 * k + j] = 1e-40f * static_cast<float>(j % 3);  // subnormal
    x[7 * k + k / 3] = -31.0f;  // row 7: a large outlier
    // 1000: the masked (t > 0) path with every value but the non-finite ones an inlier, so
    // row 1's ties are quantized there too.
    for (const float t : {0.0f, 6.0f, 0.5f, 1000.0f}) {
      QuantizedActivation fast, ref;
      ASSERT_TRUE(QuantizeActivation(x, m, k, t, &fast).ok());
      ASSERT_TRUE(QuantizeActivationReference(x, m, k, t, &ref).ok());
      const std::string where = absl::StrCat("k=", k, " t=", t);
      EXPECT_EQ(fast.outlier_cols, ref.outlier_cols) << where;
      EXPECT_EQ(fast.q, ref.q) << where;
      ASSERT_EQ(fast.absmax.size(), ref.absmax.size());
      for (int64_t i = 0; i < m; ++i) {
        EXPECT_EQ(Bits(fast.absmax[i]), Bits(ref.absmax[i])) << where << " row " << i;
      }
      ASSERT_EQ(fast.outliers.size(), ref.outliers.size()) << where;
      for (size_t i = 0; i < ref.outliers.size(); ++i) {
        EXPECT_EQ(Bits(fast.outliers[i]), Bits(ref.outliers[i])) << where << " outlier " << i;
      }
    }
  }
}

}  // namespace
}  // namespace llmint8::kernels
