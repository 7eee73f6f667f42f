#include "kernels/int8_linear.h"

#include <cmath>
#include <limits>
#include <tuple>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/int8_gemm.h"
#include "kernels/int8_test_util.h"
#include "kernels/quantize_weight.h"

namespace llmint8::kernels {
namespace {

using ::llmint8::kernels::testing::MatMulNTDouble;
using ::llmint8::kernels::testing::RandomNormal;
using ::llmint8::kernels::testing::RelativeFrobeniusError;

constexpr double kEps = std::numeric_limits<float>::epsilon();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

// A float weight and its int8 quantization, owned together.
struct QuantizedWeight {
  std::vector<float> w;
  std::vector<int8_t> q;
  std::vector<float> absmax;
  int64_t n = 0, k = 0;
  Int8WeightView view() const { return {q, absmax, n, k}; }
};

QuantizedWeight MakeWeight(int64_t n, int64_t k, uint32_t seed) {
  QuantizedWeight qw{RandomNormal(n * k, seed, 1.0f / std::sqrt(static_cast<float>(k))),
                     std::vector<int8_t>(n * k), std::vector<float>(n), n, k};
  EXPECT_TRUE(QuantizeWeight(qw.w, n, k, qw.q, qw.absmax).ok());
  return qw;
}

// Activations N(0,1) with a few outlier columns scaled by `outlier_scale`.
std::vector<float> MakeActivations(int64_t m, int64_t k, std::span<const int64_t> outlier_cols,
                                   float outlier_scale, uint32_t seed) {
  std::vector<float> x = RandomNormal(m * k, seed);
  for (float& v : x) v = std::clamp(v, -5.5f, 5.5f);  // only the chosen columns are outliers
  for (int64_t c : outlier_cols) {
    for (int64_t i = 0; i < m; ++i) x[i * k + c] *= outlier_scale;
  }
  return x;
}

// Float rounding bound between two evaluations of the same LLM.int8() formula: each output is
// within (8 + |O|) * eps of its magnitude |C| sx sw / 127^2 + sum_O |x Wdq| + |bias| (a few
// roundings in the scale product, one per outlier term, the bias add, the final fp32 store).
std::vector<double> EpilogueBound(std::span<const float> x, int64_t m, const QuantizedWeight& qw,
                                  std::span<const float> bias, float threshold) {
  const int64_t n = qw.n, k = qw.k;
  QuantizedActivation act;
  EXPECT_TRUE(QuantizeActivation(x, m, k, threshold, &act).ok());
  std::vector<int32_t> acc(m * n);
  EXPECT_TRUE(Int8GemmReference(act.q, qw.q, m, n, k, acc).ok());
  const double units = 8.0 + static_cast<double>(act.outlier_cols.size());
  std::vector<double> bound(m * n);
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t r = 0; r < n; ++r) {
      double mag = std::fabs(static_cast<double>(acc[i * n + r])) * act.absmax[i] * qw.absmax[r] /
                   (127.0 * 127.0);
      const int64_t n_out = static_cast<int64_t>(act.outlier_cols.size());
      for (int64_t c = 0; c < n_out; ++c) {
        const int32_t col = act.outlier_cols[c];
        mag += std::fabs(double{act.outliers[i * n_out + c]} * qw.absmax[r] / 127.0 *
                         qw.q[r * k + col]);
      }
      if (!bias.empty()) mag += std::fabs(bias[r]);
      bound[i * n + r] = units * kEps * mag + 1e-30;
    }
  }
  return bound;
}

// The quantization bound against the exact product: |dW| <= sw/254 everywhere, |dX| <= sx/254 on
// non-outlier values (outlier values, |x| >= t, are exact in X), plus the float bound above.
std::vector<double> QuantizationBound(std::span<const float> x, int64_t m,
                                      const QuantizedWeight& qw, std::span<const float> bias,
                                      float threshold) {
  const int64_t n = qw.n, k = qw.k;
  QuantizedActivation act;
  EXPECT_TRUE(QuantizeActivation(x, m, k, threshold, &act).ok());
  const auto outlier = [threshold](float v) {
    return threshold > 0 && !(std::fabs(v) < threshold);
  };
  std::vector<double> bound = EpilogueBound(x, m, qw, bias, threshold);
  const double slack = 1.0 + 1e-4;  // the fp32 quantizer's few-ulp excess over half a step
  for (int64_t i = 0; i < m; ++i) {
    const double dx = act.absmax[i] / 254.0 * slack;
    for (int64_t r = 0; r < n; ++r) {
      const double dw = qw.absmax[r] / 254.0 * slack;
      double e = 0.0;
      for (int64_t j = 0; j < k; ++j) {
        e += std::fabs(x[i * k + j]) * dw;
        if (!outlier(x[i * k + j])) e += dx * std::fabs(qw.w[r * k + j]) + dx * dw;
      }
      bound[i * n + r] += e;
    }
  }
  return bound;
}

class Int8LinearShapeTest
    : public ::testing::TestWithParam<std::tuple<int64_t, int64_t, int64_t, float>> {};

TEST_P(Int8LinearShapeTest, FastPathMatchesReferenceAndReferenceMatchesExact) {
  const auto [m, n, k, threshold] = GetParam();
  const QuantizedWeight qw = MakeWeight(n, k, 41);
  const std::vector<int64_t> cols = {0, k / 2, k - 1};
  const std::vector<float> x = MakeActivations(m, k, cols, 20.0f, 42);
  const std::vector<float> bias = RandomNormal(n, 43);
  for (std::span<const float> b : {std::span<const float>(bias), std::span<const float>()}) {
    std::vector<float> want(m * n), got(m * n, kNaN);
    ASSERT_TRUE(Int8LinearReference(x, m, qw.view(), b, threshold, want).ok());
    Int8LinearScratch scratch;
    ASSERT_TRUE(Int8Linear(x, m, qw.view(), b, threshold, got, &scratch).ok());
    // The int32 part is bit-identical to the reference GEMM.
    std::vector<int32_t> acc(m * n);
    ASSERT_TRUE(Int8GemmReference(scratch.act.q, qw.q, m, n, k, acc).ok());
    ASSERT_EQ(scratch.acc, acc);
    ASSERT_EQ(scratch.act.outlier_cols.size(), threshold > 0 ? cols.size() : 0u);

    const std::vector<double> fbound = EpilogueBound(x, m, qw, b, threshold);
    const std::vector<double> qbound = QuantizationBound(x, m, qw, b, threshold);
    const std::vector<double> exact = MatMulNTDouble(x, qw.w, b, m, n, k);
    for (int64_t e = 0; e < m * n; ++e) {
      ASSERT_LE(std::fabs(double{got[e]} - want[e]), fbound[e]) << "element " << e;
      ASSERT_LE(std::fabs(double{want[e]} - exact[e]), qbound[e]) << "element " << e;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, Int8LinearShapeTest,
    ::testing::Combine(::testing::Values(1, 3, 17), ::testing::Values(1, 50, 130),
                       ::testing::Values(33, 257), ::testing::Values(6.0f, 0.0f)));

TEST(Int8LinearTest, ScratchIsReusableAcrossShapes) {
  Int8LinearScratch scratch;
  for (auto [m, n, k] :
       {std::tuple<int64_t, int64_t, int64_t>{64, 96, 200}, {1, 7, 40}, {5, 96, 200}}) {
    const QuantizedWeight qw = MakeWeight(n, k, 51);
    const std::vector<int64_t> cols = {3};
    const std::vector<float> x = MakeActivations(m, k, cols, 10.0f, 52);
    std::vector<float> want(m * n), got(m * n);
    ASSERT_TRUE(Int8LinearReference(x, m, qw.view(), {}, 6.0f, want).ok());
    ASSERT_TRUE(Int8Linear(x, m, qw.view(), {}, 6.0f, got, &scratch).ok());
    const std::vector<double> bound = EpilogueBound(x, m, qw, {}, 6.0f);
    for (int64_t e = 0; e < m * n; ++e) ASSERT_LE(std::fabs(double{got[e]} - want[e]), bound[e]);
  }
}

// The paper's effect (LLM.int8(), Dettmers et al. 2022): a handful of large-magnitude feature
// columns ruin vector-wise int8 quantization unless they are split off into a float product.
TEST(Int8LinearTest, OutlierDecompositionKeepsErrorSmall) {
  const int64_t m = 64, k = 4096, n = 256;
  const std::vector<int64_t> cols = {7, 100, 512, 1000, 2047, 3000, 3333, 4095};
  const std::vector<float> x = MakeActivations(m, k, cols, 30.0f, 61);
  const QuantizedWeight qw = MakeWeight(n, k, 62);
  const std::vector<double> exact = MatMulNTDouble(x, qw.w, {}, m, n, k);
  Int8LinearScratch scratch;
  std::vector<float> y(m * n);
  ASSERT_TRUE(Int8Linear(x, m, qw.view(), {}, 6.0f, y, &scratch).ok());
  ASSERT_EQ(scratch.act.outlier_cols, std::vector<int32_t>(cols.begin(), cols.end()));
  const double err_decomposed = RelativeFrobeniusError<float>(y, exact);
  ASSERT_TRUE(Int8Linear(x, m, qw.view(), {}, 0.0f, y, &scratch).ok());
  const double err_plain = RelativeFrobeniusError<float>(y, exact);
  RecordProperty("rel_err_threshold_6", std::to_string(err_decomposed));
  RecordProperty("rel_err_threshold_0", std::to_string(err_plain));
  EXPECT_LE(err_decomposed, 0.02);
  EXPECT_GE(err_plain, 5.0 * err_decomposed);
}

TEST(Int8LinearTest, NonFiniteActivationsPoisonOnlyTheirRowsWhenDecomposing) {
  const int64_t m = 4, n = 6, k = 16;
  QuantizedWeight qw = MakeWeight(n, k, 71);
  // Weight rows 2 and 4 have a zero in column 9: Inf * 0 is NaN there.
  qw.q[2 * k + 9] = 0;
  qw.q[4 * k + 9] = 0;
  std::vector<float> x = MakeActivations(m, k, {}, 1.0f, 72);
  x[1 * k + 3] = kNaN;   // row 1: NaN -> whole row NaN
  x[2 * k + 9] = kInf;   // row 2: +Inf -> +-Inf, NaN where Wq[r, 9] == 0
  for (auto* fn : {+[](std::span<const float> x, int64_t m, const Int8WeightView& w,
                       std::span<float> y) {
                     Int8LinearScratch s;
                     return Int8Linear(x, m, w, {}, 6.0f, y, &s);
                   },
                   +[](std::span<const float> x, int64_t m, const Int8WeightView& w,
                       std::span<float> y) { return Int8LinearReference(x, m, w, {}, 6.0f, y); }}) {
    std::vector<float> y(m * n);
    ASSERT_TRUE(fn(x, m, qw.view(), y).ok());
    for (int64_t i = 0; i < m; ++i) {
      for (int64_t r = 0; r < n; ++r) {
        const float v = y[i * n + r];
        if (i == 1 || (i == 2 && qw.q[r * k + 9] == 0)) {
          EXPECT_TRUE(std::isnan(v)) << i << "," << r << " = " << v;
        } else if (i == 2) {
          EXPECT_EQ(v, qw.q[r * k + 9] > 0 ? kInf : -kInf) << i << "," << r;
        } else {
          EXPECT_TRUE(std::isfinite(v)) << i << "," << r << " = " << v;
        }
      }
    }
  }
}

TEST(Int8LinearTest, NonFiniteActivationsMakeWholeRowsNaNWithoutDecomposition) {
  const int64_t m = 3, n = 5, k = 8;
  const QuantizedWeight qw = MakeWeight(n, k, 81);
  std::vector<float> x = MakeActivations(m, k, {}, 1.0f, 82);
  x[0 * k + 2] = -kInf;
  x[2 * k + 7] = kNaN;
  std::vector<float> y(m * n), yr(m * n);
  Int8LinearScratch s;
  ASSERT_TRUE(Int8Linear(x, m, qw.view(), {}, 0.0f, y, &s).ok());
  ASSERT_TRUE(Int8LinearReference(x, m, qw.view(), {}, 0.0f, yr).ok());
  for (int64_t r = 0; r < n; ++r) {
    EXPECT_TRUE(std::isnan(y[0 * n + r]) && std::isnan(yr[0 * n + r]));
    EXPECT_TRUE(std::isfinite(y[1 * n + r]) && std::isfinite(yr[1 * n + r]));
    EXPECT_TRUE(std::isnan(y[2 * n + r]) && std::isnan(yr[2 * n + r]));
  }
}

TEST(Int8LinearTest, RejectsBadInput) {
  const int64_t m = 2, n = 3, k = 4;
  const QuantizedWeight qw = MakeWeight(n, k, 91);
  const std::vector<float> x(m * k, 1.0f), bias(n);
  std::vector<float> y(m * n);
  Int8LinearScratch s;
  auto both = [&](std::span<const float> xs, int64_t mm, const Int8WeightView& w,
                  std::span<const float> b, float t, std::span<float> ys) {
    const absl::Status fast = Int8Linear(xs, mm, w, b, t, ys, &s);
    const absl::Status ref = Int8LinearReference(xs, mm, w, b, t, ys);
    EXPECT_EQ(fast.code(), ref.code()) << fast << " vs " << ref;
    return fast.code();
  };
  const Int8WeightView w = qw.view();
  EXPECT_EQ(both(x, m, w, bias, 6.0f, y), absl::StatusCode::kOk);
  constexpr auto kBad = absl::StatusCode::kInvalidArgument;
  EXPECT_EQ(both(x, 3, w, bias, 6.0f, y), kBad);                                   // x size
  EXPECT_EQ(both({}, 0, w, bias, 6.0f, std::span<float>()), kBad);                 // m == 0
  EXPECT_EQ(both({}, m, {qw.q, qw.absmax, n, 0}, bias, 6.0f, y), kBad);            // k == 0
  EXPECT_EQ(both(x, m, w, bias, -1.0f, y), kBad);                                  // threshold
  EXPECT_EQ(both(x, m, w, bias, kNaN, y), kBad);
  EXPECT_EQ(both(x, m, w, std::span<const float>(bias).first(2), 6.0f, y), kBad);  // bias
  EXPECT_EQ(both(x, m, w, bias, 6.0f, std::span<float>(y).first(5)), kBad);        // y
  EXPECT_EQ(both(x, m, {qw.q, std::span<const float>(qw.absmax).first(2), n, k}, bias, 6.0f, y),
            kBad);                                                                 // scales
  EXPECT_EQ(both(x, m, {std::span<const int8_t>(qw.q).first(11), qw.absmax, n, k}, bias, 6.0f, y),
            kBad);                                                                 // weight
  EXPECT_EQ(Int8Linear(x, m, w, bias, 6.0f, y, nullptr).code(), kBad);
}

}  // namespace
}  // namespace llmint8::kernels
