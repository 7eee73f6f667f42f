// Rank 0's per-sequence sampling state: parameters that come once with a sequence's first step
// hold for its later steps, the min_tokens bans lift at sample_index min_tokens, the penalties
// count the tokens of every step, and Release forgets the sequence.
#include "worker/sequence_samplers.h"

#include <cmath>
#include <initializer_list>
#include <limits>
#include <span>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace llmint8::worker {
namespace {

// Ids 0..3; id 3 leads by 1, id 1 is second.
const std::vector<float> kLogits = {0.0f, 0.5f, 0.0f, 1.5f};

v1::SeqStep Step(uint64_t seq, std::initializer_list<int32_t> tokens, int32_t sample_index) {
  v1::SeqStep s;
  s.set_seq_id(seq);
  s.mutable_token_ids()->Add(tokens.begin(), tokens.end());
  s.set_sample_index(sample_index);
  return s;
}

int32_t Next(SequenceSamplers& samplers, const v1::SeqStep& step) {
  samplers.Observe(step);
  absl::StatusOr<SampledToken> t = samplers.Sample(step, kLogits);
  EXPECT_TRUE(t.ok()) << t.status();
  return t.ok() ? t->token_id : -1;
}

TEST(SequenceSamplersTest, ParametersOfTheFirstStepHoldUntilReplacedOrReleased) {
  SequenceSamplers samplers;
  v1::SeqStep first = Step(7, {2, 5}, 0);
  v1::TokenBias* b = first.mutable_sampling()->add_logit_bias();
  b->set_token_id(0);
  b->set_bias(100.0f);
  EXPECT_EQ(Next(samplers, first), 0);
  EXPECT_EQ(Next(samplers, Step(7, {0}, 1)), 0);  // no parameters sent: still biased
  EXPECT_EQ(Next(samplers, Step(8, {2}, 0)), 3);  // a sequence started without: greedy
  EXPECT_EQ(samplers.size(), 2u);
  // A step that sets them replaces them (here: plain greedy).
  v1::SeqStep replaced = Step(7, {0}, 2);
  replaced.mutable_sampling()->set_temperature(0.0f);
  EXPECT_EQ(Next(samplers, replaced), 3);
  samplers.Release(7);
  EXPECT_EQ(samplers.size(), 1u);
  const v1::SeqStep after = Step(7, {3}, 3);
  EXPECT_EQ(samplers.Sample(after, kLogits).status().code(), absl::StatusCode::kInvalidArgument);
  samplers.Clear();
  EXPECT_EQ(samplers.size(), 0u);
}

// min_tokens 2 banning id 3: sample indices 0 and 1 take the runner-up (id 1), index 2 may
// take id 3 again. The logprob is the model's own, ban or not.
TEST(SequenceSamplersTest, MinTokensBansLiftAtSampleIndexMinTokens) {
  SequenceSamplers samplers;
  v1::SeqStep first = Step(1, {2}, 0);
  first.mutable_sampling()->set_min_tokens(2);
  first.mutable_sampling()->add_min_tokens_banned(3);
  first.set_logprobs(true);
  first.set_top_logprobs(1);
  samplers.Observe(first);
  absl::StatusOr<SampledToken> t0 = samplers.Sample(first, kLogits);
  ASSERT_TRUE(t0.ok()) << t0.status();
  EXPECT_EQ(t0->token_id, 1);
  double z = 0.0;
  for (float x : kLogits) z += std::exp(static_cast<double>(x));
  EXPECT_NEAR(t0->logprob, 0.5 - std::log(z), 1e-5);
  ASSERT_EQ(t0->top.size(), 1u);
  EXPECT_EQ(t0->top[0].token_id(), 3);  // candidates are the model's too
  EXPECT_EQ(Next(samplers, Step(1, {1}, 1)), 1);
  EXPECT_EQ(Next(samplers, Step(1, {1}, 2)), 3);
  // Bans without min_tokens, or min_tokens without bans, change nothing.
  v1::SeqStep no_min = Step(2, {2}, 0);
  no_min.mutable_sampling()->add_min_tokens_banned(3);
  EXPECT_EQ(Next(samplers, no_min), 3);
}

// The logprob comes with the steps that ask for it (SeqStep.logprobs): computing it reads the
// whole row again with an exp each, which greedy decoding without logprobs does not pay.
TEST(SequenceSamplersTest, TheLogprobComesOnlyWithTheStepsThatAskForIt) {
  SequenceSamplers samplers;
  double z = 0.0;
  for (float x : kLogits) z += std::exp(static_cast<double>(x));
  v1::SeqStep asked = Step(5, {2}, 0);
  asked.set_logprobs(true);
  samplers.Observe(asked);
  absl::StatusOr<SampledToken> with = samplers.Sample(asked, kLogits);
  ASSERT_TRUE(with.ok()) << with.status();
  EXPECT_EQ(with->token_id, 3);
  EXPECT_NEAR(with->logprob, 1.5 - std::log(z), 1e-5);
  const v1::SeqStep not_asked = Step(5, {3}, 1);
  samplers.Observe(not_asked);
  absl::StatusOr<SampledToken> without = samplers.Sample(not_asked, kLogits);
  ASSERT_TRUE(without.ok()) << without.status();
  EXPECT_EQ(without->token_id, 3);
  EXPECT_EQ(without->logprob, 0.0f);
  EXPECT_TRUE(without->top.empty());
}

// A step's token mask (guided decoding) holds for that step only, allowed or banned ids; the
// logprob is of the guided distribution (vLLM V1's).
TEST(SequenceSamplersTest, AStepsTokenMaskHoldsForThatStep) {
  SequenceSamplers samplers;
  v1::SeqStep allow = Step(9, {2}, 0);
  allow.set_logprobs(true);
  allow.mutable_mask()->set_allow(true);
  allow.mutable_mask()->add_token_ids(0);
  allow.mutable_mask()->add_token_ids(2);
  samplers.Observe(allow);
  absl::StatusOr<SampledToken> t = samplers.Sample(allow, kLogits);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->token_id, 0) << "3 and 1 are not allowed; 0 and 2 tie, the lower id wins";
  EXPECT_NEAR(t->logprob, -std::log(2.0), 1e-5) << "of the two allowed ids, equal";

  v1::SeqStep ban = Step(9, {0}, 1);
  ban.mutable_mask()->add_token_ids(3);
  EXPECT_EQ(Next(samplers, ban), 1);
  EXPECT_EQ(Next(samplers, Step(9, {1}, 2)), 3) << "no mask: any id";

  v1::SeqStep outside = Step(9, {3}, 3);
  outside.mutable_mask()->add_token_ids(4);
  samplers.Observe(outside);
  EXPECT_EQ(samplers.Sample(outside, kLogits).status().code(), absl::StatusCode::kInvalidArgument);
  v1::SeqStep none = Step(9, {3}, 3);
  none.mutable_mask()->set_allow(true);  // nothing allowed
  samplers.Observe(none);
  EXPECT_EQ(samplers.Sample(none, kLogits).status().code(), absl::StatusCode::kInvalidArgument);
}

// The tokens of every step count for the penalties, prefill chunks included, though the
// parameters came with the first step only; replacing the parameters keeps them. Repetition
// penalty 4 (Hugging Face's: a positive logit of a seen id is divided by 4).
TEST(SequenceSamplersTest, PenaltiesCountTheTokensOfEveryStep) {
  SequenceSamplers samplers;
  v1::SeqStep chunk = Step(4, {3}, 0);  // a prompt chunk: nothing sampled
  chunk.mutable_sampling()->set_repetition_penalty(4.0f);
  samplers.Observe(chunk);
  // Seen {3, 2}: id 3 falls to 0.375, below id 1's 0.5 (not kept, id 3 would win).
  EXPECT_EQ(Next(samplers, Step(4, {2}, 0)), 1);
  // Seen {3, 2, 1}: id 1 falls to 0.125; id 3 (0.375) leads.
  EXPECT_EQ(Next(samplers, Step(4, {1}, 1)), 3);
  // Replaced (the same penalty): seen {3, 2, 1, 3} still. Had the tokens been dropped with
  // the old parameters, seen {3} would give id 1 (0.5 > 0.375).
  v1::SeqStep replaced = Step(4, {3}, 2);
  replaced.mutable_sampling()->set_repetition_penalty(4.0f);
  EXPECT_EQ(Next(samplers, replaced), 3);
}

// A sequence started from another's prefix (SeqStep.prefix_from) counts that one's first
// prefix_length tokens for its penalties; when rank 0 did not keep them (the source has no
// penalty) its sampling fails rather than count too few.
TEST(SequenceSamplersTest, APrefixBringsItsTokensForThePenalties) {
  SequenceSamplers samplers;
  v1::SeqStep source = Step(1, {3, 2}, 0);
  source.mutable_sampling()->set_repetition_penalty(4.0f);
  EXPECT_EQ(Next(samplers, source), 1);  // seen {3, 2}: as in the test above
  EXPECT_EQ(Next(samplers, Step(1, {1}, 1)), 3);
  // Started from the first position ({3}), then {2}: seen {3, 2}, not {2} (id 3 would win)
  // nor the source's {3, 2, 1} (id 3 would win too).
  v1::SeqStep fork = Step(2, {2}, 0);
  fork.set_prefix_from(1);
  fork.set_prefix_length(1);
  fork.mutable_sampling()->set_repetition_penalty(4.0f);
  EXPECT_EQ(Next(samplers, fork), 1);

  v1::SeqStep plain = Step(3, {3, 2}, 0);  // no penalty: no tokens kept
  EXPECT_EQ(Next(samplers, plain), 3);
  v1::SeqStep unknown = Step(4, {2}, 0);
  unknown.set_prefix_from(3);
  unknown.set_prefix_length(1);
  unknown.mutable_sampling()->set_repetition_penalty(4.0f);
  samplers.Observe(unknown);
  EXPECT_EQ(samplers.Sample(unknown, kLogits).status().code(), absl::StatusCode::kInvalidArgument);
  // Without a penalty of its own the prefix's tokens are not needed.
  v1::SeqStep greedy_fork = Step(5, {2}, 0);
  greedy_fork.set_prefix_from(3);
  greedy_fork.set_prefix_length(1);
  EXPECT_EQ(Next(samplers, greedy_fork), 3);
  // A prefix of sequence 4, whose own tokens are unknown (its `seen` is {2}, without the {3}
  // it started from): its tokens are unknown too, not taken as {2}.
  v1::SeqStep chained = Step(6, {1}, 0);
  chained.set_prefix_from(4);
  chained.set_prefix_length(1);
  chained.mutable_sampling()->set_repetition_penalty(4.0f);
  samplers.Observe(chained);
  EXPECT_EQ(samplers.Sample(chained, kLogits).status().code(), absl::StatusCode::kInvalidArgument);
}

// Parameters replaced by a later step (worker.proto allows it) keep what the sequence's
// tokens are known to be: a prefix whose tokens were not kept stays unknown, and a penalty
// given after steps whose tokens went uncounted fails its samples instead of counting too few.
TEST(SequenceSamplersTest, ReplacedParametersDoNotForgetThatTokensAreUnknown) {
  SequenceSamplers samplers;
  EXPECT_EQ(Next(samplers, Step(1, {3, 2}, 0)), 3);  // no penalty: nothing kept
  v1::SeqStep fork = Step(2, {2}, 0);
  fork.set_prefix_from(1);
  fork.set_prefix_length(1);
  fork.mutable_sampling()->set_repetition_penalty(4.0f);
  samplers.Observe(fork);
  EXPECT_EQ(samplers.Sample(fork, kLogits).status().code(), absl::StatusCode::kInvalidArgument);
  v1::SeqStep again = Step(2, {1}, 1);
  again.mutable_sampling()->set_repetition_penalty(4.0f);
  samplers.Observe(again);
  EXPECT_EQ(samplers.Sample(again, kLogits).status().code(), absl::StatusCode::kInvalidArgument)
      << "replacing the parameters forgot that the prefix's tokens are unknown";

  EXPECT_EQ(Next(samplers, Step(3, {3}, 0)), 3);  // greedy, tokens not kept
  v1::SeqStep penalised = Step(3, {2}, 1);
  penalised.mutable_sampling()->set_repetition_penalty(4.0f);
  samplers.Observe(penalised);
  const absl::Status late = samplers.Sample(penalised, kLogits).status();
  EXPECT_EQ(late.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(late.message()), ::testing::HasSubstr("after its first step"));
  // Parameters without a penalty again need no tokens: the sequence samples.
  v1::SeqStep plain = Step(3, {1}, 2);
  plain.mutable_sampling()->set_temperature(0.0f);
  EXPECT_EQ(Next(samplers, plain), 3);
  // A penalty from the first step on is counted in full, replaced or not (the test above).
}

// Draft tokens: the samples at the drafts' positions are those of the same positions sampled
// one step at a time (seeded sampling at sample_index + j, a frequency penalty over the
// accepted drafts, the min_tokens bans by index); the first sample that differs from its
// draft ends the step, and the sequence's tokens hold the accepted drafts only.
TEST(SequenceSamplersTest, DraftsAreAcceptedWhileTheSamplesOfOneStepAtATimeEqualThem) {
  std::vector<std::vector<float>> rows(6);
  for (size_t r = 0; r < rows.size(); ++r) {
    for (int id = 0; id < 8; ++id) rows[r].push_back(std::sin(1.7f * id + 0.9f * r) * 2.0f);
  }
  v1::SamplingParams params;
  params.set_temperature(0.9f);
  params.set_seed(77);
  params.set_frequency_penalty(1.5f);
  params.set_min_tokens(2);
  params.add_min_tokens_banned(0);
  // One step at a time: the tokens each row gives after the previous ones, and their logprobs.
  SequenceSamplers plain;
  std::vector<int32_t> sampled;
  std::vector<float> logprobs;
  int32_t last = 4;
  for (size_t r = 0; r < rows.size(); ++r) {
    v1::SeqStep step = Step(1, {last}, static_cast<int32_t>(r));
    step.set_logprobs(true);
    if (r == 0) *step.mutable_sampling() = params;
    plain.Observe(step);
    absl::StatusOr<SampledToken> t = plain.Sample(step, rows[r]);
    ASSERT_TRUE(t.ok()) << t.status();
    sampled.push_back(last = t->token_id);
    logprobs.push_back(t->logprob);
  }
  auto row = [&](size_t first) {
    return [&rows, first](int j) { return std::span<const float>(rows[first + j]); };
  };
  SequenceSamplers spec;
  v1::SeqStep verify = Step(1, {4}, 0);
  *verify.mutable_sampling() = params;
  verify.add_draft_token_ids(sampled[0]);
  verify.add_draft_token_ids(sampled[1]);
  verify.add_draft_token_ids((sampled[2] + 1) % 8);  // not what row 2 gives
  verify.set_logprobs(true);
  spec.Observe(verify);
  absl::StatusOr<SequenceSamplers::Verified> v = spec.SampleDrafts(verify, row(0));
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(v->accepted, 2);
  EXPECT_EQ(v->token.token_id, sampled[2]);
  ASSERT_EQ(v->drafts.size(), 2u);
  EXPECT_EQ(v->drafts[0].logprob, logprobs[0]);
  EXPECT_EQ(v->drafts[1].logprob, logprobs[1]);
  EXPECT_EQ(v->token.logprob, logprobs[2]);
  // Every draft accepted: the sample after the last.
  v1::SeqStep all = Step(1, {sampled[2]}, 3);
  all.set_drop_positions(1);  // the draft row 2 did not give
  all.add_draft_token_ids(sampled[3]);
  all.add_draft_token_ids(sampled[4]);
  spec.Observe(all);
  v = spec.SampleDrafts(all, row(3));
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(v->accepted, 2);
  EXPECT_EQ(v->token.token_id, sampled[5]);
  // Without drafts it is Sample; an unknown sequence is refused as by Sample.
  v1::SeqStep none = Step(2, {4}, 0);
  *none.mutable_sampling() = params;
  spec.Observe(none);
  v = spec.SampleDrafts(none, row(0));
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(v->accepted, 0);
  EXPECT_EQ(v->token.token_id, sampled[0]);
  EXPECT_EQ(spec.SampleDrafts(Step(9, {4}, 0), row(0)).status().code(),
            absl::StatusCode::kInvalidArgument);
  // A sample index whose drafts would sample past int32: refused, not overflowed.
  v1::SeqStep far = Step(3, {4}, std::numeric_limits<int32_t>::max());
  far.add_draft_token_ids(sampled[0]);
  spec.Observe(far);
  v = spec.SampleDrafts(far, row(0));
  EXPECT_EQ(v.status().code(), absl::StatusCode::kInvalidArgument) << v.status();
  EXPECT_NE(v.status().message().find("out of range"), std::string::npos) << v.status();
}

// The accepted drafts count in the penalties of the positions after them: greedy with a
// frequency penalty that takes id 1 below id 2 once it was generated, drafts 1, 1 keep the
// first only (one step at a time gives 1, 2). A step that drops other positions than its
// last step left unaccepted is refused.
TEST(SequenceSamplersTest, AcceptedDraftsCountInThePenaltiesAndTheDropIsChecked) {
  const std::vector<float> row = {0.0f, 1.0f, 0.9f, 0.0f};
  SequenceSamplers samplers;
  v1::SeqStep verify = Step(1, {3}, 0);
  verify.mutable_sampling()->set_frequency_penalty(0.5f);
  verify.add_draft_token_ids(1);
  verify.add_draft_token_ids(1);
  verify.add_draft_token_ids(0);
  samplers.Observe(verify);
  auto same = [&](int) { return std::span<const float>(row); };
  absl::StatusOr<SequenceSamplers::Verified> v = samplers.SampleDrafts(verify, same);
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(v->accepted, 1);
  EXPECT_EQ(v->token.token_id, 2);
  // Two drafts were not accepted: the next step drops two, not one.
  v1::SeqStep wrong = Step(1, {2}, 2);
  wrong.set_drop_positions(1);
  samplers.Observe(wrong);
  EXPECT_EQ(samplers.SampleDrafts(wrong, same).status().code(), absl::StatusCode::kInvalidArgument);
  v1::SeqStep right = Step(1, {2}, 2);
  right.set_drop_positions(2);
  SequenceSamplers fresh;
  fresh.Observe(verify);
  ASSERT_TRUE(fresh.SampleDrafts(verify, same).ok());
  fresh.Observe(right);
  v = fresh.SampleDrafts(right, same);
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(v->accepted, 0);
}

}  // namespace
}  // namespace llmint8::worker
