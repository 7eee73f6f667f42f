// BiasReluCuda / BiasGeluCuda against the CPU reference (kernels/activation.h) applied to
// v = fp32(x) + fp32(bias), the same single fp32 add the kernel does.
//
// Relu: max(v, 0) is exact, so the fp16 results are bit-identical.
// Gelu: both sides compute 0.5 v (1 + erf(v / sqrt(2))) in fp32 with erf within 2 ulp (CUDA's
// erff; glibc's is within 1-2 ulp), i.e. 4 * 2^-24 absolute on 1 + erf, plus the roundings of
// v / sqrt(2) (erf' <= 1.13) and of the products: each side is within 2^-24 (3.5 |v| + 3 |want|)
// of the exact value, so they differ by at most d = 2^-24 (8 |v| + 8 |want|).
// Rounding to fp16 then adds half an ulp, and one more ulp when the two values straddle a
// rounding boundary: |got - want| <= 2^-10 |want| + d + 2^-24.
#include "kernels/cuda/activation_cuda.h"

#include <cmath>
#include <cstdint>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/activation.h"
#include "kernels/cuda/cuda_test_util.h"
#include "kernels/cuda/device.h"
#include "kernels/int8_test_util.h"

namespace llmint8::kernels {
namespace {

using gpu::DeviceBuffer;
using gpu::Stream;
using gpu::testing::Download;
using gpu::testing::Upload;
using testing::RandomNormal;
using testing::ToHalf;

struct Shape {
  int64_t m;
  int64_t n;
};

class ActivationCudaTest : public ::testing::TestWithParam<Shape> {
 protected:
  void SetUp() override { LLMINT8_SKIP_WITHOUT_CUDA_DEVICE(); }
};

TEST_P(ActivationCudaTest, MatchesCpu) {
  const auto [m, n] = GetParam();
  std::vector<float> xf = RandomNormal(m * n, 31 + static_cast<uint32_t>(n), 3.0f);
  xf[0] = 0.0f;
  if (m * n > 2) xf[1] = -12.0f, xf[2] = 9.0f;  // GELU's tails
  const std::vector<Half> xh = ToHalf(xf);
  const std::vector<Half> bh = ToHalf(RandomNormal(n, 32, 0.5f));

  auto stream = Stream::Create();
  ASSERT_TRUE(stream.ok()) << stream.status();
  DeviceBuffer<Half> db = Upload(bh, *stream);
  const double u = std::ldexp(1.0, -24);
  for (const bool gelu : {false, true}) {
    for (const bool with_bias : {false, true}) {
      SCOPED_TRACE(::testing::Message() << (gelu ? "gelu" : "relu") << " bias " << with_bias);
      std::vector<float> v(m * n);
      for (int64_t i = 0; i < m * n; ++i) {
        v[i] = HalfToFloat(xh[i]) + (with_bias ? HalfToFloat(bh[i % n]) : 0.0f);
      }
      std::vector<float> want = v;
      if (gelu) {
        GeluInPlace(want);
      } else {
        ReluInPlace(want);
      }
      DeviceBuffer<Half> dx = Upload(xh, *stream);
      const Half* bias = with_bias ? db.data() : nullptr;
      const absl::Status s = gelu ? BiasGeluCuda(dx.data(), m, n, bias, stream->get())
                                  : BiasReluCuda(dx.data(), m, n, bias, stream->get());
      ASSERT_TRUE(s.ok()) << s;
      const std::vector<Half> got = Download(dx, m * n, *stream);
      for (int64_t i = 0; i < m * n; ++i) {
        if (!gelu) {
          ASSERT_EQ(got[i].bits, FloatToHalf(want[i]).bits) << "element " << i;
          continue;
        }
        const double w = want[i];
        const double bound =
            std::ldexp(std::fabs(w), -10) + u * (8 * std::fabs(v[i]) + 8 * std::fabs(w)) + u;
        ASSERT_LE(std::fabs(HalfToFloat(got[i]) - w), bound)
            << "element " << i << " v=" << v[i] << " got " << HalfToFloat(got[i]);
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, ActivationCudaTest,
                         ::testing::Values(Shape{1, 1}, Shape{3, 17}, Shape{7, 4096},
                                           Shape{2, 12289}));

TEST(ActivationCudaErrorsTest, BadArgumentsAreInvalidArgument) {
  Half* p = reinterpret_cast<Half*>(uintptr_t{256});
  EXPECT_EQ(BiasReluCuda(p, -1, 4, nullptr, nullptr).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(BiasGeluCuda(p, 2, 0, nullptr, nullptr).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(BiasGeluCuda(nullptr, 2, 4, nullptr, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(BiasReluCuda(p, 0, 4, nullptr, nullptr).ok());  // empty: no launch
}

}  // namespace
}  // namespace llmint8::kernels
