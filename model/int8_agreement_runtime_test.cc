// LLM.int8() against the fp16-weight forward on a synthetic model with injected outlier feature
// dims (the paper's emergent features): top-1 agreement over 256 decode positions, with the
// outlier threshold 6.0 (decomposition on) and 0 (plain vector-wise int8, no decomposition).
//
// Both models see the same tokens (the fp16 model's greedy continuation, teacher-forced into
// the int8 model), so one disagreement does not cascade into the next positions.
#include <cstdio>
#include <memory>
#include <vector>

#include "gtest/gtest.h"
#include "model/forward_test_util.h"
#include "model/shard_model.h"
#include "model/synthetic.h"

namespace llmint8::model {
namespace {

constexpr int kSequences = 4;
constexpr int kDecodeSteps = 64;  // 4 x 64 = 256 decode positions
constexpr int kPromptLength = 8;

struct Agreement {
  int agree = 0;
  int total = 0;
  double max_logit_diff = 0;
  double rate() const { return total == 0 ? 0.0 : static_cast<double>(agree) / total; }
};

class Int8AgreementTest : public ::testing::Test {
 protected:
  static OptConfig Config() { return testing::SmallConfig(128, 4, 2, 512, 128); }
  static SyntheticOptions Synthetic() {
    SyntheticOptions o;
    o.seed = 5;
    o.bias_std = 0.02f;
    o.layer_norm_noise = 0.1f;
    // LayerNorm gain 20 at these dims: the normalized activations entering q/k/v and fc1 are
    // ~20x the others there (the paper's outliers: >= 6, up to ~20x typical magnitudes), so
    // every batch's max crosses the threshold. OPT's init std 0.02. Measured on this model
    // (threshold 6 / 0): gain 20: 100% / 99.2%; with gain 40 the fp-path columns multiply the
    // int8 weight error by ~40 and agreement drops to 98.0% / 93.4% (see the report).
    o.outlier_dims = {3, 40, 99};
    o.outlier_gain = 20.0f;
    return o;
  }

  // Runs the fp16 model greedily and the int8 model (threshold t) on the same tokens.
  static Agreement Measure(float threshold) {
    const OptConfig c = Config();
    auto src = MakeSyntheticSource(c, Synthetic());
    EXPECT_TRUE(src.ok()) << src.status();
    ShardOptions f16;
    f16.precision = Precision::kF16;
    ShardOptions i8 = f16;
    i8.precision = Precision::kInt8;
    i8.threshold = threshold;
    auto ref = ShardModel::Load(c, **src, 1, 0, nullptr, f16);
    auto q = ShardModel::Load(c, **src, 1, 0, nullptr, i8);
    EXPECT_TRUE(ref.ok() && q.ok());
    std::vector<std::vector<int32_t>> prompts(kSequences);
    for (int s = 0; s < kSequences; ++s) {
      prompts[s].push_back(2);
      for (int j = 1; j < kPromptLength; ++j) prompts[s].push_back((s * 131 + j * 37) % 512);
    }
    std::vector<ShardModel::SequenceInput> batch(kSequences);
    for (int s = 0; s < kSequences; ++s) batch[s] = {static_cast<uint64_t>(s), prompts[s]};
    std::vector<int32_t> next(kSequences);
    Agreement a;
    for (int step = 0; step <= kDecodeSteps; ++step) {
      auto lr = (*ref)->Step(batch);
      auto lq = (*q)->Step(batch);
      EXPECT_TRUE(lr.ok() && lq.ok());
      if (!lr.ok() || !lq.ok()) return a;
      for (int s = 0; s < kSequences; ++s) {
        next[s] = testing::ArgMax(lr->row(s));
        if (step > 0) {  // positions produced by decode steps (step 0 is the prefill)
          a.total++;
          a.agree += next[s] == testing::ArgMax(lq->row(s));
          a.max_logit_diff =
              std::max(a.max_logit_diff, testing::MaxAbsDiff(lr->row(s), lq->row(s)));
        }
        batch[s] = {static_cast<uint64_t>(s), std::span<const int32_t>(&next[s], 1)};
      }
    }
    return a;
  }
};

TEST_F(Int8AgreementTest, Top1AgreementWithFp16OverDecodePositions) {
  const Agreement with = Measure(6.0f);
  const Agreement without = Measure(0.0f);
  std::printf("int8 vs fp16 top-1 agreement over %d decode positions: threshold 6.0: %.2f%% "
              "(max |logit diff| %.3g); threshold 0: %.2f%% (max |logit diff| %.3g)\n",
              with.total, 100 * with.rate(), with.max_logit_diff, 100 * without.rate(),
              without.max_logit_diff);
  EXPECT_EQ(with.total, kSequences * kDecodeSteps);
  EXPECT_GE(with.rate(), 0.99);
  // Decomposition must help on a model with outliers: the logits move less.
  EXPECT_LT(with.max_logit_diff, without.max_logit_diff);
}

}  // namespace
}  // namespace llmint8::model
