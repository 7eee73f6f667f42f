// Int8LinearCuda (both paths) against the CPU Int8LinearReference.
//
// The int8 part is exact on both sides (same q, same int32 C; see the quantize and GEMM tests).
// The CPU reference evaluates the epilogue in fp64 and rounds once to fp32; the GPU evaluates
//   v = ((C * sx) * sw) / 127^2 + sum_c xo_c * fl(fl(sw / 127) * q_c) + b
// in fp32 (each product and the sum over c outlier columns adds at most a few units of
// roundoff u = 2^-24 relative to S = |C sx sw / 127^2| + sum_c |xo_c wdq_c| + |b|), then rounds
// to fp16 (2^-11 relative, or 2^-25 absolute in the subnormal range). Hence, with n_out outliers:
//   |y_gpu - y_cpu| <= 2^-11 * (|y_cpu| + e) + e + 2^-25,   e = (2 * n_out + 16) * u * S.
#include "kernels/cuda/int8_linear_cuda.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <iostream>
#include <tuple>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cuda/cublaslt.h"
#include "kernels/cuda/cuda_test_util.h"
#include "kernels/cuda/device.h"
#include "kernels/int8_gemm.h"
#include "kernels/int8_linear.h"
#include "kernels/int8_test_util.h"
#include "kernels/quantize_activation.h"
#include "kernels/quantize_weight.h"

namespace llmint8::kernels {
namespace {

using gpu::CublasLt;
using gpu::DeviceBuffer;
using gpu::Stream;
using gpu::testing::Download;
using gpu::testing::Upload;

// Activations N(0, 1) clipped to |x| < 4 with 3 outlier columns (magnitude ~10-30) in a few rows.
std::vector<Half> MakeActivations(int64_t m, int64_t k, uint32_t seed) {
  std::vector<float> x = testing::RandomNormal(m * k, seed);
  for (float& v : x) v = std::clamp(v, -3.9f, 3.9f);
  for (int64_t c : {int64_t{0}, k / 2, k - 1}) {
    for (int64_t i = 0; i < m; i += 5) x[i * k + c] = (c % 2 ? 12.0f : -27.5f) + 0.25f * (i % 7);
  }
  return testing::ToHalf(x);
}

// S of the bound above, from the CPU's own intermediates.
std::vector<double> Magnitudes(const QuantizedActivation& act, std::span<const int32_t> acc,
                               std::span<const int8_t> wq, std::span<const float> sw,
                               std::span<const float> bias, int64_t m, int64_t n, int64_t k) {
  const int64_t n_out = static_cast<int64_t>(act.outlier_cols.size());
  std::vector<double> s(m * n);
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t r = 0; r < n; ++r) {
      double v = std::fabs(static_cast<double>(acc[i * n + r]) * act.absmax[i] * sw[r] / 16129.0);
      for (int64_t c = 0; c < n_out; ++c) {
        v += std::fabs(double{act.outliers[i * n_out + c]} * sw[r] / 127.0 *
                       wq[r * k + act.outlier_cols[c]]);
      }
      if (!bias.empty()) v += std::fabs(bias[r]);
      s[i * n + r] = v;
    }
  }
  return s;
}

using Case = std::tuple<int64_t, std::tuple<int64_t, int64_t>, Int8LinearPath>;  // m, (n, k), path

class Int8LinearCudaTest : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override { LLMINT8_SKIP_WITHOUT_CUDA_DEVICE(); }
};

TEST_P(Int8LinearCudaTest, MatchesCpuReferenceWithinDerivedBound) {
  const auto [m, nk, path] = GetParam();
  const auto [n, k] = nk;
  const bool gemm_possible = k % 4 == 0 && n % 4 == 0;

  const std::vector<Half> xh = MakeActivations(m, k, 7);
  const std::vector<float> xf = testing::ToFloat(xh);
  const std::vector<Half> wh = testing::ToHalf(testing::RandomNormal(n * k, 8, 0.05f));
  std::vector<int8_t> wq(n * k);
  std::vector<float> sw(n);
  ASSERT_TRUE(QuantizeWeight(std::span<const Half>(wh), n, k, wq, sw).ok());
  const std::vector<Half> bh = testing::ToHalf(testing::RandomNormal(n, 9, 0.5f));
  const std::vector<float> bf = testing::ToFloat(bh);
  const Int8WeightView view{wq, sw, n, k};

  auto stream = Stream::Create();
  auto lt = CublasLt::Create();
  ASSERT_TRUE(stream.ok() && lt.ok());
  // The kGemm path in one chunk (the default chunk covers these n) and in chunks of 64 output
  // columns: a workspace of 2m rows x 32 columns of scratch, which an m-row call spends on
  // 64-column chunks (a partial last chunk where n % 64 != 0).
  auto ws = Int8LinearCudaWorkspace::Create(m, k, n);
  auto ws_chunked = Int8LinearCudaWorkspace::Create(2 * m, k, n, kDefaultMaxOutlierColumns,
                                                    /*gemm_min_m=*/0, /*gemm_chunk_n=*/32);
  ASSERT_TRUE(ws.ok()) << ws.status();
  ASSERT_TRUE(ws_chunked.ok()) << ws_chunked.status();
  ASSERT_EQ(ws->chunk_n, n);
  ASSERT_EQ(ws_chunked->chunk_n, std::min<int64_t>(n, 32));
  DeviceBuffer<Half> dx = Upload(xh, *stream);
  DeviceBuffer<int8_t> dwq = Upload(wq, *stream);
  DeviceBuffer<float> dsw = Upload(sw, *stream);
  DeviceBuffer<Half> db = Upload(bh, *stream);
  auto dy = DeviceBuffer<Half>::Allocate(m * n);
  ASSERT_TRUE(dy.ok());
  const Int8WeightCudaView dview{dwq.data(), dsw.data(), n, k};

  for (float threshold : {6.0f, 0.0f}) {
    for (bool with_bias : {true, false}) {
      // The CPU side once per (threshold, bias); each workspace is checked against it.
      const std::span<const float> bias =
          with_bias ? std::span<const float>(bf) : std::span<const float>();
      std::vector<float> want(m * n);
      ASSERT_TRUE(Int8LinearReference(xf, m, view, bias, threshold, want).ok());
      QuantizedActivation act;
      ASSERT_TRUE(QuantizeActivation(xf, m, k, threshold, &act).ok());
      if (threshold > 0.0f) {
        ASSERT_EQ(act.outlier_cols.size(), 3u);
      }
      std::vector<int32_t> acc(m * n);
      ASSERT_TRUE(Int8GemmReference(act.q, wq, m, n, k, acc).ok());
      const std::vector<double> mag = Magnitudes(act, acc, wq, sw, bias, m, n, k);
      const double u = std::ldexp(1.0, -24), h = std::ldexp(1.0, -11);
      const double n_out = static_cast<double>(act.outlier_cols.size());

      for (Int8LinearCudaWorkspace* workspace : {&*ws, &*ws_chunked}) {
        SCOPED_TRACE(::testing::Message() << "threshold " << threshold << (with_bias ? " bias" : "")
                                          << " chunk " << workspace->chunk_n);
        Int8LinearCudaOptions options;
        options.threshold = threshold;
        options.path = path;
        const absl::Status s =
            Int8LinearCuda(&*lt, dx.data(), m, dview, with_bias ? db.data() : nullptr, options,
                           workspace, dy->data(), stream->get());
        if (path == Int8LinearPath::kGemm && !gemm_possible) {
          EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
          return;
        }
        if (path == Int8LinearPath::kGemm &&
            (m < 16 || n % 16 != 0 || k % 16 != 0 || workspace->chunk_n % 16 != 0) &&
            s.code() == absl::StatusCode::kUnimplemented) {
          // cuBLASLt may have no int8 algorithm for a few rows or odd widths (a chunk of 4
          // columns: n = 68 in chunks of 32); kAuto then takes the small-M kernel. For m >= 16
          // and n, k, chunks multiples of 16 it must have one.
          // Unimplemented is the answer checked here; the other workspace, threshold and bias
          // are still run (each may have an algorithm).
          std::cerr << "note: cuBLASLt has no int8 algorithm for m=" << m << " n=" << n
                    << " k=" << k << " chunk " << workspace->chunk_n << ": " << s << "\n";
          continue;
        }
        ASSERT_TRUE(s.ok()) << s;
        const std::vector<Half> got = Download(*dy, m * n, *stream);
        for (int64_t i = 0; i < m * n; ++i) {
          const double e = (2.0 * n_out + 16.0) * u * mag[i];
          const double bound = h * (std::fabs(want[i]) + e) + e + std::ldexp(1.0, -25);
          ASSERT_LE(std::fabs(HalfToFloat(got[i]) - double{want[i]}), bound)
              << "element " << i << " (row " << i / n << ", col " << i % n << ")";
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, Int8LinearCudaTest,
    ::testing::Combine(::testing::Values<int64_t>(1, 2, 3, 8, 16, 17, 45, 2048),
                       ::testing::Values(std::make_tuple<int64_t, int64_t>(68, 100),
                                         std::make_tuple<int64_t, int64_t>(53, 37),
                                         std::make_tuple<int64_t, int64_t>(96, 256),
                                         std::make_tuple<int64_t, int64_t>(96, 1040),
                                         // the mma kernel with a partial block of 16 rows
                                         std::make_tuple<int64_t, int64_t>(68, 256)),
                       ::testing::Values(Int8LinearPath::kAuto, Int8LinearPath::kGemv,
                                         Int8LinearPath::kGemm)));

class Int8LinearCudaErrorsTest : public ::testing::Test {
 protected:
  void SetUp() override { LLMINT8_SKIP_WITHOUT_CUDA_DEVICE(); }
};

TEST_F(Int8LinearCudaErrorsTest, BadInputIsInvalidArgument) {
  auto stream = Stream::Create();
  auto lt = CublasLt::Create();
  ASSERT_TRUE(stream.ok() && lt.ok());
  const int64_t m = 4, n = 8, k = 16;
  auto ws = Int8LinearCudaWorkspace::Create(m, k, n);
  ASSERT_TRUE(ws.ok());
  auto x = DeviceBuffer<Half>::Allocate(m * k);
  auto y = DeviceBuffer<Half>::Allocate(m * n);
  auto q = DeviceBuffer<int8_t>::Allocate(n * k);
  auto s = DeviceBuffer<float>::Allocate(n);
  ASSERT_TRUE(x.ok() && y.ok() && q.ok() && s.ok());
  const Int8WeightCudaView w{q->data(), s->data(), n, k};
  const auto code = [&](int64_t rows, const Int8WeightCudaView& wv, float t) {
    Int8LinearCudaOptions o;
    o.threshold = t;
    return Int8LinearCuda(&*lt, x->data(), rows, wv, nullptr, o, &*ws, y->data(), stream->get())
        .code();
  };
  EXPECT_EQ(code(0, w, 6.0f), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code(m + 1, w, 6.0f), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code(m, w, -1.0f), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code(m, Int8WeightCudaView{q->data(), s->data(), n, k + 1}, 6.0f),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code(m, Int8WeightCudaView{nullptr, s->data(), n, k}, 6.0f),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace llmint8::kernels
