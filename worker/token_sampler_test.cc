// worker::SampleToken's view of a sequence's kept tokens: the repetition penalty over all of
// them, the frequency and presence penalties over the last sample_index (the generated ones).
#include "worker/token_sampler.h"

#include <cmath>
#include <vector>

#include "gtest/gtest.h"

namespace llmint8::worker {
namespace {

v1::SamplingParams Greedy() {
  v1::SamplingParams p;
  p.set_temperature(0.0f);
  return p;
}

// Ids 0..3 tie at 1.0 but for a 0.5 lead of id 3; the sequence kept prompt {1, 2} and
// generated {3} (sample_index 1). A frequency penalty of 1 takes id 3 below the others,
// which the prompt ids 1 and 2 are not: the choice falls to id 0, the lowest untouched id.
TEST(TokenSamplerTest, FrequencyPenaltyCountsOnlyTheGeneratedTokens) {
  const std::vector<float> logits = {1.0f, 1.0f, 1.0f, 1.5f};
  const std::vector<int32_t> kept = {1, 2, 3};
  v1::SamplingParams p = Greedy();
  ASSERT_EQ(SampleToken(logits, ToKernelParams(p), 1, kept)->token_id, 3);
  p.set_frequency_penalty(1.0f);
  // Counting the prompt too would leave id 0 alone as well; dropping the newest generated
  // token would leave id 3 first.
  auto first_generated = SampleToken(logits, ToKernelParams(p), 1, kept);
  ASSERT_TRUE(first_generated.ok()) << first_generated.status();
  EXPECT_EQ(first_generated->token_id, 0);
  // Prompt ids are not counted: with id 0 in the prompt and 3 penalised, 0 still wins.
  EXPECT_EQ(SampleToken(logits, ToKernelParams(p), 1, std::vector<int32_t>{0, 3})->token_id, 0);
  // sample_index 0 (nothing generated yet): no penalty.
  EXPECT_EQ(SampleToken(logits, ToKernelParams(p), 0, kept)->token_id, 3);
  // Presence alike; the logprob is the model's own.
  v1::SamplingParams presence = Greedy();
  presence.set_presence_penalty(1.0f);
  kernels::SamplingParams with_top = ToKernelParams(presence);
  with_top.return_logprob = true;
  with_top.top_logprobs = 2;
  auto present = SampleToken(logits, with_top, 1, kept);
  ASSERT_TRUE(present.ok());
  EXPECT_EQ(present->token_id, 0);
  ASSERT_EQ(present->top.size(), 2u);
  EXPECT_EQ(present->top[0].token_id(), 3);
  EXPECT_LT(present->logprob, present->top[0].logprob());
}

TEST(TokenSamplerTest, BadInputIsInvalidArgumentAndUnscorableRowsAreNaN) {
  const std::vector<float> logits = {1.0f, 2.0f};
  EXPECT_EQ(SampleToken(logits, ToKernelParams(Greedy()), -1).status().code(),
            absl::StatusCode::kInvalidArgument);
  v1::SamplingParams p = Greedy();
  p.set_presence_penalty(3.0f);
  EXPECT_EQ(SampleToken(logits, ToKernelParams(p), 1, std::vector<int32_t>{1}).status().code(),
            absl::StatusCode::kInvalidArgument);
  // Scoring never fails (it runs on rank 0 alone): what it cannot score is NaN.
  EXPECT_TRUE(std::isnan(ScoreToken(logits, 2, 1).logprob()));
  EXPECT_TRUE(std::isnan(ScoreToken(std::vector<float>{1.0f, NAN}, 0, 1).logprob()));
  EXPECT_EQ(ScoreToken(logits, 2, 1).top_size(), 0);
  const v1::PromptScore scored = ScoreToken(logits, 0, 1);
  EXPECT_LT(scored.logprob(), scored.top(0).logprob());
  EXPECT_EQ(scored.top(0).token_id(), 1);
}

}  // namespace
}  // namespace llmint8::worker
