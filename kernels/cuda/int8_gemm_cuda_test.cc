// Int8GemmCuda against Int8GemmReference: integer products and sums are exact, so every int32
// accumulator must be equal on every path (cuBLASLt IMMA, the small-M streaming kernels, kAuto).
#include "kernels/cuda/int8_gemm_cuda.h"

#include <cstdint>
#include <iostream>
#include <tuple>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cuda/cublaslt.h"
#include "kernels/cuda/cuda_test_util.h"
#include "kernels/cuda/device.h"
#include "kernels/int8_gemm.h"
#include "kernels/int8_test_util.h"

namespace llmint8::kernels {
namespace {

using gpu::CublasLt;
using gpu::DeviceBuffer;
using gpu::Stream;
using gpu::testing::Download;
using gpu::testing::Upload;

// (m, n, k): m covers the small-M templates and the GEMM regime (2048); (n, k) covers
// IMMA-friendly sizes that are not multiples of 16 (68 x 100: dp4a), odd sizes cuBLASLt refuses
// (53 x 37: dp4a) and aligned ones (96 x 256, 96 x 1040: the mma kernel).
using Shape = std::tuple<int64_t, int64_t, int64_t>;

class Int8GemmCudaTest : public ::testing::TestWithParam<Shape> {
 protected:
  void SetUp() override { LLMINT8_SKIP_WITHOUT_CUDA_DEVICE(); }
};

TEST_P(Int8GemmCudaTest, EveryAlgorithmEqualsTheReferenceExactly) {
  const auto [m, n, k] = GetParam();
  std::vector<int8_t> a = testing::RandomInt8(m * k, 100 + static_cast<uint32_t>(m));
  std::vector<int8_t> b = testing::RandomInt8(n * k, 200 + static_cast<uint32_t>(n));
  a[0] = 127;  // extremes in the first products
  b[0] = -127;
  std::vector<int32_t> want(m * n);
  ASSERT_TRUE(Int8GemmReference(a, b, m, n, k, want).ok());

  auto stream = Stream::Create();
  ASSERT_TRUE(stream.ok()) << stream.status();
  auto lt = CublasLt::Create();
  ASSERT_TRUE(lt.ok()) << lt.status();
  DeviceBuffer<int8_t> da = Upload(a, *stream);
  DeviceBuffer<int8_t> db = Upload(b, *stream);
  auto dc = DeviceBuffer<int32_t>::Allocate(m * n);
  ASSERT_TRUE(dc.ok());

  for (Int8GemmAlgo algo : {Int8GemmAlgo::kAuto, Int8GemmAlgo::kGemv, Int8GemmAlgo::kCublasLt}) {
    SCOPED_TRACE(static_cast<int>(algo));
    const bool lt_ok = CublasLtInt8Supported(n, k, da.data(), db.data(), dc->data());
    ASSERT_TRUE(dc->SetZero(stream->get()).ok());
    const absl::Status s =
        Int8GemmCuda(&*lt, da.data(), db.data(), m, n, k, dc->data(), algo, stream->get());
    if (algo == Int8GemmAlgo::kCublasLt && !lt_ok) {
      EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
      continue;
    }
    if (algo == Int8GemmAlgo::kCublasLt && (m < 16 || n % 16 != 0 || k % 16 != 0) &&
        s.code() == absl::StatusCode::kUnimplemented) {
      // cuBLASLt may have no int8 algorithm for a few rows or odd widths (kAuto then takes the
      // small-M kernel, tested above); for m >= 16 and n, k multiples of 16 it must have one.
      std::cerr << "note: cuBLASLt has no int8 algorithm for m=" << m << " n=" << n << " k=" << k
                << ": " << s << "\n";
      continue;
    }
    ASSERT_TRUE(s.ok()) << s;
    EXPECT_EQ(Download(*dc, m * n, *stream), want);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, Int8GemmCudaTest,
    // m: every small-M template (dp4a MT 1, 2, 4, 8, 16, 32; mma tiles 1-4), a partial last
    // 32-row chunk (45); k % 16 == 0 takes the mma kernel, other k the dp4a one;
    // k = 1040: the mma kernel over eight 128-k steps and a partial ninth (one 16-byte load).
    ::testing::Combine(::testing::Values<int64_t>(1, 2, 3, 8, 16, 17, 45, 2048),
                       ::testing::Values<int64_t>(68, 53, 96),
                       ::testing::Values<int64_t>(100, 37, 256, 1040)));

class Int8GemmCudaEdgeTest : public ::testing::Test {
 protected:
  void SetUp() override { LLMINT8_SKIP_WITHOUT_CUDA_DEVICE(); }
};

// The largest allowed k with all products at +127 * 127: 2^17 * 16129 < 2^31, no overflow.
TEST_F(Int8GemmCudaEdgeTest, LargestKDoesNotOverflow) {
  // m, n = 16: cuBLASLt may have no int8 algorithm for fewer rows or columns (see the shape test
  // above).
  const int64_t m = 16, n = 16, k = int64_t{1} << 17;
  std::vector<int8_t> a(m * k, 127), b(n * k, 127);
  auto stream = Stream::Create();
  auto lt = CublasLt::Create();
  ASSERT_TRUE(stream.ok() && lt.ok());
  DeviceBuffer<int8_t> da = Upload(a, *stream);
  DeviceBuffer<int8_t> db = Upload(b, *stream);
  auto dc = DeviceBuffer<int32_t>::Allocate(m * n);
  ASSERT_TRUE(dc.ok());
  for (Int8GemmAlgo algo : {Int8GemmAlgo::kGemv, Int8GemmAlgo::kCublasLt}) {
    ASSERT_TRUE(
        Int8GemmCuda(&*lt, da.data(), db.data(), m, n, k, dc->data(), algo, stream->get()).ok());
    for (int32_t v : Download(*dc, m * n, *stream)) EXPECT_EQ(v, int32_t{16129} << 17);
  }
}

TEST_F(Int8GemmCudaEdgeTest, BadInputIsInvalidArgument) {
  auto stream = Stream::Create();
  auto lt = CublasLt::Create();
  ASSERT_TRUE(stream.ok() && lt.ok());
  auto a = DeviceBuffer<int8_t>::Allocate(64);
  auto c = DeviceBuffer<int32_t>::Allocate(64);
  ASSERT_TRUE(a.ok() && c.ok());
  const auto code = [&](const int8_t* ap, int64_t m, int64_t n, int64_t k) {
    return Int8GemmCuda(&*lt, ap, a->data(), m, n, k, c->data(), Int8GemmAlgo::kAuto,
                        stream->get())
        .code();
  };
  EXPECT_EQ(code(a->data(), 0, 4, 4), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code(a->data(), 4, -4, 4), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code(a->data(), 1, 4, (int64_t{1} << 17) + 1), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code(nullptr, 4, 4, 4), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace llmint8::kernels
