// LayerNormCuda / AddResidualLayerNormCuda against the CPU reference (kernels/layer_norm.h) on
// the same fp16 inputs.
//
// Bound (per element). The GPU computes mean and variance in fp32 (per-thread sums of n/256
// terms, then a 256-way tree): relative error e = (n/256 + 16) * 2^-24 on sums of |x|. That
// moves the normalized value z = (x - mean) * inv by at most 4e * (mean|x| * inv + |z|); times
// |gamma|, plus a few roundings of beta. The result is then rounded to fp16: half an ulp
// (2^-11 relative), and one more when the fp32 value sits next to a rounding boundary that the
// CPU's value is on the other side of: 2^-10 |want| + 2^-24 (subnormal spacing).
// The residual sum fp16((r + d) + b) is the same two fp32 adds on both sides: exact.
#include "kernels/cuda/layer_norm_cuda.h"

#include <cmath>
#include <cstdint>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cuda/cuda_test_util.h"
#include "kernels/cuda/device.h"
#include "kernels/int8_test_util.h"
#include "kernels/layer_norm.h"

namespace llmint8::kernels {
namespace {

using gpu::DeviceBuffer;
using gpu::Stream;
using gpu::testing::Download;
using gpu::testing::Upload;
using testing::RandomNormal;
using testing::ToFloat;
using testing::ToHalf;

struct Shape {
  int64_t m;
  int64_t n;
  bool affine;
};

// Per-element bound of the GPU result around the CPU reference `want` computed from `x` (the
// fp16 input as floats).
std::vector<double> Bounds(const std::vector<float>& x, const std::vector<float>& want,
                           int64_t m, int64_t n, const std::vector<float>& gamma,
                           const std::vector<float>& beta) {
  const double u = std::ldexp(1.0, -24);
  const double e = (static_cast<double>(n) / 256 + 16) * u;
  std::vector<double> bound(m * n);
  for (int64_t i = 0; i < m; ++i) {
    double mean = 0, mean_abs = 0, var = 0;
    for (int64_t j = 0; j < n; ++j) mean += x[i * n + j], mean_abs += std::fabs(x[i * n + j]);
    mean /= n;
    mean_abs /= n;
    for (int64_t j = 0; j < n; ++j) var += (x[i * n + j] - mean) * (x[i * n + j] - mean);
    const double inv = 1.0 / std::sqrt(var / n + kLayerNormEps);
    for (int64_t j = 0; j < n; ++j) {
      const double z = std::fabs(x[i * n + j] - mean) * inv;
      const double g = gamma.empty() ? 1.0 : std::fabs(gamma[j]);
      const double b = beta.empty() ? 0.0 : std::fabs(beta[j]);
      bound[i * n + j] = std::ldexp(std::fabs(want[i * n + j]), -10) + u +
                         4 * e * (mean_abs * inv + z) * g + 4 * u * (b + z * g);
    }
  }
  return bound;
}

void ExpectWithin(const std::vector<Half>& got, const std::vector<float>& want,
                  const std::vector<double>& bound) {
  ASSERT_EQ(got.size(), want.size());
  int failures = 0;
  for (size_t i = 0; i < want.size() && failures < 10; ++i) {
    const double diff = std::fabs(double{HalfToFloat(got[i])} - want[i]);
    if (!(diff <= bound[i])) {
      ADD_FAILURE() << "element " << i << ": got " << HalfToFloat(got[i]) << ", want " << want[i]
                    << " +- " << bound[i];
      ++failures;
    }
  }
}

class LayerNormCudaTest : public ::testing::TestWithParam<Shape> {
 protected:
  void SetUp() override { LLMINT8_SKIP_WITHOUT_CUDA_DEVICE(); }
};

// Rows with a mean offset and one outlier feature (as OPT's activations have).
std::vector<Half> MakeInput(int64_t m, int64_t n, uint32_t seed) {
  std::vector<float> x = RandomNormal(m * n, seed, 2.0f);
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) x[i * n + j] += 0.5f * static_cast<float>(i % 3);
  }
  if (n > 7) x[7] = 60.0f;
  // A last row of small spread (std 2e-3): its variance is below eps, so eps matters there.
  if (m > 1) {
    for (int64_t j = 0; j < n; ++j) x[(m - 1) * n + j] = 0.25f + 1e-3f * x[(m - 1) * n + j];
  }
  return ToHalf(x);
}

TEST_P(LayerNormCudaTest, MatchesCpuWithinDerivedBound) {
  const auto [m, n, affine] = GetParam();
  const std::vector<Half> xh = MakeInput(m, n, 11 + static_cast<uint32_t>(n));
  std::vector<Half> gh, bh;
  std::vector<float> gamma, beta;
  if (affine) {
    gamma = ToFloat(ToHalf(RandomNormal(n, 5, 0.1f)));
    for (float& g : gamma) g = HalfToFloat(FloatToHalf(g + 1.0f));
    beta = ToFloat(ToHalf(RandomNormal(n, 6, 0.1f)));
    gh = ToHalf(gamma);
    bh = ToHalf(beta);
  }
  const std::vector<float> x = ToFloat(xh);
  std::vector<float> want(m * n);
  ASSERT_TRUE(LayerNorm(x, m, n, gamma, beta, kLayerNormEps, want).ok());

  auto stream = Stream::Create();
  ASSERT_TRUE(stream.ok()) << stream.status();
  DeviceBuffer<Half> dx = Upload(xh, *stream);
  DeviceBuffer<Half> dg = Upload(gh, *stream);
  DeviceBuffer<Half> db = Upload(bh, *stream);
  auto dy = DeviceBuffer<Half>::Allocate(m * n);
  ASSERT_TRUE(dy.ok());
  const Half* g = affine ? dg.data() : nullptr;
  const Half* b = affine ? db.data() : nullptr;
  ASSERT_TRUE(LayerNormCuda(dx.data(), m, n, g, b, kLayerNormEps, dy->data(), stream->get()).ok());
  const std::vector<double> bound = Bounds(x, want, m, n, gamma, beta);
  ExpectWithin(Download(*dy, m * n, *stream), want, bound);

  // In place (x == y) gives the same bits.
  const std::vector<Half> out_of_place = Download(*dy, m * n, *stream);
  ASSERT_TRUE(LayerNormCuda(dx.data(), m, n, g, b, kLayerNormEps, dx.data(), stream->get()).ok());
  const std::vector<Half> in_place = Download(dx, m * n, *stream);
  for (int64_t i = 0; i < m * n; ++i) ASSERT_EQ(in_place[i].bits, out_of_place[i].bits) << i;
}

TEST_P(LayerNormCudaTest, FusedResidualAddMatchesAddThenCpuLayerNorm) {
  const auto [m, n, affine] = GetParam();
  const std::vector<Half> rh = MakeInput(m, n, 21 + static_cast<uint32_t>(n));
  const std::vector<Half> dh = ToHalf(RandomNormal(m * n, 22, 1.0f));
  const std::vector<Half> biash = ToHalf(RandomNormal(n, 23, 0.2f));
  std::vector<float> gamma, beta;
  if (affine) {
    gamma = ToFloat(ToHalf(RandomNormal(n, 24, 0.3f)));
    beta = ToFloat(ToHalf(RandomNormal(n, 25, 0.1f)));
  }
  const std::vector<Half> gh = ToHalf(gamma), bh = ToHalf(beta);

  auto stream = Stream::Create();
  ASSERT_TRUE(stream.ok()) << stream.status();
  for (const bool with_bias : {true, false}) {
    // Expected residual: the same fp32 adds, one rounding.
    std::vector<Half> want_r(m * n);
    for (int64_t i = 0; i < m * n; ++i) {
      float v = HalfToFloat(rh[i]) + HalfToFloat(dh[i]);
      if (with_bias) v += HalfToFloat(biash[i % n]);
      want_r[i] = FloatToHalf(v);
    }
    const std::vector<float> r = ToFloat(want_r);
    std::vector<float> want_y(m * n);
    ASSERT_TRUE(LayerNorm(r, m, n, gamma, beta, kLayerNormEps, want_y).ok());
    const std::vector<double> bound = Bounds(r, want_y, m, n, gamma, beta);

    DeviceBuffer<Half> dd = Upload(dh, *stream);
    DeviceBuffer<Half> dbias = Upload(biash, *stream);
    DeviceBuffer<Half> dg = Upload(gh, *stream);
    DeviceBuffer<Half> db = Upload(bh, *stream);
    const Half* bias = with_bias ? dbias.data() : nullptr;
    const Half* g = affine ? dg.data() : nullptr;
    const Half* b = affine ? db.data() : nullptr;

    // Pre-LN: y is a separate buffer.
    DeviceBuffer<Half> dr = Upload(rh, *stream);
    auto dy = DeviceBuffer<Half>::Allocate(m * n);
    ASSERT_TRUE(dy.ok());
    ASSERT_TRUE(AddResidualLayerNormCuda(dr.data(), dd.data(), bias, m, n, g, b, kLayerNormEps,
                                         dy->data(), stream->get())
                    .ok());
    const std::vector<Half> got_r = Download(dr, m * n, *stream);
    for (int64_t i = 0; i < m * n; ++i) ASSERT_EQ(got_r[i].bits, want_r[i].bits) << i;
    const std::vector<Half> pre_ln = Download(*dy, m * n, *stream);
    ExpectWithin(pre_ln, want_y, bound);

    // Post-LN: y == residual, same bits as y above.
    DeviceBuffer<Half> dr2 = Upload(rh, *stream);
    ASSERT_TRUE(AddResidualLayerNormCuda(dr2.data(), dd.data(), bias, m, n, g, b, kLayerNormEps,
                                         dr2.data(), stream->get())
                    .ok());
    const std::vector<Half> post_ln = Download(dr2, m * n, *stream);
    for (int64_t i = 0; i < m * n; ++i) ASSERT_EQ(post_ln[i].bits, pre_ln[i].bits) << i;

    // Add only (y == null).
    DeviceBuffer<Half> dr3 = Upload(rh, *stream);
    ASSERT_TRUE(AddResidualLayerNormCuda(dr3.data(), dd.data(), bias, m, n, g, b, kLayerNormEps,
                                         nullptr, stream->get())
                    .ok());
    const std::vector<Half> added = Download(dr3, m * n, *stream);
    for (int64_t i = 0; i < m * n; ++i) ASSERT_EQ(added[i].bits, want_r[i].bits) << i;
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, LayerNormCudaTest,
                         ::testing::Values(Shape{1, 1, true}, Shape{3, 17, true},
                                           Shape{3, 17, false}, Shape{5, 768, true},
                                           Shape{4, 1001, false}, Shape{2, 12288, true}));

// Argument checks happen before any device work, so they run without a GPU too; the pointers
// are never dereferenced.
TEST(LayerNormCudaErrorsTest, BadArgumentsAreInvalidArgument) {
  Half* p = reinterpret_cast<Half*>(uintptr_t{256});
  Half* d = reinterpret_cast<Half*>(uintptr_t{512});
  const auto code = [](const absl::Status& s) { return s.code(); };
  constexpr auto kBad = absl::StatusCode::kInvalidArgument;
  EXPECT_EQ(code(LayerNormCuda(p, -1, 4, nullptr, nullptr, 1e-5f, p, nullptr)), kBad);
  EXPECT_EQ(code(LayerNormCuda(p, 2, 0, nullptr, nullptr, 1e-5f, p, nullptr)), kBad);
  EXPECT_EQ(code(LayerNormCuda(p, int64_t{1} << 31, 4, nullptr, nullptr, 1e-5f, p, nullptr)),
            kBad);
  EXPECT_EQ(code(LayerNormCuda(nullptr, 2, 4, nullptr, nullptr, 1e-5f, p, nullptr)), kBad);
  EXPECT_EQ(code(LayerNormCuda(p, 2, 4, nullptr, nullptr, 1e-5f, nullptr, nullptr)), kBad);
  EXPECT_EQ(code(LayerNormCuda(p, 2, 4, p, nullptr, 1e-5f, p, nullptr)), kBad);
  EXPECT_EQ(code(LayerNormCuda(p, 2, 4, nullptr, nullptr, 0.0f, p, nullptr)), kBad);
  EXPECT_EQ(code(LayerNormCuda(p, 2, 4, nullptr, nullptr, NAN, p, nullptr)), kBad);
  EXPECT_EQ(code(AddResidualLayerNormCuda(nullptr, d, nullptr, 2, 4, nullptr, nullptr, 1e-5f, p,
                                          nullptr)),
            kBad);
  EXPECT_EQ(code(AddResidualLayerNormCuda(p, nullptr, nullptr, 2, 4, nullptr, nullptr, 1e-5f, p,
                                          nullptr)),
            kBad);
  EXPECT_EQ(code(AddResidualLayerNormCuda(p, p, nullptr, 2, 4, nullptr, nullptr, 1e-5f, d,
                                          nullptr)),
            kBad);
  EXPECT_EQ(code(AddResidualLayerNormCuda(p, d, nullptr, 2, 4, nullptr, nullptr, 1e-5f, d,
                                          nullptr)),
            kBad);
  // m == 0 is a no-op (no launch), valid with or without a device.
  EXPECT_TRUE(LayerNormCuda(p, 0, 4, nullptr, nullptr, 1e-5f, p, nullptr).ok());
}

}  // namespace
}  // namespace llmint8::kernels
