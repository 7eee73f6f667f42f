// LinearF16Cuda (cuBLASLt fp16, fp32 accumulation, fused bias) against the CPU LinearF16.
//
// Bound, per element, with u = 2^-24 (fp32 unit roundoff) and S = sum_j |x_j w_j| + |b|:
// both sides accumulate the same fp16 products in fp32 in different orders, each within
// k * u * S of the exact value (products of two fp16 values are exact in fp32); the GPU then
// rounds to fp16, at most 2^-11 relative, and may round the product to fp16 before adding the
// fp16 bias (a second 2^-11 rounding of at most |y| + |b|), plus half an fp16 subnormal ulp.
//   |y_gpu - y_cpu| <= 2 * 2^-11 * (|y_cpu| + |b| + 2 k u S) + 2 k u S + 2^-25
#include "kernels/cuda/linear_cuda.h"

#include <cmath>
#include <cstdint>
#include <tuple>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cuda/cublaslt.h"
#include "kernels/cuda/cuda_test_util.h"
#include "kernels/cuda/device.h"
#include "kernels/int8_test_util.h"
#include "kernels/linear.h"

namespace llmint8::kernels {
namespace {

using gpu::CublasLt;
using gpu::DeviceBuffer;
using gpu::Stream;
using gpu::testing::Download;
using gpu::testing::Upload;

using Shape = std::tuple<int64_t, int64_t, int64_t>;  // m, n, k

class LinearF16CudaTest : public ::testing::TestWithParam<Shape> {
 protected:
  void SetUp() override { LLMINT8_SKIP_WITHOUT_CUDA_DEVICE(); }
};

TEST_P(LinearF16CudaTest, MatchesCpuWithinDerivedBound) {
  const auto [m, n, k] = GetParam();
  const std::vector<Half> xh = testing::ToHalf(testing::RandomNormal(m * k, 1));
  const std::vector<Half> wh = testing::ToHalf(testing::RandomNormal(n * k, 2, 0.05f));
  const std::vector<Half> bh = testing::ToHalf(testing::RandomNormal(n, 3, 0.5f));
  const std::vector<float> xf = testing::ToFloat(xh), wf = testing::ToFloat(wh),
                           bf = testing::ToFloat(bh);
  std::vector<Half> wt(n * k);  // the CPU linear takes W^T
  ASSERT_TRUE(TransposeWeight(wh, n, k, wt).ok());

  auto stream = Stream::Create();
  auto lt = CublasLt::Create();
  ASSERT_TRUE(stream.ok() && lt.ok());
  DeviceBuffer<Half> dx = Upload(xh, *stream);
  DeviceBuffer<Half> dw = Upload(wh, *stream);
  DeviceBuffer<Half> db = Upload(bh, *stream);
  auto dy = DeviceBuffer<Half>::Allocate(m * n);
  ASSERT_TRUE(dy.ok());

  for (bool with_bias : {true, false}) {
    SCOPED_TRACE(with_bias ? "bias" : "no bias");
    std::vector<float> want(m * n);
    ASSERT_TRUE(LinearF16(xf, m, wt, n, k,
                          with_bias ? std::span<const float>(bf) : std::span<const float>(), want)
                    .ok());
    const absl::Status s = LinearF16Cuda(&*lt, dx.data(), m, dw.data(), n, k,
                                         with_bias ? db.data() : nullptr, dy->data(),
                                         stream->get());
    ASSERT_TRUE(s.ok()) << s;
    const std::vector<Half> got = Download(*dy, m * n, *stream);
    const double u = std::ldexp(1.0, -24), h = std::ldexp(1.0, -11);
    for (int64_t i = 0; i < m; ++i) {
      for (int64_t r = 0; r < n; ++r) {
        const double b = with_bias ? std::fabs(bf[r]) : 0.0;
        double s_abs = b;
        for (int64_t j = 0; j < k; ++j) s_abs += std::fabs(double{xf[i * k + j]} * wf[r * k + j]);
        const double y = want[i * n + r];
        const double acc_err = 2.0 * k * u * s_abs;
        const double bound =
            2.0 * h * (std::fabs(y) + b + acc_err) + acc_err + std::ldexp(1.0, -25);
        ASSERT_LE(std::fabs(HalfToFloat(got[i * n + r]) - y), bound) << "at " << i << ", " << r;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, LinearF16CudaTest,
                         ::testing::Combine(::testing::Values<int64_t>(1, 3, 17, 2048),
                                            ::testing::Values<int64_t>(68, 53),
                                            ::testing::Values<int64_t>(100, 37)));

TEST(LinearF16CudaErrorsTest, BadInputIsInvalidArgument) {
  LLMINT8_SKIP_WITHOUT_CUDA_DEVICE();
  auto stream = Stream::Create();
  auto lt = CublasLt::Create();
  ASSERT_TRUE(stream.ok() && lt.ok());
  auto buf = DeviceBuffer<Half>::Allocate(64);
  ASSERT_TRUE(buf.ok());
  Half* p = buf->data();
  EXPECT_EQ(LinearF16Cuda(&*lt, p, 0, p, 4, 4, nullptr, p, stream->get()).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(LinearF16Cuda(&*lt, p, 4, p, 4, -2, nullptr, p, stream->get()).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(LinearF16Cuda(&*lt, nullptr, 4, p, 4, 4, nullptr, p, stream->get()).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(LinearF16Cuda(nullptr, p, 4, p, 4, 4, nullptr, p, stream->get()).code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace llmint8::kernels
