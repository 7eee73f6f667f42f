// WeightMatrix loads: the CPU layout (W^T) and int8 quantization go through blocks of rows, and
// give exactly what the whole slice read at once gives, for a matrix past one block (2^20
// values) and a slice loaded at a row offset (as q/k/v fill one fused matrix).
#include "model/forward_weights.h"

#include <memory>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/quantize_weight.h"
#include "model/forward_test_util.h"
#include "model/synthetic.h"
#include "model/tensor_names.h"

namespace llmint8::model {
namespace {

using testing::SmallConfig;

class ForwardWeightsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    config_ = SmallConfig(512, 4, 1, 300, 64);
    config_.ffn_dim = 3000;  // fc1 [3000, 512]: 1.5 * 2^20 values, two blocks of rows
    auto source = MakeSyntheticSource(config_, {});
    ASSERT_TRUE(source.ok()) << source.status();
    source_ = *std::move(source);
  }
  std::string Fc1() const { return LayerTensorName(0, LayerTensor::kFc1Weight); }

  OptConfig config_;
  std::unique_ptr<CheckpointSource> source_;
};

// Rows [64, 3000) of fc1 at row offset 40 of a [3000, 512] matrix, transposed.
TEST_F(ForwardWeightsTest, TransposedLoadIsTheSliceTransposed) {
  const int64_t n = 3000, k = 512, rows = 3000 - 64, offset = 40;
  std::vector<Half> want16(rows * k);
  std::vector<float> want32(rows * k);
  ASSERT_TRUE(source_->ReadSliceHalf(Fc1(), {64, 3000}, {0, k}, want16).ok());
  ASSERT_TRUE(source_->ReadSlice(Fc1(), {64, 3000}, {0, k}, want32).ok());
  for (const Precision p : {Precision::kF16, Precision::kF32}) {
    WeightMatrix w(p, n, k, false, Layout::kTransposed);
    std::vector<float> tmp;
    ASSERT_TRUE(w.LoadRows(*source_, Fc1(), {64, 3000}, {0, k}, offset, &tmp).ok());
    ASSERT_TRUE(w.transposed());
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t j = 0; j < k; ++j) {
        if (p == Precision::kF16) {
          ASSERT_EQ(w.f16()[j * n + offset + r].bits, want16[r * k + j].bits)
              << "row " << r << " col " << j;
        } else {
          ASSERT_EQ(w.f32()[j * n + offset + r], want32[r * k + j]) << "row " << r << " col " << j;
        }
      }
    }
    EXPECT_EQ(p == Precision::kF16 ? HalfToFloat(w.f16()[offset - 1]) : w.f32()[offset - 1],
              0.0f);  // columns before the offset untouched
  }
}

TEST_F(ForwardWeightsTest, Int8LoadQuantizesBlockByBlockAsTheWholeSlice) {
  const int64_t n = 3000, k = 512;
  std::vector<float> slice(n * k);
  ASSERT_TRUE(source_->ReadSlice(Fc1(), {0, n}, {0, k}, slice).ok());
  std::vector<int8_t> want_q(n * k);
  std::vector<float> want_absmax(n);
  ASSERT_TRUE(kernels::QuantizeWeight(slice, n, k, want_q, want_absmax).ok());
  WeightMatrix w(Precision::kInt8, n, k, false, Layout::kTransposed);  // int8 stays row-major
  std::vector<float> tmp;
  ASSERT_TRUE(w.LoadRows(*source_, Fc1(), {0, n}, {0, k}, 0, &tmp).ok());
  EXPECT_FALSE(w.transposed());
  EXPECT_EQ(std::vector<int8_t>(w.q().begin(), w.q().end()), want_q);
  EXPECT_EQ(std::vector<float>(w.absmax().begin(), w.absmax().end()), want_absmax);
  EXPECT_LT(tmp.size(), slice.size());  // one block, not the slice
}

TEST_F(ForwardWeightsTest, TheCpuLinearRefusesARowMajorMatrix) {
  WeightMatrix w(Precision::kF16, 4, 3, false, Layout::kRowMajor);
  std::vector<float> x(3, 1.0f), y(4);
  EXPECT_EQ(w.Apply(x, 1, y, 6.0f, nullptr).code(), absl::StatusCode::kInternal);
  WeightMatrix t(Precision::kF16, 4, 3, false, Layout::kTransposed);
  EXPECT_TRUE(t.Apply(x, 1, y, 6.0f, nullptr).ok());
}

}  // namespace
}  // namespace llmint8::model
