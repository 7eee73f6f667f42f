#include "model/synthetic.h"

#include <cmath>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/config.h"
#include "model/shard_plan.h"
#include "model/tensor_names.h"

namespace llmint8::model {
namespace {

// SyntheticOptions with a few fields set (designated initializers trip -Wextra).
template <typename F>
SyntheticOptions Opts(F set) {
  SyntheticOptions o;
  set(o);
  return o;
}

using ::testing::HasSubstr;

OptConfig Tiny() {
  auto c = ParseOptConfig(R"({"_name_or_path": "tiny", "hidden_size": 64, "num_hidden_layers": 2,
    "num_attention_heads": 4, "ffn_dim": 256, "vocab_size": 1003, "max_position_embeddings": 32})");
  return *c;
}

std::vector<float> Read(const CheckpointSource& s, const std::string& name, Range rows,
                        Range cols) {
  std::vector<float> out(static_cast<size_t>(rows.size() * cols.size()));
  absl::Status st = s.ReadSlice(name, rows, cols, out);
  EXPECT_TRUE(st.ok()) << st;
  return out;
}

TEST(SyntheticTest, DeterministicPerSeed) {
  auto a = MakeSyntheticSource(Tiny(), Opts([](SyntheticOptions& o) { o.seed = 7; }));
  auto b = MakeSyntheticSource(Tiny(), Opts([](SyntheticOptions& o) { o.seed = 7; }));
  auto c = MakeSyntheticSource(Tiny(), Opts([](SyntheticOptions& o) { o.seed = 8; }));
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  const std::string n = LayerTensorName(1, LayerTensor::kFc1Weight);
  const auto va = Read(**a, n, {0, 16}, {0, 64});
  EXPECT_EQ(va, Read(**b, n, {0, 16}, {0, 64}));
  EXPECT_NE(va, Read(**c, n, {0, 16}, {0, 64}));
  // Different tensors of the same shape differ too.
  EXPECT_NE(Read(**a, LayerTensorName(0, LayerTensor::kQProjWeight), {0, 4}, {0, 64}),
            Read(**a, LayerTensorName(0, LayerTensor::kKProjWeight), {0, 4}, {0, 64}));
}

// Every rank's slice at TP = 1, 2, 4 equals the same region of the full tensor.
TEST(SyntheticTest, SlicesAgreeAcrossTpDegrees) {
  const OptConfig cfg = Tiny();
  auto src = MakeSyntheticSource(cfg, Opts([](SyntheticOptions& o) {
                                   o.seed = 3;
                                   o.bias_std = 0.01f;
                                   o.layer_norm_noise = 0.1f;
                                 }));
  ASSERT_TRUE(src.ok());
  for (const ExpectedTensor& t : ExpectedTensors(cfg)) {
    auto info = (*src)->Info(t.name);
    ASSERT_TRUE(info.ok());
    EXPECT_EQ(info->shape, t.shape);
    const auto full = Read(**src, t.name, {0, info->rows()}, {0, info->cols()});
    for (int tp : {1, 2, 4}) {
      for (int rank = 0; rank < tp; ++rank) {
        auto plan = MakeShardPlan(cfg, tp, rank);
        ASSERT_TRUE(plan.ok());
        auto s = plan->SliceFor(cfg, t.name);
        ASSERT_TRUE(s.ok());
        const auto part = Read(**src, t.name, s->rows, s->cols);
        for (int64_t r = 0; r < s->rows.size(); ++r) {
          for (int64_t c = 0; c < s->cols.size(); ++c) {
            ASSERT_EQ(part[r * s->cols.size() + c],
                      full[(s->rows.begin + r) * info->cols() + s->cols.begin + c])
                << t.name << " tp " << tp << " rank " << rank;
          }
        }
      }
    }
  }
}

TEST(SyntheticTest, ValuesLookLikeOptInit) {
  auto src = MakeSyntheticSource(Tiny(), {});
  ASSERT_TRUE(src.ok());
  const auto w = Read(**src, LayerTensorName(0, LayerTensor::kFc1Weight), {0, 256}, {0, 64});
  double sum = 0, sq = 0, max_abs = 0;
  for (float v : w) {
    sum += v;
    sq += double{v} * v;
    max_abs = std::max(max_abs, double{std::abs(v)});
    EXPECT_EQ(v, HalfToFloat(FloatToHalf(v)));  // fp16-exact
  }
  const double n = static_cast<double>(w.size());  // 16384
  const double mean = sum / n, std = std::sqrt(sq / n - mean * mean);
  EXPECT_NEAR(mean, 0.0, 5 * 0.02 / std::sqrt(n));  // 5 standard errors
  EXPECT_NEAR(std, 0.02, 0.02 * 0.05);              // sample std within 5%
  EXPECT_LE(max_abs, 0.02 * 3.47);                  // Irwin-Hall(4) bound
  // Biases 0 and LayerNorm identity by default.
  for (float v : Read(**src, LayerTensorName(0, LayerTensor::kFc1Bias), {0, 256}, {0, 1})) {
    EXPECT_EQ(v, 0.0f);
  }
  for (float v : Read(**src, std::string(kFinalLayerNormWeight), {0, 64}, {0, 1}))
    EXPECT_EQ(v, 1.0f);
  EXPECT_FALSE((*src)->Has(kLmHead));  // tied
  EXPECT_EQ((*src)->Info("model.decoder.nope").status().code(), absl::StatusCode::kNotFound);
}

// Only the requested slice is computed: a corner of OPT-175B reads instantly.
TEST(SyntheticTest, HugePresetsReadSlicesCheaply) {
  auto cfg = OptPreset("175b");
  auto src = MakeSyntheticSource(*cfg, {});
  ASSERT_TRUE(src.ok());
  const std::string n = LayerTensorName(95, LayerTensor::kFc1Weight);
  auto info = (*src)->Info(n);
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->shape, (std::vector<int64_t>{49152, 12288}));
  const auto v = Read(**src, n, {49150, 49152}, {12280, 12288});
  EXPECT_EQ(v.size(), 16u);
}

// The injected outlier dims: LayerNorm output (gain * normalized embedding) reaches >= 6 at
// those dims for most tokens (the paper: systematic outliers in most sequence positions), and
// never elsewhere.
TEST(SyntheticTest, OutlierDimsProduceLargeNormalizedActivations) {
  const OptConfig cfg = Tiny();
  const SyntheticOptions opt = Opts([](SyntheticOptions& o) {
    o.seed = 5;
    o.outlier_dims = {3, 40};
  });
  auto src = MakeSyntheticSource(cfg, opt);
  ASSERT_TRUE(src.ok());
  const auto gain =
      Read(**src, LayerTensorName(0, LayerTensor::kSelfAttnLayerNormWeight), {0, 64}, {0, 1});
  EXPECT_EQ(gain[3], opt.outlier_gain);
  EXPECT_EQ(gain[40], opt.outlier_gain);
  EXPECT_EQ(gain[4], 1.0f);
  const int tokens = 200;
  const auto emb = Read(**src, std::string(kEmbedTokens), {0, tokens}, {0, 64});
  int big_at_outliers = 0, big_elsewhere = 0;
  for (int t = 0; t < tokens; ++t) {
    double mean = 0, var = 0;
    for (int d = 0; d < 64; ++d) mean += emb[t * 64 + d] / 64.0;
    for (int d = 0; d < 64; ++d) var += std::pow(emb[t * 64 + d] - mean, 2) / 64.0;
    for (int d = 0; d < 64; ++d) {
      const double y = gain[d] * (emb[t * 64 + d] - mean) / std::sqrt(var + 1e-5);
      if (std::abs(y) >= 6.0) (d == 3 || d == 40 ? big_at_outliers : big_elsewhere)++;
    }
  }
  EXPECT_EQ(big_elsewhere, 0);
  EXPECT_GE(big_at_outliers, 0.75 * 2 * tokens);
  auto bad = MakeSyntheticSource(cfg, Opts([](SyntheticOptions& o) { o.outlier_dims = {64}; }));
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("64"));
}

}  // namespace
}  // namespace llmint8::model
