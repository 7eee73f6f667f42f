// ShardModel at TP = 1, 2, 4 on the CPU in separate processes (Gloo over loopback, file
// rendezvous): the same greedy tokens and logits within tolerance, in fp16 and int8
// (tests/tp/tp_harness.h runs the groups and compares them).
#include <string>

#include "gtest/gtest.h"
#include "tests/tp/tp_harness.h"
#include "tests/tp/tp_memory_vote.h"

namespace llmint8::model {
namespace {

using testing::TpBackend;
using testing::TpCase;

class TpForwardTest : public ::testing::TestWithParam<TpCase> {};

TEST_P(TpForwardTest, Tp1Tp2Tp4AgreeOnGreedyTokensAndLogits) {
  testing::ExpectTpDegreesAgree(TpBackend{Device::kCpu, "gloo", nullptr}, GetParam());
}

// fp16 weights, fp32 math: only the all-reduce summation order differs, a few ulps of the
// activations (measured ~6e-7); 1e-4 is ample and still catches any slicing mistake; every
// greedy token must be equal.
// int8: row-parallel layers (out_proj, fc2) find outliers and row scales on their local K
// slice, a different (finer) quantization than TP 1, so TP degrees differ by int8 noise: about
// the int8-vs-exact error of a layer (~1% of |y|, amplified by the LayerNorm gain 20 at the
// outlier dims) - measured up to ~0.04 on logits of std ~0.9. 0.1 bounds it while a wrong
// slice, a missing all-reduce or a doubled bias moves logits by O(1). Teacher-forced.
INSTANTIATE_TEST_SUITE_P(Precisions, TpForwardTest,
                         ::testing::Values(TpCase{Precision::kF16, 1e-4, false},
                                           TpCase{Precision::kInt8, 0.1, true}),
                         [](const auto& info) {
                           return std::string(PrecisionName(info.param.precision));
                         });

// Ranks with different memory limits agree on every step (tests/tp/tp_memory_vote.h).
TEST(TpMemoryVoteTest, RanksWithDifferentLimitsAgreeOnEveryStep) {
  testing::ExpectMemoryVoteAgrees(TpBackend{Device::kCpu, "gloo", nullptr}, Precision::kInt8);
}

// A decode kept after a refused step grows on one rank only: the ranks still vote alike.
TEST(TpMemoryVoteTest, AKeptDecodeAfterARefusedStepVotesOnBothRanks) {
  testing::ExpectKeptDecodeVoteAgrees(TpBackend{Device::kCpu, "gloo", nullptr}, Precision::kInt8);
}

}  // namespace
}  // namespace llmint8::model
