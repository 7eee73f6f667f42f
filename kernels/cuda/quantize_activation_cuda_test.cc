// QuantizeActivationCuda against the CPU reference (kernels/quantize_activation.h).
// Same fp16 inputs, same IEEE fp32 operations (127.0f / absmax, x * scale, round half away,
// clamp), max is order-independent: q, absmax, the outlier list and the gathered outlier values
// must be identical, not merely close. No rounding tie can resolve differently because both
// sides round the same fp32 product.
#include "kernels/cuda/quantize_activation_cuda.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cuda/cuda_test_util.h"
#include "kernels/cuda/device.h"
#include "kernels/int8_test_util.h"
#include "kernels/quantize_activation.h"

namespace llmint8::kernels {
namespace {

using gpu::DeviceBuffer;
using gpu::Stream;
using gpu::testing::Download;
using gpu::testing::Upload;

bool SameBits(float a, float b) {
  uint32_t x, y;
  std::memcpy(&x, &a, 4);
  std::memcpy(&y, &b, 4);
  return x == y;
}

// fp16-representable activations: N(0, 1) clipped to |x| < 4, with `outlier_cols` columns
// holding a value of magnitude 8..40 in a few random rows.
std::vector<Half> MakeActivations(int64_t m, int64_t k, const std::vector<int64_t>& outlier_cols,
                                  uint32_t seed) {
  std::vector<float> x = testing::RandomNormal(m * k, seed);
  for (float& v : x) v = std::clamp(v, -3.9f, 3.9f);
  std::mt19937 gen(seed + 1);
  std::uniform_int_distribution<int64_t> row(0, m - 1);
  std::uniform_real_distribution<float> mag(8.0f, 40.0f);
  for (int64_t c : outlier_cols) {
    for (int t = 0; t < 3; ++t) x[row(gen) * k + c] = (t % 2 ? -1.0f : 1.0f) * mag(gen);
  }
  return testing::ToHalf(x);
}

void ExpectMatchesCpu(const std::vector<Half>& xh, int64_t m, int64_t k, float threshold) {
  const std::vector<float> xf = testing::ToFloat(xh);
  QuantizedActivation want;
  ASSERT_TRUE(QuantizeActivation(xf, m, k, threshold, &want).ok());

  auto stream = Stream::Create();
  ASSERT_TRUE(stream.ok()) << stream.status();
  auto act = QuantizedActivationCuda::Create(m, k);
  ASSERT_TRUE(act.ok()) << act.status();
  ASSERT_LE(want.outlier_cols.size(), static_cast<size_t>(act->max_outliers));
  DeviceBuffer<Half> x = Upload(xh, *stream);
  const absl::Status s = QuantizeActivationCuda(x.data(), m, k, threshold, &*act, stream->get());
  ASSERT_TRUE(s.ok()) << s;

  auto counts = ReadOutlierCounts(*act, stream->get());
  ASSERT_TRUE(counts.ok()) << counts.status();
  const int64_t n_out = static_cast<int64_t>(want.outlier_cols.size());
  ASSERT_EQ(counts->found, n_out);
  ASSERT_EQ(counts->kept, n_out);
  if (n_out > 0) {
    EXPECT_EQ(Download(act->outlier_cols, n_out, *stream), want.outlier_cols);
  }

  EXPECT_EQ(Download(act->q, m * k, *stream), want.q);
  const std::vector<float> absmax = Download(act->absmax, m, *stream);
  for (int64_t i = 0; i < m; ++i) {
    EXPECT_TRUE(SameBits(absmax[i], want.absmax[i]))
        << "row " << i << ": " << absmax[i] << " vs " << want.absmax[i];
  }
  const std::vector<Half> outl = Download(act->outliers, m * act->max_outliers, *stream);
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t c = 0; c < n_out; ++c) {
      ASSERT_TRUE(
          SameBits(HalfToFloat(outl[i * act->max_outliers + c]), want.outliers[i * n_out + c]))
          << "row " << i << " outlier " << c;
    }
  }
}

struct Case {
  int64_t m;
  int64_t k;
};

class QuantizeActivationCudaTest : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override { LLMINT8_SKIP_WITHOUT_CUDA_DEVICE(); }
};

TEST_P(QuantizeActivationCudaTest, WithOutliersMatchesCpu) {
  const auto [m, k] = GetParam();
  const std::vector<int64_t> cols = {0, k / 3, k / 2 + 1, k - 1};
  ExpectMatchesCpu(MakeActivations(m, k, cols, 11), m, k, 6.0f);
}

TEST_P(QuantizeActivationCudaTest, ThresholdZeroMatchesCpu) {
  const auto [m, k] = GetParam();
  ExpectMatchesCpu(MakeActivations(m, k, {1, k - 2}, 12), m, k, 0.0f);
}

TEST_P(QuantizeActivationCudaTest, NoOutliersMatchesCpu) {
  const auto [m, k] = GetParam();
  ExpectMatchesCpu(MakeActivations(m, k, {}, 13), m, k, 6.0f);
}

INSTANTIATE_TEST_SUITE_P(Shapes, QuantizeActivationCudaTest,
                         ::testing::Values(Case{1, 37}, Case{3, 100}, Case{17, 1000},
                                           Case{2048, 100}, Case{1, 4096}, Case{17, 2051},
                                           // Units (32 columns x 64 rows) beyond what the
                                           // cooperative grid holds (~5 blocks of 256 per SM
                                           // on 132 SMs), so blocks own several; m > 64 splits
                                           // columns over row chunks (2048 and 65: a partial
                                           // one; 130 x 40000: chunks of a tile in 2 blocks).
                                           Case{2, 40000}, Case{32, 12288}, Case{4, 131072},
                                           Case{65, 2051}, Case{130, 40000}));

class QuantizeActivationCudaEdgeTest : public ::testing::Test {
 protected:
  void SetUp() override { LLMINT8_SKIP_WITHOUT_CUDA_DEVICE(); }
};

TEST_F(QuantizeActivationCudaEdgeTest, NonFiniteValuesFollowTheCpuContract) {
  const int64_t m = 5, k = 70;
  std::vector<Half> xh = MakeActivations(m, k, {}, 21);
  xh[1 * k + 3] = FloatToHalf(std::numeric_limits<float>::quiet_NaN());
  xh[2 * k + 9] = FloatToHalf(std::numeric_limits<float>::infinity());
  xh[4 * k + 0] = FloatToHalf(0.0f);
  for (int64_t j = 0; j < k; ++j) xh[3 * k + j] = FloatToHalf(0.0f);  // an all-zero row
  ExpectMatchesCpu(xh, m, k, 6.0f);  // NaN/Inf columns become outliers
  ExpectMatchesCpu(xh, m, k, 0.0f);  // rows 1 and 2: absmax NaN, q all zero
}

TEST_F(QuantizeActivationCudaEdgeTest, CapKeepsTheFirstColumnsAndCountsAll) {
  const int64_t m = 4, k = 300, cap = 8;
  std::vector<int64_t> cols;
  for (int64_t c = 5; c < k; c += 20) cols.push_back(c);  // 15 outlier columns
  const std::vector<Half> xh = MakeActivations(m, k, cols, 31);
  QuantizedActivation want;
  ASSERT_TRUE(QuantizeActivation(testing::ToFloat(xh), m, k, 6.0f, &want).ok());
  ASSERT_EQ(want.outlier_cols.size(), cols.size());

  auto stream = Stream::Create();
  ASSERT_TRUE(stream.ok());
  auto act = QuantizedActivationCuda::Create(m, k, cap);
  ASSERT_TRUE(act.ok());
  DeviceBuffer<Half> x = Upload(xh, *stream);
  ASSERT_TRUE(QuantizeActivationCuda(x.data(), m, k, 6.0f, &*act, stream->get()).ok());
  auto counts = ReadOutlierCounts(*act, stream->get());
  ASSERT_TRUE(counts.ok());
  EXPECT_EQ(counts->kept, cap);
  EXPECT_EQ(counts->found, static_cast<int32_t>(cols.size()));
  const std::vector<int32_t> kept = Download(act->outlier_cols, cap, *stream);
  EXPECT_EQ(kept, std::vector<int32_t>(want.outlier_cols.begin(), want.outlier_cols.begin() + cap));
  // Every value of an ordinary or a kept column is the CPU's (outliers 0; the row scale
  // excludes every outlier value, as the CPU's does); in the columns past the cap the outliers
  // are quantized with that scale, so they saturate, and the other values are the CPU's.
  const std::vector<int8_t> q = Download(act->q, m * k, *stream);
  const std::vector<float> xf = testing::ToFloat(xh);
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < k; ++j) {
      const auto it = std::find(want.outlier_cols.begin(), want.outlier_cols.end(), j);
      const bool past_cap = it - want.outlier_cols.begin() >= cap && it != want.outlier_cols.end();
      const int8_t expected =
          past_cap ? QuantizeToInt8(xf[i * k + j], 127.0f / want.absmax[i]) : want.q[i * k + j];
      ASSERT_EQ(q[i * k + j], expected) << "row " << i << " column " << j;
    }
  }
}

TEST_F(QuantizeActivationCudaEdgeTest, BadInputIsInvalidArgument) {
  auto stream = Stream::Create();
  ASSERT_TRUE(stream.ok());
  auto act = QuantizedActivationCuda::Create(4, 16);
  ASSERT_TRUE(act.ok());
  auto x = DeviceBuffer<Half>::Allocate(64);
  ASSERT_TRUE(x.ok());
  const auto code = [&](const Half* xp, int64_t m, int64_t k, float t) {
    return QuantizeActivationCuda(xp, m, k, t, &*act, stream->get()).code();
  };
  EXPECT_EQ(code(x->data(), 0, 16, 6.0f), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code(x->data(), 5, 16, 6.0f), absl::StatusCode::kInvalidArgument);  // > max_m
  EXPECT_EQ(code(x->data(), 4, 15, 6.0f), absl::StatusCode::kInvalidArgument);  // k mismatch
  EXPECT_EQ(code(x->data(), 4, 16, -1.0f), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code(x->data(), 4, 16, std::nanf("")), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code(nullptr, 4, 16, 6.0f), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(QuantizedActivationCuda::Create(0, 16).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(QuantizedActivationCuda::Create(4, 16, 0).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace llmint8::kernels
