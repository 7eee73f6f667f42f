// SoftmaxRowsCuda / LogSoftmaxRowsCuda / TokenLogProbCuda against the CPU reference
// (kernels/softmax.h SoftmaxRows) and an fp64 evaluation of the same formulas, on fp16 and fp32
// logits with masked (-inf) entries.
//
// Bounds. With c = x - max (exact up to one rounding, 2^-24 |c|), the GPU's exp(c) is within
// 2 ulp, and the sum of n terms (per-thread sums of n/512 terms, then a 512-way tree) within
// s = (n/512 + 16) 2^-24 relative. So p = exp(c) / sum is within
//   p * 2^-24 (|c| + n/512 + 32)     (exp: 2 ulp = 4 u; tree, division and margin) (vs fp64)
// and log_softmax = c - log(sum) within 2^-24 (|c| + 2 |log sum| + |out|) + s.
// The CPU reference (sequential fp32 sum: n 2^-24 relative) is compared with the sum of both
// bounds.
#include "kernels/cuda/softmax_cuda.h"

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cuda/cuda_test_util.h"
#include "kernels/cuda/device.h"
#include "kernels/int8_test_util.h"
#include "kernels/softmax.h"

namespace llmint8::kernels {
namespace {

using gpu::DeviceBuffer;
using gpu::Stream;
using gpu::testing::Download;
using gpu::testing::Upload;
using testing::RandomNormal;
using testing::ToFloat;
using testing::ToHalf;

constexpr float kInf = std::numeric_limits<float>::infinity();

struct Shape {
  int64_t m;
  int64_t n;
};

struct Reference {
  std::vector<double> prob, logprob;
  std::vector<double> max, log_sum;  // per row
};

Reference Evaluate(const std::vector<float>& x, int64_t m, int64_t n) {
  Reference r;
  r.prob.resize(m * n);
  r.logprob.resize(m * n);
  for (int64_t i = 0; i < m; ++i) {
    double mx = -kInf;
    for (int64_t j = 0; j < n; ++j) mx = std::max(mx, double{x[i * n + j]});
    double sum = 0;
    for (int64_t j = 0; j < n; ++j) sum += std::exp(x[i * n + j] - mx);
    const double ls = std::log(sum);
    for (int64_t j = 0; j < n; ++j) {
      r.prob[i * n + j] = std::exp(x[i * n + j] - mx) / sum;
      r.logprob[i * n + j] = (x[i * n + j] - mx) - ls;
    }
    r.max.push_back(mx);
    r.log_sum.push_back(ls);
  }
  return r;
}

// Logits of an LM head (std 3) with masked ids and ties at the max.
std::vector<float> MakeLogits(int64_t m, int64_t n, uint32_t seed) {
  std::vector<float> x = ToFloat(ToHalf(RandomNormal(m * n, seed, 3.0f)));
  for (int64_t i = 0; i < m; ++i) {
    if (n > 3) x[i * n + 1] = -kInf;
    if (n > 10) x[i * n + n - 1] = -kInf, x[i * n + 5] = 20.0f, x[i * n + 9] = 20.0f;
  }
  return x;
}

class SoftmaxCudaTest : public ::testing::TestWithParam<Shape> {
 protected:
  void SetUp() override { LLMINT8_SKIP_WITHOUT_CUDA_DEVICE(); }
};

TEST_P(SoftmaxCudaTest, MatchesReferenceForHalfAndFloatLogits) {
  const auto [m, n] = GetParam();
  const std::vector<float> x = MakeLogits(m, n, 51 + static_cast<uint32_t>(n));
  const std::vector<Half> xh = ToHalf(x);
  const Reference ref = Evaluate(x, m, n);
  std::vector<float> cpu = x;
  ASSERT_TRUE(SoftmaxRows(cpu, m, n).ok());
  std::vector<int32_t> targets(m);
  for (int64_t i = 0; i < m; ++i) targets[i] = static_cast<int32_t>((i * 7919) % n);

  const double u = std::ldexp(1.0, -24);
  const double sum_err = (static_cast<double>(n) / 512 + 16) * u;
  auto stream = Stream::Create();
  ASSERT_TRUE(stream.ok()) << stream.status();
  DeviceBuffer<Half> dxh = Upload(xh, *stream);
  DeviceBuffer<float> dxf = Upload(x, *stream);
  DeviceBuffer<int32_t> dt = Upload(targets, *stream);
  auto dy = DeviceBuffer<float>::Allocate(m * n);
  auto dlp = DeviceBuffer<float>::Allocate(m);
  ASSERT_TRUE(dy.ok() && dlp.ok());
  for (const bool half_in : {true, false}) {
    SCOPED_TRACE(half_in ? "fp16 logits" : "fp32 logits");
    ASSERT_TRUE((half_in ? SoftmaxRowsCuda(dxh.data(), m, n, dy->data(), stream->get())
                         : SoftmaxRowsCuda(dxf.data(), m, n, dy->data(), stream->get()))
                    .ok());
    const std::vector<float> p = Download(*dy, m * n, *stream);
    for (int64_t i = 0; i < m * n; ++i) {
      if (x[i] == -kInf) {
        ASSERT_EQ(p[i], 0.0f) << i;
        continue;
      }
      const double c = std::fabs(x[i] - ref.max[i / n]);
      const double bound = ref.prob[i] * u * (c + static_cast<double>(n) / 512 + 32);
      ASSERT_LE(std::fabs(p[i] - ref.prob[i]), bound) << "element " << i;
      const double cpu_bound = bound + ref.prob[i] * u * (c + static_cast<double>(n) + 8);
      ASSERT_LE(std::fabs(p[i] - cpu[i]), cpu_bound) << "element " << i << " vs CPU";
    }

    ASSERT_TRUE((half_in ? LogSoftmaxRowsCuda(dxh.data(), m, n, dy->data(), stream->get())
                         : LogSoftmaxRowsCuda(dxf.data(), m, n, dy->data(), stream->get()))
                    .ok());
    const std::vector<float> lp = Download(*dy, m * n, *stream);
    auto log_bound = [&](int64_t i) {
      const double c = std::fabs(x[i] - ref.max[i / n]);
      return u * (c + 2 * std::fabs(ref.log_sum[i / n]) + std::fabs(ref.logprob[i])) + sum_err;
    };
    for (int64_t i = 0; i < m * n; ++i) {
      if (x[i] == -kInf) {
        ASSERT_EQ(lp[i], -kInf) << i;
        continue;
      }
      ASSERT_LE(std::fabs(lp[i] - ref.logprob[i]), log_bound(i)) << "element " << i;
    }

    ASSERT_TRUE(
        (half_in ? TokenLogProbCuda(dxh.data(), m, n, dt.data(), dlp->data(), stream->get())
                 : TokenLogProbCuda(dxf.data(), m, n, dt.data(), dlp->data(), stream->get()))
            .ok());
    const std::vector<float> tlp = Download(*dlp, m, *stream);
    for (int64_t i = 0; i < m; ++i) {
      const int64_t e = i * n + targets[i];
      if (x[e] == -kInf) {
        EXPECT_EQ(tlp[i], -kInf) << "row " << i;
      } else {
        EXPECT_LE(std::fabs(tlp[i] - ref.logprob[e]), log_bound(e)) << "row " << i;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, SoftmaxCudaTest,
                         ::testing::Values(Shape{1, 1}, Shape{3, 17}, Shape{2, 1000},
                                           Shape{4, 50272}));

// What the CPU rejects becomes NaN on the GPU (no sync to report it): an all -inf row, a NaN
// logit, and a target outside the vocabulary. Other rows are unaffected.
class SoftmaxCudaBadRowsTest : public ::testing::Test {
 protected:
  void SetUp() override { LLMINT8_SKIP_WITHOUT_CUDA_DEVICE(); }
};

TEST_F(SoftmaxCudaBadRowsTest, GiveNaN) {
  const int64_t m = 3, n = 40;
  std::vector<float> x = RandomNormal(m * n, 52, 1.0f);
  for (int64_t j = 0; j < n; ++j) x[j] = -kInf;  // row 0
  x[n + 7] = std::numeric_limits<float>::quiet_NaN();  // row 1
  const std::vector<int32_t> targets = {0, 1, n};      // row 2: target out of range
  auto stream = Stream::Create();
  ASSERT_TRUE(stream.ok()) << stream.status();
  DeviceBuffer<float> dx = Upload(x, *stream);
  DeviceBuffer<int32_t> dt = Upload(targets, *stream);
  auto dy = DeviceBuffer<float>::Allocate(m * n);
  auto dlp = DeviceBuffer<float>::Allocate(m);
  ASSERT_TRUE(dy.ok() && dlp.ok());
  ASSERT_TRUE(SoftmaxRowsCuda(dx.data(), m, n, dy->data(), stream->get()).ok());
  const std::vector<float> p = Download(*dy, m * n, *stream);
  for (int64_t j = 0; j < 2 * n; ++j) EXPECT_TRUE(std::isnan(p[j])) << j;
  double row2 = 0;
  for (int64_t j = 2 * n; j < 3 * n; ++j) row2 += p[j];
  EXPECT_NEAR(row2, 1.0, 1e-5);
  ASSERT_TRUE(TokenLogProbCuda(dx.data(), m, n, dt.data(), dlp->data(), stream->get()).ok());
  const std::vector<float> lp = Download(*dlp, m, *stream);
  EXPECT_TRUE(std::isnan(lp[0]) && std::isnan(lp[1]) && std::isnan(lp[2]));
}

TEST(SoftmaxCudaErrorsTest, BadArgumentsAreInvalidArgument) {
  const Half* xh = reinterpret_cast<const Half*>(uintptr_t{256});
  const float* xf = reinterpret_cast<const float*>(uintptr_t{512});
  float* y = reinterpret_cast<float*>(uintptr_t{1024});
  const int32_t* t = reinterpret_cast<const int32_t*>(uintptr_t{2048});
  constexpr auto kBad = absl::StatusCode::kInvalidArgument;
  EXPECT_EQ(SoftmaxRowsCuda(xh, -1, 4, y, nullptr).code(), kBad);
  EXPECT_EQ(SoftmaxRowsCuda(xf, 2, 0, y, nullptr).code(), kBad);
  EXPECT_EQ(SoftmaxRowsCuda(xf, 2, 4, nullptr, nullptr).code(), kBad);
  EXPECT_EQ(LogSoftmaxRowsCuda(static_cast<const Half*>(nullptr), 2, 4, y, nullptr).code(),
            kBad);
  EXPECT_EQ(LogSoftmaxRowsCuda(xf, 2, 4, const_cast<float*>(xf), nullptr).code(), kBad);
  EXPECT_EQ(TokenLogProbCuda(xf, 2, 4, nullptr, y, nullptr).code(), kBad);
  EXPECT_EQ(TokenLogProbCuda(xh, int64_t{1} << 31, 4, t, y, nullptr).code(), kBad);
  EXPECT_TRUE(SoftmaxRowsCuda(xf, 0, 4, y, nullptr).ok());
}

}  // namespace
}  // namespace llmint8::kernels
