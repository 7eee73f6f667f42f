// QuantizeWeightCuda / DequantizeWeightCuda against the CPU reference (kernels/quantize_weight.h).
// Both compute scale = 127.0f / absmax and round_half_away(w * scale) in IEEE fp32 from the same
// fp16 inputs, so q and absmax must be bit-identical; dequantization is the same fp32 product
// rounded once to fp16 (round to nearest even on both sides), so it is bit-identical too.
#include "kernels/cuda/quantize_weight_cuda.h"

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cuda/cuda_test_util.h"
#include "kernels/cuda/device.h"
#include "kernels/int8_test_util.h"
#include "kernels/quantize_weight.h"

namespace llmint8::kernels {
namespace {

using gpu::DeviceBuffer;
using gpu::Stream;
using gpu::testing::Download;
using gpu::testing::Upload;

struct Shape {
  int64_t n;
  int64_t k;
};

class QuantizeWeightCudaTest : public ::testing::TestWithParam<Shape> {
 protected:
  void SetUp() override { LLMINT8_SKIP_WITHOUT_CUDA_DEVICE(); }
};

TEST_P(QuantizeWeightCudaTest, MatchesCpuBitForBit) {
  const auto [n, k] = GetParam();
  std::vector<float> wf = testing::RandomNormal(n * k, 17 + static_cast<uint32_t>(n * k), 0.05f);
  for (int64_t j = 0; j < k; ++j) wf[j] = 0.0f;  // an all-zero row: absmax 0, q 0
  if (n > 2) wf[2 * k] = 0.5f;                    // a row whose max sits on the first column
  const std::vector<Half> wh = testing::ToHalf(wf);

  std::vector<int8_t> want_q(n * k);
  std::vector<float> want_absmax(n);
  ASSERT_TRUE(QuantizeWeight(std::span<const Half>(wh), n, k, want_q, want_absmax).ok());
  std::vector<float> want_dq(n * k);
  ASSERT_TRUE(DequantizeWeight(want_q, want_absmax, n, k, want_dq).ok());

  auto stream = Stream::Create();
  ASSERT_TRUE(stream.ok()) << stream.status();
  DeviceBuffer<Half> w = Upload(wh, *stream);
  auto q = DeviceBuffer<int8_t>::Allocate(n * k);
  auto absmax = DeviceBuffer<float>::Allocate(n);
  auto dq = DeviceBuffer<Half>::Allocate(n * k);
  ASSERT_TRUE(q.ok() && absmax.ok() && dq.ok());
  ASSERT_TRUE(QuantizeWeightCuda(w.data(), n, k, q->data(), absmax->data(), stream->get()).ok());
  ASSERT_TRUE(
      DequantizeWeightCuda(q->data(), absmax->data(), n, k, dq->data(), stream->get()).ok());

  EXPECT_EQ(Download(*q, n * k, *stream), want_q);
  EXPECT_EQ(Download(*absmax, n, *stream), want_absmax);
  const std::vector<Half> got_dq = Download(*dq, n * k, *stream);
  for (int64_t i = 0; i < n * k; ++i) {
    ASSERT_EQ(got_dq[i].bits, FloatToHalf(want_dq[i]).bits) << "element " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, QuantizeWeightCudaTest,
                         ::testing::Values(Shape{1, 1}, Shape{3, 37}, Shape{17, 100},
                                           Shape{68, 4096}, Shape{5, 12289}));

class QuantizeWeightCudaErrorsTest : public ::testing::Test {
 protected:
  void SetUp() override { LLMINT8_SKIP_WITHOUT_CUDA_DEVICE(); }
};

TEST_F(QuantizeWeightCudaErrorsTest, NonFiniteWeightNamesTheRow) {
  const int64_t n = 4, k = 33;
  std::vector<float> wf = testing::RandomNormal(n * k, 3, 0.05f);
  wf[2 * k + 7] = std::numeric_limits<float>::infinity();
  wf[3 * k + 1] = std::numeric_limits<float>::quiet_NaN();
  auto stream = Stream::Create();
  ASSERT_TRUE(stream.ok());
  DeviceBuffer<Half> w = Upload(testing::ToHalf(wf), *stream);
  auto q = DeviceBuffer<int8_t>::Allocate(n * k);
  auto absmax = DeviceBuffer<float>::Allocate(n);
  ASSERT_TRUE(q.ok() && absmax.ok());
  const absl::Status s =
      QuantizeWeightCuda(w.data(), n, k, q->data(), absmax->data(), stream->get());
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find("row 2"), std::string::npos) << s;
}

TEST_F(QuantizeWeightCudaErrorsTest, BadShapesAndNullPointers) {
  auto stream = Stream::Create();
  ASSERT_TRUE(stream.ok());
  auto buf = DeviceBuffer<float>::Allocate(16);
  auto q = DeviceBuffer<int8_t>::Allocate(16);
  auto w = DeviceBuffer<Half>::Allocate(16);
  ASSERT_TRUE(buf.ok() && q.ok() && w.ok());
  EXPECT_EQ(QuantizeWeightCuda(w->data(), 0, 4, q->data(), buf->data(), stream->get()).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(QuantizeWeightCuda(w->data(), 4, -1, q->data(), buf->data(), stream->get()).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(QuantizeWeightCuda(nullptr, 4, 4, q->data(), buf->data(), stream->get()).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(DequantizeWeightCuda(q->data(), nullptr, 4, 4, w->data(), stream->get()).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(DequantizeWeightCuda(q->data(), buf->data(), 4, 0, w->data(), stream->get()).code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace llmint8::kernels
