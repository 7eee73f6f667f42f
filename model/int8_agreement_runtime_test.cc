// LLM.int8() against the fp16-weight forward on a synthetic model with injected outlier feature
// dims (the paper's emergent features): top-1 agreement over 256 decode positions, with the
// outlier threshold 6.0 (decomposition on) and 0 (plain vector-wise int8, no decomposition).
//
// Both models see the same tokens (the fp16 model's greedy continuation, teacher-forced into
// the int8 model), so one disagreement does not cascade into the next positions.
//
// Near-ties. In a random-weight model the logits over the vocab are close to Gaussian, so the
// fp16 model's top-1 - top-2 gap is an order statistic: about exponential with mean
// sigma / sqrt(2 ln V) (~0.22 sigma measured here, sigma = the std of that position's logits),
// and ~20% of positions have a gap under 0.05 sigma: coin flips for any perturbation, the
// int8 path's ~1% logit error included. Scaling the logits (LM head, final LayerNorm gain,
// temperature) cannot change this: it scales the gap and the int8 error alike, and argmax is
// scale-invariant. Trained LMs put their top-1 well clear of the rest, so such ties are rare
// there. Each measurement therefore also reports agreement over the "decided" positions, those
// whose fp16 gap is at least kTieBand * sigma (a fixed, scale-free band, not derived from the
// int8 error at that position).
#include <algorithm>
#include <cmath>
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
constexpr double kTieBand = 0.05;  // decided: fp16 top-2 gap >= 5% of the logits' std

struct Agreement {
  int agree = 0;
  int total = 0;
  int decided_agree = 0;  // over positions whose fp16 top-2 gap >= kTieBand * std
  int decided = 0;
  double max_logit_diff = 0;
  double rate() const { return total == 0 ? 0.0 : static_cast<double>(agree) / total; }
  double decided_rate() const {
    return decided == 0 ? 0.0 : static_cast<double>(decided_agree) / decided;
  }
};

class Int8AgreementTest : public ::testing::Test {
 protected:
  static OptConfig Config() { return testing::SmallConfig(128, 4, 2, 512, 128); }
  static SyntheticOptions Synthetic(float outlier_gain) {
    SyntheticOptions o;
    o.seed = 5;
    o.bias_std = 0.02f;
    o.layer_norm_noise = 0.1f;
    // LayerNorm gain 20 or 40 at these dims: the normalized activations entering q/k/v and fc1
    // are that many times the others there (the paper's outliers: >= 6, up to ~20x typical
    // magnitudes), so every batch's max crosses the threshold. OPT's init std 0.02.
    o.outlier_dims = {3, 40, 99};
    o.outlier_gain = outlier_gain;
    return o;
  }

  // Runs the fp16 model greedily and the int8 model (threshold t) on the same tokens.
  static Agreement Measure(float outlier_gain, float threshold) {
    const OptConfig c = Config();
    auto src = MakeSyntheticSource(c, Synthetic(outlier_gain));
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
          const bool same = next[s] == testing::ArgMax(lq->row(s));
          a.agree += same;
          if (testing::RelativeGap(lr->row(s)) >= kTieBand) {
            a.decided++;
            a.decided_agree += same;
          }
          a.max_logit_diff =
              testing::WorseDiff(a.max_logit_diff, testing::MaxAbsDiff(lr->row(s), lq->row(s)));
        }
        batch[s] = {static_cast<uint64_t>(s), std::span<const int32_t>(&next[s], 1)};
      }
    }
    return a;
  }
};

void Print(float gain, const Agreement& with, const Agreement& without) {
  std::printf(
      "outlier gain %g: int8 vs fp16 top-1 agreement over %d decode positions: "
      "threshold 6.0: %.2f%% (decided %d: %.2f%%, max |logit diff| %.3g); "
      "threshold 0: %.2f%% (decided %d: %.2f%%, max |logit diff| %.3g)\n",
      gain, with.total, 100 * with.rate(), with.decided, 100 * with.decided_rate(),
      with.max_logit_diff, 100 * without.rate(), without.decided, 100 * without.decided_rate(),
      without.max_logit_diff);
}

// Gain 20: the figure over all 256 positions (measured 100% / 99.2%).
TEST_F(Int8AgreementTest, Top1AgreementWithFp16OverDecodePositions) {
  const Agreement with = Measure(20.0f, 6.0f);
  const Agreement without = Measure(20.0f, 0.0f);
  Print(20.0f, with, without);
  EXPECT_EQ(with.total, kSequences * kDecodeSteps);
  EXPECT_GE(with.rate(), 0.99);
  // Decomposition must help on a model with outliers: the logits move less.
  EXPECT_LT(with.max_logit_diff, without.max_logit_diff);
}

// Gain 40 (SyntheticOptions' default): the outlier columns run in fp with the dequantized int8
// weight, as bitsandbytes does for int8-stored weights, so their weight rounding error is
// multiplied by ~40 and dominates the layer error (still ~0.6% relative, as at gain 20, since
// the outputs grow alike); the logit error is ~4.5% of sigma (max over the vocab). Measured:
// threshold 6: 98.4% of all positions (4 flips, all inside the near-tie band), 100% of the 212
// decided; threshold 0: 93.4% of all, 97.2% of decided (flips at gaps up to 0.4 sigma). (With
// the paper's per-batch outlier columns, before per-token outliers: 98.0%, 5 flips.)
// The decided figure is asserted: it still separates decomposition from plain int8.
TEST_F(Int8AgreementTest, Top1AgreementAtOutlierGain40OverDecidedPositions) {
  const Agreement with = Measure(40.0f, 6.0f);
  const Agreement without = Measure(40.0f, 0.0f);
  Print(40.0f, with, without);
  EXPECT_EQ(with.total, kSequences * kDecodeSteps);
  EXPECT_GE(with.decided, with.total * 3 / 4);  // the band sets aside a minority of positions
  EXPECT_GE(with.decided_rate(), 0.99);
  EXPECT_GT(with.decided_rate(), without.decided_rate());
  EXPECT_LT(with.max_logit_diff, without.max_logit_diff);
}

}  // namespace
}  // namespace llmint8::model
