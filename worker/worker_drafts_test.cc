// A worker's steps with draft tokens (speculative decoding), through WorkerService::Step on a
// one-rank group: drafts equal to the greedy tokens are accepted and give the tokens of steps
// one at a time (with their logprobs when asked), the next step drops those not accepted, and
// drafts the worker cannot verify are refused (INVALID_ARGUMENT) with the group kept.
#include <cstdint>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "llmint8/v1/worker.pb.h"
#include "worker/worker_service.h"

namespace llmint8::worker {
namespace {

constexpr char kModel[] =
    "synthetic:125m,layers=2,hidden=64,heads=4,ffn=256,vocab=512,positions=128";

class WorkerDraftsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    v1::LoadShardRequest req;
    req.set_epoch(1);
    req.set_rank(0);
    req.set_world_size(1);
    req.set_model(kModel);
    req.set_dtype("fp16");
    req.set_device("cpu");
    v1::LoadShardResponse resp;
    const grpc::Status s = service_.LoadShard(nullptr, &req, &resp);
    ASSERT_TRUE(s.ok()) << s.error_message();
  }

  // One sequence's step; its result (token -1 when the step failed: `status` says why).
  v1::SeqResult StepOne(const v1::SeqStep& seq, grpc::Status* status = nullptr) {
    v1::StepRequest req;
    req.set_epoch(1);
    *req.add_seqs() = seq;
    v1::StepResponse resp;
    const grpc::Status s = service_.Step(nullptr, &req, &resp);
    if (status != nullptr) *status = s;
    if (!s.ok() || resp.results_size() != 1) {
      v1::SeqResult failed;
      failed.set_token_id(-1);
      return failed;
    }
    return resp.results(0);
  }

  static v1::SeqStep Seq(uint64_t id, std::vector<int32_t> tokens, int32_t sample_index) {
    v1::SeqStep s;
    s.set_seq_id(id);
    s.mutable_token_ids()->Add(tokens.begin(), tokens.end());
    s.set_sample_index(sample_index);
    if (sample_index == 0) s.mutable_sampling();  // greedy, sent with the first step
    return s;
  }

  WorkerService service_{WorkerOptions{}};
};

TEST_F(WorkerDraftsTest, DraftsEqualToTheGreedyTokensAreAcceptedAndTheRestDropped) {
  const std::vector<int32_t> prompt = {2, 40, 41, 42, 43, 44};
  // Sequence 1, one token a step: the greedy tokens and their logprobs.
  std::vector<int32_t> greedy;
  std::vector<float> logprob;
  for (int i = 0; i < 5; ++i) {
    v1::SeqStep step = i == 0 ? Seq(1, prompt, 0) : Seq(1, {greedy.back()}, i);
    step.set_logprobs(true);
    const v1::SeqResult r = StepOne(step);
    ASSERT_GE(r.token_id(), 0);
    greedy.push_back(r.token_id());
    logprob.push_back(r.logprob());
  }

  // Sequence 2, the same prompt: then its first token with drafts greedy[1], greedy[2] and a
  // wrong third.
  ASSERT_EQ(StepOne(Seq(2, prompt, 0)).token_id(), greedy[0]);
  v1::SeqStep drafted = Seq(2, {greedy[0]}, 1);
  drafted.add_draft_token_ids(greedy[1]);
  drafted.add_draft_token_ids(greedy[2]);
  drafted.add_draft_token_ids((greedy[3] + 1) % 512);
  drafted.set_logprobs(true);
  drafted.set_top_logprobs(2);
  const v1::SeqResult verified = StepOne(drafted);
  EXPECT_EQ(verified.drafts_accepted(), 2);
  EXPECT_EQ(verified.token_id(), greedy[3]);
  // Each accepted draft's logprob is the one its token had one step at a time (the rows of a
  // step's positions are a decode step's: to the bit with AVX2, kernels/linear.h).
  ASSERT_EQ(verified.drafts_size(), 2);
  EXPECT_NEAR(verified.drafts(0).logprob(), logprob[1], 1e-4);
  EXPECT_NEAR(verified.drafts(1).logprob(), logprob[2], 1e-4);
  EXPECT_NEAR(verified.logprob(), logprob[3], 1e-4);
  // Their candidates: the most likely first, which greedy sampled.
  for (int d = 0; d < 2; ++d) {
    ASSERT_EQ(verified.drafts(d).top_size(), 2) << "draft " << d;
    EXPECT_EQ(verified.drafts(d).top(0).token_id(), greedy[d + 1]);
    EXPECT_EQ(verified.drafts(d).top(0).logprob(), verified.drafts(d).logprob());
  }
  // The next step drops the one draft not accepted and goes on as sequence 1 did.
  v1::SeqStep next = Seq(2, {greedy[3]}, 4);
  next.set_drop_positions(1);
  EXPECT_EQ(StepOne(next).token_id(), greedy[4]);
}

TEST_F(WorkerDraftsTest, DraftsItCannotVerifyAreRefusedAndTheGroupStays) {
  ASSERT_GE(StepOne(Seq(1, {2, 40, 41}, 0)).token_id(), 0);
  std::vector<v1::SeqStep> bad;
  v1::SeqStep no_token = Seq(1, {}, 1);
  no_token.add_draft_token_ids(5);
  bad.push_back(no_token);
  v1::SeqStep too_many = Seq(1, {5}, 1);
  for (int i = 0; i < 17; ++i) too_many.add_draft_token_ids(5);
  bad.push_back(too_many);
  v1::SeqStep scored = Seq(1, {5}, 1);
  scored.add_draft_token_ids(5);
  scored.set_prompt_logprobs(true);
  bad.push_back(scored);
  v1::SeqStep prefill = Seq(1, {5}, 1);
  prefill.add_draft_token_ids(5);
  prefill.set_prefill_only(true);
  bad.push_back(prefill);
  v1::SeqStep out_of_vocab = Seq(1, {5}, 1);
  out_of_vocab.add_draft_token_ids(512);
  bad.push_back(out_of_vocab);
  v1::SeqStep over_drop = Seq(1, {5}, 1);
  over_drop.set_drop_positions(4);  // it holds 3
  bad.push_back(over_drop);
  for (const v1::SeqStep& step : bad) {
    grpc::Status status;
    StepOne(step, &status);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
        << step.ShortDebugString() << ": " << status.error_message();
  }
  // A drop the sequence's last step did not leave: the step runs, rank 0 refuses to sample.
  v1::SeqStep wrong_drop = Seq(1, {5}, 1);
  wrong_drop.set_drop_positions(1);
  const v1::SeqResult refused = StepOne(wrong_drop);
  EXPECT_EQ(refused.token_id(), -1);
  EXPECT_NE(refused.sample_error().find("drops 1 positions"), std::string::npos)
      << refused.sample_error();
  // The group still serves; a drop on a step that samples nothing is checked too (at the
  // sequence's next sample).
  EXPECT_GE(StepOne(Seq(3, {2, 7}, 0)).token_id(), 0);
  v1::SeqStep quiet = Seq(3, {8}, 1);
  quiet.set_prefill_only(true);
  quiet.set_drop_positions(1);
  grpc::Status ran;
  StepOne(quiet, &ran);
  ASSERT_TRUE(ran.ok()) << ran.error_message();
  const v1::SeqResult after = StepOne(Seq(3, {9}, 1));
  EXPECT_EQ(after.token_id(), -1);
  EXPECT_NE(after.sample_error().find("drops 1 positions"), std::string::npos)
      << after.sample_error();
}

}  // namespace
}  // namespace llmint8::worker
