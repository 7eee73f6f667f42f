// The scheduler's decisions step by step, against a group in memory that checks every step as
// a worker does (coordinator/fake_step_group.h): chunked prefill, the KV budget, the prefix
// cache, n choices, and what a lost worker, a refused batch, a short answer, a cancel and a
// refused group do. The service end to end is tests/e2e/.
#include "coordinator/scheduler.h"

#include <algorithm>
#include <cstdint>
#include <memory>
#include <numeric>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "coordinator/fake_step_group.h"
#include "coordinator/metrics.h"
#include "coordinator/output_constraint.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace llmint8::coordinator {
namespace {

using testing::FakeGreedy;
using testing::FakePromptLogprob;
using testing::FakeStepGroup;

// `n` prompt tokens: start, start + 1, ...
std::vector<int32_t> Tokens(int n, int32_t start) {
  std::vector<int32_t> out(static_cast<size_t>(n));
  std::iota(out.begin(), out.end(), start);
  return out;
}

std::vector<int32_t> Concat(std::vector<int32_t> a, const std::vector<int32_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

GenerationParams WithPriority(int32_t priority) {
  GenerationParams p;
  p.priority = priority;
  return p;
}

std::shared_ptr<Sequence> MakeSeq(uint64_t id, std::vector<int32_t> prompt, int max_new,
                                  GenerationParams params = {}) {
  params.max_new_tokens = max_new;
  return std::make_shared<Sequence>(id, std::move(prompt), std::move(params), nullptr);
}

struct Outcome {
  absl::Status status = absl::DeadlineExceededError("the sequence did not finish in time");
  std::vector<int32_t> tokens;
  std::vector<v1::GenerateResponse> responses;
};

Outcome Await(Sequence& seq, absl::Duration timeout = absl::Seconds(20)) {
  Outcome out;
  const absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    std::vector<v1::GenerateResponse> got;
    const std::optional<absl::Status> final = seq.WaitOutput(absl::Milliseconds(50), got);
    for (v1::GenerateResponse& r : got) {
      if (r.has_token_id()) out.tokens.push_back(r.token_id());
      out.responses.push_back(std::move(r));
    }
    if (final.has_value()) {
      out.status = *final;
      break;
    }
  }
  return out;
}

// The steps that carry sequence `id`: (step index, its SeqStep).
std::vector<std::pair<size_t, v1::SeqStep>> StepsOf(const std::vector<v1::StepRequest>& steps,
                                                    uint64_t id) {
  std::vector<std::pair<size_t, v1::SeqStep>> out;
  for (size_t i = 0; i < steps.size(); ++i) {
    for (const v1::SeqStep& s : steps[i].seqs()) {
      if (s.seq_id() == id) out.emplace_back(i, s);
    }
  }
  return out;
}

// Sequence `id`'s first step (a test failure and an empty step when it has none).
v1::SeqStep FirstStep(const std::vector<v1::StepRequest>& steps, uint64_t id) {
  const auto of = StepsOf(steps, id);
  if (of.empty()) {
    ADD_FAILURE() << "sequence " << id << " never went to the workers";
    return v1::SeqStep();
  }
  return of.front().second;
}

// Its index among the steps (-1 and a test failure when it has none).
int64_t FirstStepIndex(const std::vector<v1::StepRequest>& steps, uint64_t id) {
  const auto of = StepsOf(steps, id);
  if (of.empty()) {
    ADD_FAILURE() << "sequence " << id << " never went to the workers";
    return -1;
  }
  return static_cast<int64_t>(of.front().first);
}

// The prompt tokens a step carries (those of its sequences with more than one token).
int64_t PromptTokens(const v1::StepRequest& step) {
  int64_t n = 0;
  for (const v1::SeqStep& seq : step.seqs()) {
    if (seq.token_ids_size() > 1) n += seq.token_ids_size();
  }
  return n;
}

void ExpectWithinPrefillBudget(const std::vector<v1::StepRequest>& steps, int64_t budget) {
  for (const v1::StepRequest& step : steps) {
    EXPECT_LE(PromptTokens(step), budget) << step.DebugString();
  }
}

class SchedulerTest : public ::testing::Test {
 protected:
  // Options for a scheduler whose decisions the tests can predict: no prefix cache unless a
  // test turns it on.
  static SchedulerOptions Options() {
    SchedulerOptions o;
    o.max_batch = 8;
    o.max_context = 256;
    o.prefix_cache_entries = 0;
    return o;
  }
  static SchedulerOptions ByPriority() {
    SchedulerOptions o = Options();
    o.scheduling = Scheduling::kPriority;
    return o;
  }

  // A whole prompt's claim on a step: by priority with whole prompts, a prefill budget of 64
  // and the prefix cache on, s and p (priority 9) share a 16-token start, so p waits for s's
  // prefill in step 1; then h (priority 0, 40 tokens, queued during step 1) leaves too little
  // of step 2's budget for p's other 30 tokens, and p claims step 3. `o` may set more.
  struct Claim {
    std::vector<int32_t> shared, tail;  // p's prompt: shared + tail
    std::shared_ptr<Sequence> s, p, h;
  };
  Claim StartClaim(SchedulerOptions o) {
    o.scheduling = Scheduling::kPriority;
    o.prefill_chunk = 0;
    o.max_prefill_tokens = 64;
    o.prefix_cache_entries = 4;
    Start(o, /*kv_capacity=*/10000);
    Claim c;
    c.shared = Tokens(16, 700);
    c.tail = Tokens(30, 200);
    c.s = MakeSeq(1, Concat(c.shared, Tokens(2, 100)), 2, WithPriority(9));
    c.p = MakeSeq(2, Concat(c.shared, c.tail), 2, WithPriority(9));
    c.h = MakeSeq(10, Tokens(40, 1000), 2, WithPriority(0));
    group_->BeforeStep(1, [this, h = c.h] { ASSERT_TRUE(scheduler_->Enqueue(h).ok()); });
    return c;
  }

  void Start(SchedulerOptions options, std::optional<int64_t> kv_capacity = std::nullopt,
             bool token_masks = true, ServiceMetrics* metrics = nullptr) {
    Start(std::move(options),
          FakeStepGroup::Options{
              .kv_capacity = kv_capacity, .holds = std::nullopt, .token_masks = token_masks},
          metrics);
  }
  void Start(SchedulerOptions options, FakeStepGroup::Options group,
             ServiceMetrics* metrics = nullptr) {
    scheduler_.reset();  // before the group it drives
    group_ = std::make_unique<FakeStepGroup>(group);
    scheduler_ = std::make_unique<Scheduler>(std::move(options), group_.get(), metrics);
  }

  void TearDown() override {
    if (scheduler_ != nullptr) scheduler_->Stop();
    if (group_ != nullptr) {
      EXPECT_EQ(group_->violations(), std::vector<std::string>());
    }
  }

  // Waits until the scheduler has released (or parked) everything it ran: it publishes its
  // running count after the step's releases.
  void AwaitIdle() {
    const absl::Time deadline = absl::Now() + absl::Seconds(10);
    while (scheduler_->running() > 0) {
      if (absl::Now() > deadline) {
        ADD_FAILURE() << scheduler_->running() << " sequences still running after 10 s";
        return;
      }
      absl::SleepFor(absl::Milliseconds(5));
    }
  }

  // Waits (20 s at most) until the group is lost and, when given, `queued` requests wait for
  // the next one: what a test must see before it re-forms the group (a Reform() before the
  // scripted loss would bump the epoch under a running group).
  ::testing::AssertionResult AwaitGroupLoss(std::optional<int64_t> queued = std::nullopt) {
    const absl::Time deadline = absl::Now() + absl::Seconds(20);
    while (group_->ready() || (queued && scheduler_->queued() != *queued)) {
      if (absl::Now() > deadline) {
        return ::testing::AssertionFailure()
               << "after 20 s the group is " << (group_->ready() ? "ready" : "lost") << " and "
               << scheduler_->queued() << " requests wait";
      }
      absl::SleepFor(absl::Milliseconds(5));
    }
    return ::testing::AssertionSuccess();
  }

  // Queues `seqs` together, starts the scheduler and waits for each to end: their outcomes, in
  // order. A sequence that could not be queued or did not end OK fails the test (callers
  // stop on HasFailure()).
  std::vector<Outcome> RunToEnd(const std::vector<std::shared_ptr<Sequence>>& seqs) {
    std::vector<Outcome> outs;
    if (const absl::Status queued = scheduler_->EnqueueAll(seqs); !queued.ok()) {
      ADD_FAILURE() << "EnqueueAll: " << queued;
      return outs;
    }
    scheduler_->Start();
    for (const std::shared_ptr<Sequence>& seq : seqs) {
      outs.push_back(Await(*seq));
      EXPECT_TRUE(outs.back().status.ok())
          << "sequence " << seq->id() << ": " << outs.back().status;
    }
    return outs;
  }

  // Sequence 1 (a 10-token prompt) with `options`' resume_on_group_loss generates 2 tokens
  // before step `first_loss` breaks the group; resumed, it breaks the next group at step
  // `second_loss` without a new token: it must fail there (UNAVAILABLE, resumed once), and the
  // group re-formed once more serves a new request.
  void ResumedOnceThenFailed(SchedulerOptions options, int first_loss, int second_loss) {
    Start(std::move(options));
    auto a = MakeSeq(1, Tokens(10, 300), 20);
    group_->FailStep(first_loss, absl::UnavailableError("worker 1 is gone"), /*breaks=*/true);
    group_->FailStep(second_loss, absl::UnavailableError("worker 1 is gone again"),
                     /*breaks=*/true);
    ASSERT_TRUE(scheduler_->Enqueue(a).ok());
    scheduler_->Start();
    ASSERT_TRUE(AwaitGroupLoss(1)) << "resumed once: it waits for the group";
    group_->Reform();
    const Outcome out = Await(*a);
    EXPECT_EQ(out.status.code(), absl::StatusCode::kUnavailable) << out.status;
    EXPECT_EQ(out.tokens.size(), 2u);
    EXPECT_EQ(a->preemptions(), 1);
    group_->Reform();
    auto b = MakeSeq(2, Tokens(10, 500), 4);
    ASSERT_TRUE(scheduler_->Enqueue(b).ok());
    const Outcome served = Await(*b);
    ASSERT_TRUE(served.status.ok()) << served.status;
    EXPECT_EQ(served.tokens, FakeGreedy(b->prompt(), 4));
  }

  // Starts a scheduler with the prefix cache on (and `options`' other settings), and runs
  // sequence 1 on `prompt` to its end: the group then holds it, parked.
  void StartWithAParkedSequence(SchedulerOptions options, const std::vector<int32_t>& prompt) {
    options.prefix_cache_entries = 4;
    Start(std::move(options));
    auto parked = MakeSeq(1, prompt, 2);
    ASSERT_TRUE(scheduler_->Enqueue(parked).ok());
    scheduler_->Start();
    ASSERT_TRUE(Await(*parked).status.ok());
    AwaitIdle();
    ASSERT_EQ(scheduler_->prefix_cached_sequences(), 1);
    ASSERT_EQ(group_->held().count(1), 1u);
  }

  std::unique_ptr<FakeStepGroup> group_;
  std::unique_ptr<Scheduler> scheduler_;
};

// A queued sequence whose deadline passed never reaches the workers (its handler ends it);
// the one queued behind it runs.
TEST_F(SchedulerTest, AQueuedSequencePastItsDeadlineIsNotAdmitted) {
  Start(Options());
  auto expired = MakeSeq(1, Tokens(4, 100), 4);
  expired->set_deadline(absl::Now() - absl::Seconds(1));
  auto live = MakeSeq(2, Tokens(4, 200), 4);
  const std::vector<std::shared_ptr<Sequence>> both = {expired, live};
  ASSERT_TRUE(scheduler_->EnqueueAll(both).ok());
  scheduler_->Start();
  const Outcome out = Await(*live);
  ASSERT_TRUE(out.status.ok()) << out.status;
  EXPECT_EQ(out.tokens, FakeGreedy(live->prompt(), 4));
  EXPECT_TRUE(StepsOf(group_->steps(), 1).empty()) << "the expired sequence was prefilled";
  EXPECT_EQ(scheduler_->queued(), 0);
}

// min_tokens holds back every end-of-sequence id (a model's generation_config.json may list
// several) unless ignore_eos, and the stop ids: rank 0 never samples them before then.
TEST_F(SchedulerTest, MinTokensBansEveryEosIdAndTheStopIds) {
  SchedulerOptions o = Options();
  o.eos_token_ids = {2, 9};
  Start(o);
  GenerationParams p;
  p.min_tokens = 2;
  p.stop_token_ids = {7};
  auto banned = MakeSeq(1, Tokens(4, 100), 3, p);
  p.ignore_eos = true;
  auto ignoring = MakeSeq(2, Tokens(4, 200), 3, p);
  RunToEnd({banned, ignoring});
  ASSERT_FALSE(HasFailure());
  const std::vector<v1::StepRequest> steps = group_->steps();
  const auto first = StepsOf(steps, 1);
  ASSERT_FALSE(first.empty());
  EXPECT_THAT(first[0].second.sampling().min_tokens_banned(), ::testing::ElementsAre(2, 9, 7));
  const auto second = StepsOf(steps, 2);
  ASSERT_FALSE(second.empty());
  EXPECT_THAT(second[0].second.sampling().min_tokens_banned(), ::testing::ElementsAre(7));
}

TEST_F(SchedulerTest, LongPromptsArePrefilledInChunksBesideDecoding) {
  SchedulerOptions o = Options();
  o.prefill_chunk = 16;
  o.max_prefill_tokens = 24;
  Start(o);
  auto a = MakeSeq(1, Tokens(4, 100), 8);
  auto b = MakeSeq(2, Tokens(40, 200), 2);
  const std::vector<Outcome> out = RunToEnd({a, b});
  ASSERT_FALSE(HasFailure());
  EXPECT_EQ(out[0].tokens, FakeGreedy(a->prompt(), 8));
  EXPECT_EQ(out[1].tokens, FakeGreedy(b->prompt(), 2));

  // b: 16 of the step's 24 prompt tokens once a's 4 went (a chunk at most), then 16 and the
  // last 8; only its last chunk samples. a decodes one token a step meanwhile.
  const std::vector<v1::StepRequest> steps = group_->steps();
  const auto b_steps = StepsOf(steps, 2);
  ASSERT_EQ(b_steps.size(), 4u);
  const std::vector<int> sizes = {16, 16, 8, 1};
  const std::vector<bool> prefill_only = {true, true, false, false};
  for (size_t k = 0; k < b_steps.size(); ++k) {
    EXPECT_EQ(b_steps[k].first, k) << "b goes in every step from the first";
    EXPECT_EQ(b_steps[k].second.token_ids_size(), sizes[k]) << "b's step " << k;
    EXPECT_EQ(b_steps[k].second.prefill_only(), prefill_only[k]) << "b's step " << k;
  }
  const auto a_steps = StepsOf(steps, 1);
  ASSERT_EQ(a_steps.size(), 8u);
  for (size_t k = 0; k < a_steps.size(); ++k) {
    EXPECT_EQ(a_steps[k].first, k);
    EXPECT_EQ(a_steps[k].second.token_ids_size(), k == 0 ? 4 : 1);
  }
  // Sampling parameters go with a sequence's first step only (the fake checks the rest).
  EXPECT_TRUE(a_steps[0].second.has_sampling());
  EXPECT_TRUE(b_steps[0].second.has_sampling());

  AwaitIdle();
  EXPECT_TRUE(group_->held().empty()) << "finished sequences are released";
}

TEST_F(SchedulerTest, WholePromptsWaitForRoomInTheStepsPrefillBudget) {
  SchedulerOptions o = Options();
  o.prefill_chunk = 0;
  o.max_prefill_tokens = 50;
  Start(o);
  auto a = MakeSeq(1, Tokens(30, 100), 3);
  auto b = MakeSeq(2, Tokens(30, 200), 3);
  auto c = MakeSeq(3, Tokens(70, 300), 1);  // longer than the budget: alone in its step
  const std::vector<Outcome> out = RunToEnd({a, b, c});
  ASSERT_FALSE(HasFailure());
  EXPECT_EQ(out[0].tokens, FakeGreedy(a->prompt(), 3));
  EXPECT_EQ(out[1].tokens, FakeGreedy(b->prompt(), 3));
  EXPECT_EQ(out[2].tokens, FakeGreedy(c->prompt(), 1));
  const std::vector<v1::StepRequest> steps = group_->steps();
  int64_t most = 0;
  for (const v1::StepRequest& step : steps) {
    if (const int64_t prompt_tokens = PromptTokens(step); prompt_tokens != 70) {
      most = std::max(most, prompt_tokens);
    }
  }
  EXPECT_EQ(most, 30) << "two 30-token prompts never share a 50-token budget";
  EXPECT_EQ(FirstStep(steps, 1).token_ids_size(), 30) << "whole, not chunked";
  EXPECT_EQ(FirstStep(steps, 3).token_ids_size(), 70);
}

// A whole prompt that waited a step (for the prompt ahead to prefill their common start) goes
// later within that step's prefill budget too: it used to go beside the next round's prompts,
// past max_prefill_tokens and past the step the workers keep room for.
TEST_F(SchedulerTest, AWholePromptThatWaitedStaysWithinTheStepsPrefillBudget) {
  SchedulerOptions o = Options();
  o.prefill_chunk = 0;
  o.max_prefill_tokens = 110;
  o.prefix_cache_entries = 4;
  Start(o);
  const std::vector<int32_t> system = Tokens(32, 100);
  auto a = MakeSeq(1, Concat(system, Tokens(4, 500)), 3);
  auto b = MakeSeq(2, Concat(system, Tokens(40, 600)), 3);  // waits for a's first step
  auto c = MakeSeq(3, Tokens(60, 700), 3);
  auto d = MakeSeq(4, Tokens(50, 800), 3);
  const std::vector<Outcome> out = RunToEnd({a, b, c, d});
  ASSERT_FALSE(HasFailure());
  EXPECT_EQ(out[1].tokens, FakeGreedy(b->prompt(), 3));
  EXPECT_EQ(out[2].tokens, FakeGreedy(c->prompt(), 3));
  EXPECT_EQ(out[3].tokens, FakeGreedy(d->prompt(), 3));
  ExpectWithinPrefillBudget(group_->steps(), o.max_prefill_tokens);
  EXPECT_EQ(FirstStep(group_->steps(), 2).prefix_from(), 1u) << "b still starts from a";
}

// Sequences 1 .. count of 20 prompt tokens and 30 to generate: 50 positions each in the end.
std::vector<std::shared_ptr<Sequence>> Of50Positions(int count) {
  std::vector<std::shared_ptr<Sequence>> seqs;
  for (uint64_t id = 1; id <= static_cast<uint64_t>(count); ++id) {
    seqs.push_back(MakeSeq(id, Tokens(20, static_cast<int32_t>(100 * id)), 30));
  }
  return seqs;
}

TEST_F(SchedulerTest, TheKvBudgetHoldsBackWhatDoesNotFit) {
  // The group reports room for 100 positions; each sequence may take 20 + 30, reserved at
  // admission.
  SchedulerOptions o = Options();
  o.preemption = Preemption::kOff;
  Start(o, /*kv_capacity=*/100);
  const std::vector<std::shared_ptr<Sequence>> seqs = Of50Positions(3);
  const std::vector<Outcome> out = RunToEnd(seqs);
  ASSERT_FALSE(HasFailure());
  for (size_t i = 0; i < seqs.size(); ++i) {
    EXPECT_EQ(out[i].tokens, FakeGreedy(seqs[i]->prompt(), 30));
  }
  EXPECT_EQ(scheduler_->kv_budget(), 100);
  EXPECT_LE(group_->peak_positions(), 100);
  const std::vector<v1::StepRequest> steps = group_->steps();
  const auto first = StepsOf(steps, 1);
  const auto third = StepsOf(steps, 3);
  ASSERT_FALSE(first.empty() || third.empty());
  EXPECT_EQ(FirstStepIndex(steps, 2), 0) << "two fit at once";
  EXPECT_GT(third.front().first, first.back().first) << "the third waits for room";
}

// With preemption, admission counts what sequences hold: all three start at once. When they
// outgrow the 100 positions the last admitted is preempted (released, back to the queue) and
// later prefilled again, prompt and tokens, sampling on: every output is its solo run's.
TEST_F(SchedulerTest, PreemptedSequencesArePrefilledAgainAndGoOnWhereTheyWere) {
  Start(Options(), /*kv_capacity=*/100);
  const std::vector<std::shared_ptr<Sequence>> seqs = Of50Positions(3);
  const std::vector<Outcome> out = RunToEnd(seqs);
  ASSERT_FALSE(HasFailure());
  for (size_t i = 0; i < seqs.size(); ++i) {
    EXPECT_EQ(out[i].tokens, FakeGreedy(seqs[i]->prompt(), 30)) << "sequence " << i + 1;
  }
  EXPECT_LE(group_->peak_positions(), 100);
  const std::vector<v1::StepRequest> steps = group_->steps();
  EXPECT_EQ(FirstStepIndex(steps, 3), 0) << "all three fit at first";
  EXPECT_GE(scheduler_->preemptions(), 1u);
  EXPECT_EQ(seqs[2]->preemptions(), static_cast<int32_t>(scheduler_->preemptions()))
      << "the last admitted goes first";
  EXPECT_EQ(seqs[0]->preemptions(), 0);
  // Its steps after the first: decodes of one token, and one prefill again of the prompt and
  // the k tokens it had, which brings the sampling parameters and samples token k.
  const auto third = StepsOf(steps, 3);
  int resumes = 0;
  for (size_t j = 1; j < third.size(); ++j) {
    const v1::SeqStep& step = third[j].second;
    if (step.token_ids_size() == 1 && !step.has_sampling()) continue;
    ++resumes;
    const int k = step.sample_index();
    ASSERT_GE(k, 1);
    std::vector<int32_t> expected = seqs[2]->prompt();
    const std::vector<int32_t> generated = FakeGreedy(seqs[2]->prompt(), k);
    expected.insert(expected.end(), generated.begin(), generated.end());
    EXPECT_THAT(step.token_ids(), ::testing::ElementsAreArray(expected));
    EXPECT_TRUE(step.has_sampling());
    EXPECT_FALSE(step.prefill_only());
  }
  EXPECT_EQ(resumes, seqs[2]->preemptions());
  // Usage counts the prompt once.
  EXPECT_EQ(out[2].responses.back().usage().prompt_tokens(), 20);
  EXPECT_EQ(out[2].responses.back().usage().completion_tokens(), 30);
  AwaitIdle();
  EXPECT_EQ(scheduler_->kv_reserved(), 0);
}

// A preempted sequence that scored its prompt (echo with logprobs) is not scored again: the
// prompt's scores arrive once, for every token after the first.
TEST_F(SchedulerTest, APreemptedScoredPromptIsScoredOnce) {
  Start(Options(), /*kv_capacity=*/60);
  GenerationParams scored;
  scored.prompt_logprobs = true;
  auto first = MakeSeq(1, Tokens(20, 100), 20);
  auto second = MakeSeq(2, Tokens(12, 200), 20, scored);
  const std::vector<Outcome> out = RunToEnd({first, second});
  ASSERT_FALSE(HasFailure());
  EXPECT_EQ(out[0].tokens, FakeGreedy(first->prompt(), 20));
  EXPECT_EQ(out[1].tokens, FakeGreedy(second->prompt(), 20));
  ASSERT_GE(second->preemptions(), 1);
  for (const auto& [index, step] : StepsOf(group_->steps(), 2)) {
    if (step.prompt_logprobs()) {
      EXPECT_EQ(step.sample_index(), 0) << "scored again";
    }
  }
  ASSERT_FALSE(out[1].responses.empty());
  const v1::GenerateResponse& with_prompt = out[1].responses.front();
  ASSERT_EQ(with_prompt.prompt_tokens_size(), 12);
  for (int k = 1; k < 12; ++k) {
    EXPECT_FLOAT_EQ(with_prompt.prompt_tokens(k).logprob(), FakePromptLogprob(k)) << k;
  }
}

// A prompt rank 0 could not score (NaN: the model's logits there are not finite) fails its
// request with INTERNAL naming the token, instead of a null logprob in a client's JSON; the
// other sequence of the step goes on.
TEST_F(SchedulerTest, AnUnscorablePromptFailsItsRequestAlone) {
  Start(Options());
  GenerationParams scored;
  scored.prompt_logprobs = true;
  auto plain = MakeSeq(1, Tokens(6, 100), 4);
  auto bad = MakeSeq(2, Tokens(6, 200), 4, scored);
  group_->ScoreNaN(1);
  const std::vector<std::shared_ptr<Sequence>> both = {plain, bad};
  ASSERT_TRUE(scheduler_->EnqueueAll(both).ok());
  scheduler_->Start();
  const std::vector<Outcome> out = {Await(*plain), Await(*bad)};
  ASSERT_TRUE(out[0].status.ok()) << out[0].status;
  EXPECT_EQ(out[0].tokens, FakeGreedy(plain->prompt(), 4));
  EXPECT_EQ(out[1].status.code(), absl::StatusCode::kInternal) << out[1].status;
  EXPECT_THAT(std::string(out[1].status.message()),
              ::testing::HasSubstr("logits before prompt token 1 are not finite"));
  EXPECT_TRUE(group_->violations().empty());
}

// Preemption frees parked sequences' room first, and a sequence that fits alone is never
// preempted: the one left runs on.
TEST_F(SchedulerTest, PreemptionNeverTakesTheLastRunningSequence) {
  SchedulerOptions o = Options();
  o.kv_budget_tokens = 30;  // the group itself holds more: the budget is what binds
  Start(o, /*kv_capacity=*/1000);
  auto seq = MakeSeq(1, Tokens(10, 100), 40);  // grows to 50 positions alone
  const std::vector<Outcome> out = RunToEnd({seq});
  ASSERT_FALSE(HasFailure());
  EXPECT_EQ(out[0].tokens, FakeGreedy(seq->prompt(), 40));
  EXPECT_EQ(scheduler_->preemptions(), 0u);
}

// A first choice and its later choice, preempted around a long prompt that takes the prefill
// budget, both finish. A review found them waiting on each other when generating sequences were
// preempted first (the first choice came back behind the choice, which waited for its prefill
// while it waited for the choice's); now the last admitted goes first, preempted sequences come
// back in the order they arrived, and a choice waits only for a first choice ahead of it.
TEST_F(SchedulerTest, AFirstChoiceAndItsLaterChoicePreemptedAroundALongPromptBothFinish) {
  SchedulerOptions o = Options();
  o.prefix_cache_entries = 4;
  o.max_prefill_tokens = 20;
  o.prefill_chunk = 20;
  o.kv_budget_tokens = 142;
  Start(o, /*kv_capacity=*/1000);
  const std::vector<int32_t> prompt = Tokens(20, 100);
  auto a = MakeSeq(1, prompt, 30);
  auto y = MakeSeq(2, Tokens(100, 500), 1);
  auto b = MakeSeq(3, prompt, 30);
  b->set_prefix_source(a);
  const std::vector<Outcome> out = RunToEnd({a, y, b});
  ASSERT_FALSE(HasFailure());
  EXPECT_EQ(out[0].tokens, FakeGreedy(prompt, 30));
  EXPECT_EQ(out[2].tokens, FakeGreedy(prompt, 30));
}

// A prompt prefilled in chunks is admitted only when the running sequences' growth over its
// prefill leaves it room: admitted as soon as the next step's growth fits, it was preempted
// after two chunks (the latest admitted goes first) and its prefill thrown away.
TEST_F(SchedulerTest, AChunkedPrefillIsNotAdmittedToBePreemptedBeforeItEnds) {
  SchedulerOptions o = Options();
  o.max_prefill_tokens = 16;
  o.prefill_chunk = 8;
  o.kv_budget_tokens = 100;
  Start(o, /*kv_capacity=*/1000);
  auto a = MakeSeq(1, Tokens(20, 100), 30);
  auto b = MakeSeq(2, Tokens(20, 200), 30);
  auto x = MakeSeq(3, Tokens(40, 300), 4);
  // At step 11 a and b hold 28 positions each: 56 + x's 40 + this step's 2 fit in 100, but
  // its 5 chunks' growth (10) does not.
  group_->BeforeStep(11, [&] { ASSERT_TRUE(scheduler_->Enqueue(x).ok()); });
  const std::vector<Outcome> out = RunToEnd({a, b});
  ASSERT_FALSE(HasFailure());
  const Outcome late = Await(*x);
  ASSERT_TRUE(late.status.ok()) << late.status;
  EXPECT_EQ(late.tokens, FakeGreedy(x->prompt(), 4));
  EXPECT_EQ(out[0].tokens, FakeGreedy(a->prompt(), 30));
  EXPECT_EQ(out[1].tokens, FakeGreedy(b->prompt(), 30));
  EXPECT_EQ(x->preemptions(), 0);
  EXPECT_EQ(scheduler_->preemptions(), 0u);
}

// A group that drains (a worker shutting down) admits nothing new, but takes back what it
// preempted: the preempted stream finishes on it.
TEST_F(SchedulerTest, ADrainingGroupTakesBackWhatItPreempted) {
  SchedulerOptions o = Options();
  o.kv_budget_tokens = 60;
  Start(o, /*kv_capacity=*/1000);
  const std::vector<std::shared_ptr<Sequence>> both = Of50Positions(2);
  const std::shared_ptr<Sequence>& a = both[0];
  const std::shared_ptr<Sequence>& b = both[1];
  FakeStepGroup* group = group_.get();
  group_->BeforeStep(2, [group] { group->Drain(); });
  const std::vector<Outcome> out = RunToEnd({a, b});
  ASSERT_FALSE(HasFailure());
  EXPECT_EQ(out[0].tokens, FakeGreedy(a->prompt(), 30));
  EXPECT_EQ(out[1].tokens, FakeGreedy(b->prompt(), 30));
  EXPECT_GE(b->preemptions(), 1);
}

// A preempted sequence admitted again is in no step yet when the group is lost (the release
// of the parked sequence that made its room fails): it waits for the next group as it waited in
// the queue, and goes on there where it was.
TEST_F(SchedulerTest, APreemptedSequenceAdmittedAgainWaitsOutALostGroup) {
  SchedulerOptions o = Options();
  o.prefix_cache_entries = 4;
  o.kv_budget_tokens = 70;
  Start(o, /*kv_capacity=*/1000);
  const std::vector<std::shared_ptr<Sequence>> both = Of50Positions(2);
  const std::shared_ptr<Sequence>& a = both[0];
  const std::shared_ptr<Sequence>& b = both[1];
  // b is preempted after 16 tokens (40 + 2 x 16 > 70); a then runs alone to its end and is
  // parked (49 positions, 64 in whole granules), and b's admission (36 more) evicts it: that
  // release fails.
  FakeStepGroup* group = group_.get();
  group_->BeforeStep(26, [group] { group->FailNextRelease(); });
  ASSERT_TRUE(scheduler_->EnqueueAll(both).ok());
  scheduler_->Start();
  const Outcome first = Await(*a);
  ASSERT_TRUE(first.status.ok()) << first.status;
  const absl::Time deadline = absl::Now() + absl::Seconds(5);
  while (group_->ready() && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(5));
  ASSERT_FALSE(group_->ready()) << "the eviction's release never failed";
  EXPECT_GE(b->preemptions(), 1);
  group_->Reform();
  const Outcome second = Await(*b);
  ASSERT_TRUE(second.status.ok()) << second.status;
  EXPECT_EQ(second.tokens, FakeGreedy(b->prompt(), 30));
  EXPECT_EQ(first.tokens, FakeGreedy(a->prompt(), 30));
}

// Preempted sequences wait beyond the queue's capacity: new requests still find their places.
TEST_F(SchedulerTest, PreemptedSequencesTakeNoPlaceInTheQueue) {
  SchedulerOptions o = Options();
  o.kv_budget_tokens = 60;
  o.queue_capacity = 2;
  Start(o, /*kv_capacity=*/1000);
  const std::vector<std::shared_ptr<Sequence>> both = Of50Positions(2);
  const std::shared_ptr<Sequence>& a = both[0];
  const std::shared_ptr<Sequence>& b = both[1];
  auto c = MakeSeq(3, Tokens(4, 500), 2);
  auto d = MakeSeq(4, Tokens(4, 600), 2);
  // b is preempted after 11 tokens (40 + 2 x 11 > 60) and waits while a runs alone.
  absl::Status later = absl::UnknownError("not sent");
  int queued_then = -1;
  Scheduler* scheduler = scheduler_.get();
  group_->BeforeStep(20, [&, scheduler] {
    queued_then = scheduler->queued();
    const std::vector<std::shared_ptr<Sequence>> two = {c, d};
    later = scheduler->EnqueueAll(two);
  });
  const std::vector<Outcome> out = RunToEnd({a, b});
  ASSERT_FALSE(HasFailure());
  EXPECT_EQ(queued_then, 1) << "b waits in the queue";
  EXPECT_TRUE(later.ok()) << later;
  EXPECT_EQ(Await(*c).tokens, FakeGreedy(c->prompt(), 2));
  EXPECT_EQ(Await(*d).tokens, FakeGreedy(d->prompt(), 2));
  EXPECT_EQ(out[1].tokens, FakeGreedy(b->prompt(), 30));
}

TEST_F(SchedulerTest, PromptsBeingScoredGoInScoreChunks) {
  SchedulerOptions o = Options();
  o.score_chunk = 16;
  Start(o);
  GenerationParams p;
  p.prompt_logprobs = true;
  auto seq = MakeSeq(1, Tokens(40, 100), 1, p);
  const std::vector<Outcome> outs = RunToEnd({seq});
  ASSERT_FALSE(HasFailure());
  const Outcome& out = outs[0];
  const auto steps = StepsOf(group_->steps(), 1);
  ASSERT_EQ(steps.size(), 3u);
  EXPECT_EQ(steps[0].second.token_ids_size(), 16);
  EXPECT_EQ(steps[0].second.next_prompt_token(), 116);
  EXPECT_EQ(steps[1].second.token_ids_size(), 16);
  EXPECT_EQ(steps[2].second.token_ids_size(), 8);
  EXPECT_FALSE(steps[2].second.has_next_prompt_token());
  // Every prompt token after the first is scored, each with its own position's score.
  ASSERT_FALSE(out.responses.empty());
  const v1::GenerateResponse& first = out.responses.front();
  ASSERT_EQ(first.prompt_tokens_size(), 40);
  EXPECT_FALSE(first.prompt_tokens(0).has_logprob());
  for (int k = 1; k < 40; ++k) {
    EXPECT_EQ(first.prompt_tokens(k).logprob(), FakePromptLogprob(k)) << "prompt token " << k;
  }
}

TEST_F(SchedulerTest, LaterChoicesOfAPromptCopyTheFirstChoicesPrefill) {
  Start(Options());  // works with the prefix cache off too
  const std::vector<int32_t> prompt = Tokens(20, 100);
  auto c0 = MakeSeq(1, prompt, 4);
  auto c1 = MakeSeq(2, prompt, 4);
  c1->set_prefix_source(c0);
  const std::vector<Outcome> out = RunToEnd({c0, c1});
  ASSERT_FALSE(HasFailure());
  const Outcome& out1 = out[1];
  EXPECT_EQ(out1.tokens, out[0].tokens);  // the fake samples greedily
  const std::vector<v1::StepRequest> steps = group_->steps();
  const auto s1 = StepsOf(steps, 2);
  ASSERT_FALSE(s1.empty());
  EXPECT_EQ(s1[0].first, 1u) << "choice 1 waits for choice 0 to sample";
  EXPECT_EQ(s1[0].second.prefix_from(), 1u);
  EXPECT_EQ(s1[0].second.prefix_length(), 19);
  EXPECT_EQ(s1[0].second.token_ids_size(), 1);
  EXPECT_EQ(out1.responses.back().usage().cached_prompt_tokens(), 19);
}

// With the prefix cache off, a first choice that ends at its first token (max_tokens 1, or an
// early EOS) stays on the workers until the later choices have copied its prompt.
TEST_F(SchedulerTest, LaterChoicesCopyTheFirstEvenWhenItEndsAtItsFirstToken) {
  Start(Options());  // prefix cache off
  const std::vector<int32_t> prompt = Tokens(20, 100);
  auto c0 = MakeSeq(1, prompt, 1);
  auto c1 = MakeSeq(2, prompt, 1);
  auto c2 = MakeSeq(3, prompt, 2);
  c1->set_prefix_source(c0);
  c2->set_prefix_source(c0);
  const std::vector<Outcome> out = RunToEnd({c0, c1, c2});
  ASSERT_FALSE(HasFailure());
  EXPECT_EQ(out[1].tokens, FakeGreedy(prompt, 1));
  EXPECT_EQ(out[2].tokens, FakeGreedy(prompt, 2));
  for (uint64_t id : {2, 3}) {
    const v1::SeqStep first = FirstStep(group_->steps(), id);
    EXPECT_EQ(first.prefix_from(), 1u) << id;
    EXPECT_EQ(first.prefix_length(), 19) << id;
    EXPECT_EQ(first.token_ids_size(), 1) << id;
  }
  AwaitIdle();
  EXPECT_TRUE(group_->held().empty()) << "the first choice goes once the others copied it";
  EXPECT_EQ(scheduler_->kv_reserved(), 0);
}

// Parked sequences hold whole KV granules (16 positions): more than the 19 positions each of
// these reserved while it ran. The budget holds them all the same.
TEST_F(SchedulerTest, ParkedPositionsStayWithinTheKvBudget) {
  SchedulerOptions o = Options();
  o.prefix_cache_entries = 4;
  o.kv_budget_tokens = 40;
  Start(o);
  auto a = MakeSeq(1, Tokens(17, 100), 2);
  auto b = MakeSeq(2, Tokens(17, 300), 2);
  RunToEnd({a, b});
  ASSERT_FALSE(HasFailure());
  AwaitIdle();
  EXPECT_EQ(scheduler_->prefix_cached_sequences(), 1);
  EXPECT_LE(scheduler_->kv_reserved() + scheduler_->prefix_cached_positions(),
            scheduler_->kv_budget());
}

TEST_F(SchedulerTest, APromptStartsFromAParkedSequencesCache) {
  SchedulerOptions o = Options();
  o.prefix_cache_entries = 4;
  Start(o);
  const std::vector<int32_t> shared = Tokens(35, 100);
  auto a = MakeSeq(1, Concat(shared, Tokens(5, 500)), 4);
  ASSERT_TRUE(scheduler_->Enqueue(a).ok());
  scheduler_->Start();
  ASSERT_TRUE(Await(*a).status.ok());
  AwaitIdle();
  EXPECT_EQ(scheduler_->prefix_cached_sequences(), 1);
  EXPECT_EQ(group_->held().count(1), 1u) << "a stays on the workers, parked";

  auto b = MakeSeq(2, Concat(shared, Tokens(5, 600)), 4);  // starts like a
  auto again = MakeSeq(3, a->prompt(), 4);                 // a's prompt again
  ASSERT_TRUE(scheduler_->Enqueue(b).ok());
  const Outcome out_b = Await(*b);
  ASSERT_TRUE(out_b.status.ok()) << out_b.status;
  EXPECT_EQ(out_b.tokens, FakeGreedy(b->prompt(), 4)) << "as if prefilled whole";
  ASSERT_TRUE(scheduler_->Enqueue(again).ok());
  const Outcome out_again = Await(*again);
  ASSERT_TRUE(out_again.status.ok()) << out_again.status;
  EXPECT_EQ(out_again.tokens, FakeGreedy(a->prompt(), 4));

  const std::vector<v1::StepRequest> steps = group_->steps();
  const v1::SeqStep& b_first = FirstStep(steps, 2);
  EXPECT_EQ(b_first.prefix_from(), 1u);
  EXPECT_EQ(b_first.prefix_length(), 35);
  EXPECT_EQ(b_first.token_ids_size(), 5);
  const v1::SeqStep& again_first = FirstStep(steps, 3);
  EXPECT_EQ(again_first.prefix_length(), 39) << "all but the prompt's last token";
  EXPECT_EQ(again_first.token_ids_size(), 1);
  EXPECT_EQ(scheduler_->prefix_hit_tokens(), 35u + 39u);
  AwaitIdle();
  EXPECT_EQ(group_->held().size(), 3u) << "every finished sequence parked, nothing leaked";
  EXPECT_EQ(scheduler_->prefix_cached_sequences(), 3);
}

TEST_F(SchedulerTest, ParkedSequencesGiveBackTheirRoomLeastRecentlyUsedFirst) {
  SchedulerOptions o = Options();
  o.prefix_cache_entries = 8;
  Start(o, /*kv_capacity=*/128);
  // Each takes 40 + 8 positions while running and parks 47 (48 counted, in granules of 16).
  auto a = MakeSeq(1, Tokens(40, 100), 8);
  auto b = MakeSeq(2, Tokens(40, 200), 8);
  scheduler_->Start();
  for (auto& seq : {a, b}) {
    ASSERT_TRUE(scheduler_->Enqueue(seq).ok());
    ASSERT_TRUE(Await(*seq).status.ok());
  }
  AwaitIdle();
  ASSERT_EQ(scheduler_->prefix_cached_sequences(), 2);
  // A prompt starting like a (the older) needs 48 + 8 positions: b goes, a stays.
  auto c = MakeSeq(3, Concat(Tokens(40, 100), Tokens(8, 700)), 8);
  ASSERT_TRUE(scheduler_->Enqueue(c).ok());
  const Outcome out = Await(*c);
  ASSERT_TRUE(out.status.ok()) << out.status;
  EXPECT_EQ(out.tokens, FakeGreedy(c->prompt(), 8));
  EXPECT_EQ(FirstStep(group_->steps(), 3).prefix_from(), 1u);
  EXPECT_LE(group_->peak_positions(), 128);
  AwaitIdle();
  EXPECT_EQ(group_->held().count(2), 0u) << "b was evicted and released";
  EXPECT_EQ(group_->held().count(1), 1u);
}

TEST_F(SchedulerTest, PromptsArrivingTogetherWaitForTheOneAheadToPrefillTheirStart) {
  SchedulerOptions o = Options();
  o.prefix_cache_entries = 4;
  Start(o);
  const std::vector<int32_t> system = Tokens(32, 100);
  auto a = MakeSeq(1, Concat(system, Tokens(4, 500)), 3);
  auto b = MakeSeq(2, Concat(system, Tokens(4, 600)), 3);
  const std::vector<Outcome> out = RunToEnd({a, b});
  ASSERT_FALSE(HasFailure());
  EXPECT_EQ(out[1].tokens, FakeGreedy(b->prompt(), 3));
  const auto b_steps = StepsOf(group_->steps(), 2);
  ASSERT_FALSE(b_steps.empty());
  EXPECT_EQ(b_steps[0].first, 1u) << "b waits a step";
  EXPECT_EQ(b_steps[0].second.prefix_from(), 1u) << "then copies from a, still running";
  EXPECT_EQ(b_steps[0].second.prefix_length(), 32);
}

TEST_F(SchedulerTest, ALostWorkerFailsTheRunningAndTheQueuedAreServedByTheNewGroup) {
  SchedulerOptions o = Options();
  o.max_batch = 1;
  const std::vector<int32_t> prompt = Tokens(30, 100);
  ASSERT_NO_FATAL_FAILURE(StartWithAParkedSequence(o, prompt));

  const int next_step = static_cast<int>(group_->steps().size()) + 1;
  group_->FailStep(next_step + 2, absl::UnavailableError("worker 1 is gone"), /*breaks=*/true);
  auto running = MakeSeq(2, Tokens(10, 300), 50);
  auto queued = MakeSeq(3, prompt, 3);  // would have started from the parked sequence
  ASSERT_TRUE(scheduler_->EnqueueAll({{running, queued}}).ok());
  const Outcome lost = Await(*running);
  EXPECT_EQ(lost.status.code(), absl::StatusCode::kUnavailable) << lost.status;
  EXPECT_EQ(lost.tokens.size(), 2u) << "the two steps before the loss";
  AwaitIdle();
  EXPECT_EQ(scheduler_->prefix_cached_sequences(), 0) << "parked sequences went with the group";

  absl::SleepFor(absl::Milliseconds(200));
  EXPECT_EQ(scheduler_->queued(), 1) << "the queued request waits for the group";
  group_->Reform();
  const Outcome served = Await(*queued);
  ASSERT_TRUE(served.status.ok()) << served.status;
  EXPECT_EQ(served.tokens, FakeGreedy(prompt, 3));
  const v1::SeqStep& first = FirstStep(group_->steps(), 3);
  EXPECT_EQ(first.prefix_length(), 0) << "nothing of the old group is copied";
  EXPECT_EQ(first.token_ids_size(), 30);
}

// With resume_on_group_loss a running sequence outlives its group: preempted when the group
// is lost, it waits for the next one and is prefilled again (prompt and output so far), and
// its output is the one it would have had. A sequence still queued is served as before.
TEST_F(SchedulerTest, WithResumeARunningSequenceGoesOnInTheNextGroup) {
  SchedulerOptions o = Options();
  o.resume_on_group_loss = absl::Seconds(10);
  Start(o);
  auto running = MakeSeq(1, Tokens(10, 300), 20);
  group_->FailStep(4, absl::UnavailableError("worker 1 is gone"), /*breaks=*/true);
  ASSERT_TRUE(scheduler_->Enqueue(running).ok());
  scheduler_->Start();
  ASSERT_TRUE(AwaitGroupLoss(1)) << "it waits for the group";
  group_->Reform();
  const Outcome out = Await(*running);
  ASSERT_TRUE(out.status.ok()) << out.status;
  EXPECT_EQ(out.tokens, FakeGreedy(running->prompt(), 20));
  EXPECT_EQ(running->preemptions(), 1);
  EXPECT_EQ(scheduler_->preemptions(), 1u);
  // In the new group its first step prefills the prompt and the 3 tokens it had (steps 1-3
  // ran), and samples token 4.
  const auto steps = StepsOf(group_->steps(), 1);
  ASSERT_GE(steps.size(), 5u);
  const v1::SeqStep& again = steps[4].second;  // after steps 1-3 and the lost step 4
  std::vector<int32_t> input = running->prompt();
  const std::vector<int32_t> had = FakeGreedy(running->prompt(), 3);
  input.insert(input.end(), had.begin(), had.end());
  EXPECT_THAT(again.token_ids(), ::testing::ElementsAreArray(input));
  EXPECT_EQ(again.sample_index(), 3);
}

// A group that does not re-form within resume_on_group_loss: the waiting sequence fails
// UNAVAILABLE, saying so.
TEST_F(SchedulerTest, WithResumeASequenceWhoseGroupStaysLostFailsAfterTheWait) {
  SchedulerOptions o = Options();
  o.resume_on_group_loss = absl::Milliseconds(200);
  Start(o);
  auto running = MakeSeq(1, Tokens(10, 300), 20);
  group_->FailStep(3, absl::UnavailableError("worker 1 is gone"), /*breaks=*/true);
  ASSERT_TRUE(scheduler_->Enqueue(running).ok());
  scheduler_->Start();
  const Outcome out = Await(*running);
  EXPECT_EQ(out.status.code(), absl::StatusCode::kUnavailable) << out.status;
  EXPECT_THAT(out.status.message(), ::testing::HasSubstr("--resume_on_group_loss=200ms"));
  EXPECT_EQ(out.tokens.size(), 2u) << "the two steps before the loss";
  EXPECT_EQ(scheduler_->queued(), 0);
}

// A sequence is resumed again only once it generated a token since: one whose step breaks the
// next group too fails then (UNAVAILABLE) instead of breaking every group that forms.
TEST_F(SchedulerTest, WithResumeASequenceWhoseStepsBreakEveryGroupFails) {
  SchedulerOptions o = Options();
  o.resume_on_group_loss = absl::Seconds(10);
  // Steps 1 and 2 give tokens 1 and 2; step 3 is lost, and step 4, its prefill again, too.
  ASSERT_NO_FATAL_FAILURE(ResumedOnceThenFailed(o, 3, 4));
}

// What re-arms a resume is a token generated, not a step that ran: a chunk of the prefill
// again that runs before the next loss does not let the stream be resumed again.
TEST_F(SchedulerTest, WithResumeAChunkOfThePrefillAgainIsNoProgress) {
  SchedulerOptions o = Options();
  o.resume_on_group_loss = absl::Seconds(10);
  o.prefill_chunk = 8;
  // Steps 1-2 prefill the 10-token prompt (8 + 2, the second samples token 1), step 3 samples
  // token 2, step 4 is lost; again, step 5 prefills 8 of the 12 tokens and step 6 is lost.
  ASSERT_NO_FATAL_FAILURE(ResumedOnceThenFailed(o, 4, 6));
  const auto steps = StepsOf(group_->steps(), 1);
  ASSERT_EQ(steps.size(), 6u);
  EXPECT_EQ(steps[4].second.token_ids_size(), 8) << "a chunk of the prefill again ran";
}

TEST_F(SchedulerTest, ADrainingGroupFinishesItsRunningAndAdmitsNothingUntilItReforms) {
  const std::vector<int32_t> prompt = Tokens(30, 100);
  ASSERT_NO_FATAL_FAILURE(StartWithAParkedSequence(Options(), prompt));

  // A member starts shutting down two steps into a long sequence; a request comes meanwhile.
  const int next_step = static_cast<int>(group_->steps().size()) + 1;
  auto running = MakeSeq(2, Tokens(10, 300), 20);
  auto queued = MakeSeq(3, prompt, 3);
  group_->BeforeStep(next_step + 2, [&] {
    group_->Drain();
    ASSERT_TRUE(scheduler_->Enqueue(queued).ok());
  });
  ASSERT_TRUE(scheduler_->Enqueue(running).ok());
  const Outcome finished = Await(*running);
  ASSERT_TRUE(finished.status.ok()) << finished.status;
  EXPECT_EQ(finished.tokens, FakeGreedy(Tokens(10, 300), 20)) << "served to its end";
  AwaitIdle();
  // The group is left empty, so the member can go: nothing parked, the queued one not started.
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (!group_->held().empty() && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(5));
  EXPECT_TRUE(group_->held().empty());
  EXPECT_EQ(scheduler_->prefix_cached_sequences(), 0);
  EXPECT_EQ(scheduler_->queued(), 1);
  EXPECT_TRUE(StepsOf(group_->steps(), 3).empty()) << "the queued request went to the group";

  group_->Break();  // the member has gone
  group_->Reform();
  const Outcome served = Await(*queued);
  ASSERT_TRUE(served.status.ok()) << served.status;
  EXPECT_EQ(served.tokens, FakeGreedy(prompt, 3));
}

TEST_F(SchedulerTest, AReleaseThatFailsFailsTheRunningAndTheNewGroupServesTheRest) {
  SchedulerOptions o = Options();
  o.max_batch = 2;
  Start(o);
  auto short_one = MakeSeq(1, Tokens(5, 100), 2);
  auto long_one = MakeSeq(2, Tokens(5, 200), 50);
  auto queued = MakeSeq(3, Tokens(5, 300), 3);
  group_->FailNextRelease();  // the release of short_one, after its last step
  ASSERT_TRUE(scheduler_->EnqueueAll({{short_one, long_one, queued}}).ok());
  scheduler_->Start();
  const Outcome done = Await(*short_one);
  EXPECT_TRUE(done.status.ok()) << "it had finished: " << done.status;
  const Outcome lost = Await(*long_one);
  EXPECT_EQ(lost.status.code(), absl::StatusCode::kUnavailable) << lost.status;
  EXPECT_LT(lost.tokens.size(), 50u);
  AwaitIdle();
  EXPECT_EQ(scheduler_->queued(), 1) << "the queued request waits for the group";
  group_->Reform();
  const Outcome served = Await(*queued);
  ASSERT_TRUE(served.status.ok()) << served.status;
  EXPECT_EQ(served.tokens, FakeGreedy(queued->prompt(), 3));
}

// The release of a sequence cancelled while it waited (outside the step) fails: the running
// one fails, and the queued request waits for the re-formed group, not admitted into a broken
// one.
TEST_F(SchedulerTest, AFailedReleaseOfACancelledSequenceLeavesTheQueuedWaiting) {
  SchedulerOptions o = Options();
  o.max_batch = 2;
  o.prefix_cache_entries = 4;
  Start(o);
  const std::vector<int32_t> system = Tokens(32, 100);
  auto a = MakeSeq(1, Concat(system, Tokens(4, 500)), 20);
  auto b = MakeSeq(2, Concat(system, Tokens(4, 600)), 20);  // waits a step for a's prefill
  auto queued = MakeSeq(3, Tokens(5, 300), 3);
  group_->BeforeStep(1, [this, b] {
    scheduler_->Cancel(b);
    group_->FailNextRelease();
  });
  ASSERT_TRUE(scheduler_->EnqueueAll({{a, b, queued}}).ok());
  scheduler_->Start();
  const Outcome lost = Await(*a);
  EXPECT_EQ(lost.status.code(), absl::StatusCode::kUnavailable) << lost.status;
  AwaitIdle();
  absl::SleepFor(absl::Milliseconds(200));
  EXPECT_EQ(scheduler_->queued(), 1) << "the queued request waits for the group";
  EXPECT_TRUE(StepsOf(group_->steps(), 3).empty());
  group_->Reform();
  const Outcome served = Await(*queued);
  ASSERT_TRUE(served.status.ok()) << served.status;
  EXPECT_EQ(served.tokens, FakeGreedy(queued->prompt(), 3));
}

// Admission evicts a parked sequence to make room, and that release fails: the group is lost
// before the admitted request took a step, so it goes back to the queue and is served by the
// re-formed group instead of failing.
TEST_F(SchedulerTest, ARequestAdmittedIntoAGroupLostBeforeItsFirstStepIsServedLater) {
  SchedulerOptions o = Options();
  o.kv_budget_tokens = 60;          // the parked 32 positions and a 40-position request do not fit
  o.preemption = Preemption::kOff;  // (reserved at admission: the eviction comes before its step)
  ASSERT_NO_FATAL_FAILURE(StartWithAParkedSequence(o, Tokens(30, 100)));
  group_->FailNextRelease();  // the eviction's
  auto later = MakeSeq(2, Tokens(20, 500), 20);
  ASSERT_TRUE(scheduler_->Enqueue(later).ok());
  const absl::Time deadline = absl::Now() + absl::Seconds(5);
  while (group_->ready() && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(5));
  ASSERT_FALSE(group_->ready()) << "the eviction's release never failed";
  group_->Reform();
  const Outcome out = Await(*later);
  ASSERT_TRUE(out.status.ok()) << out.status;
  EXPECT_EQ(out.tokens, FakeGreedy(later->prompt(), 20));
}

TEST_F(SchedulerTest, AGroupReformedWhileIdleForgetsItsParkedSequences) {
  const std::vector<int32_t> prompt = Tokens(30, 100);
  ASSERT_NO_FATAL_FAILURE(StartWithAParkedSequence(Options(), prompt));

  group_->Break();  // no step was running
  group_->Reform();
  auto later = MakeSeq(2, prompt, 2);
  ASSERT_TRUE(scheduler_->Enqueue(later).ok());
  const Outcome out = Await(*later);
  ASSERT_TRUE(out.status.ok()) << out.status;
  EXPECT_EQ(out.tokens, FakeGreedy(prompt, 2));
  EXPECT_EQ(FirstStep(group_->steps(), 2).prefix_length(), 0)
      << "the new group never held the parked sequence";
}

TEST_F(SchedulerTest, ABatchTheWorkersRefuseFailsItsSequencesAndTheGroupStays) {
  const std::vector<int32_t> prompt = Tokens(30, 100);
  ASSERT_NO_FATAL_FAILURE(StartWithAParkedSequence(Options(), prompt));

  // The next step starts from the parked sequence and is refused: both go.
  const int next_step = static_cast<int>(group_->steps().size()) + 1;
  group_->FailStep(next_step, absl::InvalidArgumentError("bad batch"), /*breaks=*/false);
  auto refused = MakeSeq(2, prompt, 2);
  ASSERT_TRUE(scheduler_->Enqueue(refused).ok());
  const Outcome out = Await(*refused);
  // The request was valid: the client hears of a server fault, with the workers' reason.
  EXPECT_EQ(out.status.code(), absl::StatusCode::kInternal) << out.status;
  EXPECT_THAT(std::string(out.status.message()),
              ::testing::HasSubstr("INVALID_ARGUMENT: bad batch"));
  EXPECT_EQ(FirstStep(group_->steps(), 2).prefix_from(), 1u);
  AwaitIdle();
  EXPECT_EQ(scheduler_->prefix_cached_sequences(), 0);
  EXPECT_TRUE(group_->held().empty()) << "the prefix it used was released";

  auto later = MakeSeq(3, prompt, 2);
  ASSERT_TRUE(scheduler_->Enqueue(later).ok());
  const Outcome served = Await(*later);
  ASSERT_TRUE(served.status.ok()) << served.status;
  EXPECT_EQ(served.tokens, FakeGreedy(prompt, 2));
  EXPECT_EQ(FirstStep(group_->steps(), 3).prefix_length(), 0);
}

// With preemption, a step refused for memory (the workers hold less than the budget said)
// brings the budget below what was counted, the last admitted goes back to the queue to fit
// it, and the refused sequences go again: both finish with their solo outputs.
TEST_F(SchedulerTest, AStepRefusedForMemoryLowersTheBudgetAndItsSequencesGoAgain) {
  Start(Options());
  auto a = MakeSeq(1, Tokens(8, 100), 6);
  auto b = MakeSeq(2, Tokens(8, 300), 3);
  group_->FailStep(3, absl::ResourceExhaustedError("out of memory for this batch"),
                   /*breaks=*/false);
  group_->BeforeStep(2, [&] { ASSERT_TRUE(scheduler_->Enqueue(b).ok()); });
  const std::vector<Outcome> out = RunToEnd({a});
  ASSERT_FALSE(HasFailure());
  EXPECT_EQ(out[0].tokens, FakeGreedy(a->prompt(), 6));
  const Outcome later = Await(*b);
  ASSERT_TRUE(later.status.ok()) << later.status;
  EXPECT_EQ(later.tokens, FakeGreedy(b->prompt(), 3));
  // Step 3 carried a's decode (a holds 8 + 2 then) and b's prompt: 18 counted.
  EXPECT_EQ(scheduler_->kv_budget(), 17);
  EXPECT_EQ(b->preemptions(), 0) << "b, the last admitted, went back to the queue: nothing of it "
                                    "had run, so it was not preempted (nor counted)";
  EXPECT_EQ(a->preemptions(), 0);
  const auto b_steps = StepsOf(group_->steps(), 2);
  ASSERT_GE(b_steps.size(), 2u);
  EXPECT_EQ(b_steps[0].first, 2u) << "b came in step 3 (index 2), beside a's decode";
  EXPECT_THAT(b_steps[1].second.token_ids(), ::testing::ElementsAreArray(b->prompt()))
      << "the whole prompt again";
}

// Without preemption the refused step's prompts fail, and the decodes beside them (untouched:
// a refused step changes nothing on the workers) go on.
TEST_F(SchedulerTest, WithoutPreemptionAStepRefusedForMemoryFailsItsPrompts) {
  SchedulerOptions o = Options();
  o.preemption = Preemption::kOff;
  Start(o);
  auto a = MakeSeq(1, Tokens(8, 100), 6);
  auto b = MakeSeq(2, Tokens(8, 300), 3);
  group_->FailStep(3, absl::ResourceExhaustedError("out of memory for this batch"),
                   /*breaks=*/false);
  group_->BeforeStep(2, [&] { ASSERT_TRUE(scheduler_->Enqueue(b).ok()); });
  ASSERT_TRUE(scheduler_->Enqueue(a).ok());
  scheduler_->Start();
  const Outcome first = Await(*a);
  EXPECT_TRUE(first.status.ok()) << first.status;
  EXPECT_EQ(first.tokens, FakeGreedy(a->prompt(), 6));
  const Outcome refused = Await(*b);
  EXPECT_EQ(refused.status.code(), absl::StatusCode::kResourceExhausted) << refused.status;
  const auto b_steps = StepsOf(group_->steps(), 2);
  ASSERT_EQ(b_steps.size(), 1u);
  EXPECT_EQ(b_steps[0].first, 2u) << "b came in step 3 (index 2), beside a's decode";
}

// Workers that report (or are told by --kv_budget_tokens) 400 positions but hold 100: four
// sequences of 50 outgrow them; each refusal brings the budget down and preempts, and every
// sequence finishes with its solo output. The budget stays at or above the 100 they hold
// (it comes down to one below a count the workers refused, which was over 100).
TEST_F(SchedulerTest, ABudgetAboveWhatTheWorkersHoldComesDownAndEverySequenceFinishes) {
  Start(Options(), FakeStepGroup::Options{.kv_capacity = 400, .holds = 100});
  const std::vector<std::shared_ptr<Sequence>> seqs = Of50Positions(4);
  const std::vector<Outcome> out = RunToEnd(seqs);
  ASSERT_FALSE(HasFailure());
  for (size_t i = 0; i < seqs.size(); ++i) {
    EXPECT_EQ(out[i].tokens, FakeGreedy(seqs[i]->prompt(), 30)) << "sequence " << i + 1;
  }
  EXPECT_GE(group_->refused_steps(), 1);
  EXPECT_GE(scheduler_->kv_budget(), 100);
  EXPECT_LT(scheduler_->kv_budget(), 400);
  EXPECT_GE(scheduler_->preemptions(), 1u);
  AwaitIdle();
  EXPECT_EQ(scheduler_->kv_reserved(), 0);
}

// A shortage that passes: the workers hold 100 of the 400 positions they report, and refusals
// bring the budget down; once kv_budget_recovery passed without another refusal it is back at
// 400. Refused again (the shortage lasts), it waits twice as long. Once the workers hold what
// they report, four sequences of 50 run side by side at the group's budget, none refused or
// preempted.
TEST_F(SchedulerTest, ALoweredBudgetGoesBackUpAfterTheRecoveryWaitAndTwiceAsLateAfterARefusal) {
  SchedulerOptions o = Options();
  o.kv_budget_recovery = absl::Milliseconds(400);
  Start(o, FakeStepGroup::Options{.kv_capacity = 400, .holds = 100});
  auto run = [&](uint64_t first) {
    std::vector<std::shared_ptr<Sequence>> seqs;
    for (uint64_t id = first; id < first + 4; ++id) {
      seqs.push_back(MakeSeq(id, Tokens(20, static_cast<int32_t>(100 * id)), 30));
    }
    ASSERT_TRUE(scheduler_->EnqueueAll(seqs).ok());
    for (const std::shared_ptr<Sequence>& seq : seqs) {
      const Outcome out = Await(*seq);
      ASSERT_TRUE(out.status.ok()) << "sequence " << seq->id() << ": " << out.status;
      EXPECT_EQ(out.tokens, FakeGreedy(seq->prompt(), 30)) << "sequence " << seq->id();
    }
  };
  // How long after `since` the budget is back at the group's 400 (polled).
  auto back_after = [&](absl::Time since) {
    const absl::Time give_up = absl::Now() + absl::Seconds(20);
    while (scheduler_->kv_budget() != 400 && absl::Now() < give_up) {
      absl::SleepFor(absl::Milliseconds(5));
    }
    EXPECT_EQ(scheduler_->kv_budget(), 400) << "the budget never went back up";
    return absl::Now() - since;
  };
  scheduler_->Start();
  // Every lowering comes after `start`: the budget goes back no sooner than the wait after it.
  absl::Time start = absl::Now();
  run(1);
  const int refused = group_->refused_steps();
  EXPECT_GE(refused, 1);
  EXPECT_GE(back_after(start), absl::Milliseconds(400));
  start = absl::Now();
  run(5);
  EXPECT_GT(group_->refused_steps(), refused) << "the shortage lasts: refused again";
  EXPECT_GE(back_after(start), absl::Milliseconds(800)) << "twice the wait";

  group_->SetHolds(std::nullopt);
  const int refused_before = group_->refused_steps();
  const uint64_t preempted_before = scheduler_->preemptions();
  const size_t steps_before = group_->steps().size();
  run(9);
  EXPECT_EQ(group_->refused_steps(), refused_before);
  EXPECT_EQ(scheduler_->preemptions(), preempted_before);
  EXPECT_EQ(scheduler_->kv_budget(), 400);
  const std::vector<v1::StepRequest> steps = group_->steps();
  const bool side_by_side =
      std::any_of(steps.begin() + static_cast<std::ptrdiff_t>(steps_before), steps.end(),
                  [](const v1::StepRequest& step) { return step.seqs_size() == 4; });
  EXPECT_TRUE(side_by_side) << "no step carried the four sequences";
}

// Running sequences of which the workers hold nothing (a later choice waiting for its first
// choice's prefill) do not make a refused sequence less alone: it fails at its first refusal.
TEST_F(SchedulerTest, ARefusedSequenceBesideOnlyUnstartedOnesIsAlone) {
  Start(Options(), FakeStepGroup::Options{.kv_capacity = 400, .holds = 10});
  const std::vector<int32_t> prompt = Tokens(20, 100);
  auto first = MakeSeq(1, prompt, 2);
  auto later = MakeSeq(2, prompt, 2);
  later->set_prefix_source(first);  // waits for first's prefill: not in its step
  ASSERT_TRUE(scheduler_->EnqueueAll({{first, later}}).ok());
  scheduler_->Start();
  const Outcome refused = Await(*first);
  EXPECT_EQ(refused.status.code(), absl::StatusCode::kResourceExhausted) << refused.status;
  EXPECT_EQ(StepsOf(group_->steps(), 1).size(), 1u) << "refused once, alone";
  EXPECT_EQ(Await(*later).status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(scheduler_->kv_budget(), 400);
}

// A sequence the workers cannot hold even alone: refused beside another, the budget comes
// down and it goes back to the queue; refused alone, with nothing left to make room, it fails
// (RESOURCE_EXHAUSTED, the workers' message) and the budget goes back to the group's (the
// sequence beside it was not what did not fit). The next request is served.
TEST_F(SchedulerTest, ASequenceTheWorkersCannotHoldAloneFailsAndTheBudgetComesBack) {
  Start(Options(), FakeStepGroup::Options{.kv_capacity = 400, .holds = 30});
  auto a = MakeSeq(1, Tokens(10, 100), 6);
  auto big = MakeSeq(2, Tokens(35, 200), 2);
  auto small = MakeSeq(3, Tokens(10, 300), 4);
  group_->BeforeStep(2, [&] { ASSERT_TRUE(scheduler_->Enqueue(big).ok()); });
  const std::vector<Outcome> out = RunToEnd({a});
  ASSERT_FALSE(HasFailure());
  EXPECT_EQ(out[0].tokens, FakeGreedy(a->prompt(), 6));
  const Outcome refused = Await(*big);
  EXPECT_EQ(refused.status.code(), absl::StatusCode::kResourceExhausted) << refused.status;
  EXPECT_THAT(refused.status.message(), ::testing::HasSubstr("the workers hold 30"));
  EXPECT_EQ(big->preemptions(), 0) << "refused beside a, it went back unstarted (not counted)";
  EXPECT_EQ(StepsOf(group_->steps(), 2).size(), 2u) << "beside a, then alone";
  EXPECT_EQ(scheduler_->kv_budget(), 400);
  ASSERT_TRUE(scheduler_->Enqueue(small).ok());
  const Outcome served = Await(*small);
  ASSERT_TRUE(served.status.ok()) << served.status;
  EXPECT_EQ(served.tokens, FakeGreedy(small->prompt(), 4));
}

// The last index of a step that carried sequence `id` (-1: none).
int64_t LastStepIndex(const std::vector<v1::StepRequest>& steps, uint64_t id) {
  const auto of = StepsOf(steps, id);
  return of.empty() ? -1 : static_cast<int64_t>(of.back().first);
}

// By priority, waiting requests go in priority order (lower first), first come within one.
TEST_F(SchedulerTest, ByPriorityTheLowerValueIsAdmittedFirst) {
  SchedulerOptions o = ByPriority();
  o.preemption = Preemption::kOff;  // nothing preempted: the order alone
  o.max_batch = 1;
  Start(o);
  auto a = MakeSeq(1, Tokens(10, 100), 5, WithPriority(0));
  auto b = MakeSeq(2, Tokens(10, 200), 3, WithPriority(5));
  auto c = MakeSeq(3, Tokens(10, 300), 3, WithPriority(-1));
  auto d = MakeSeq(4, Tokens(10, 400), 3, WithPriority(5));
  group_->BeforeStep(2, [&] { ASSERT_TRUE(scheduler_->EnqueueAll({{b, c, d}}).ok()); });
  const std::vector<Outcome> out = RunToEnd({a});
  ASSERT_FALSE(HasFailure());
  for (const auto& seq : {b, c, d}) {
    const Outcome o = Await(*seq);
    ASSERT_TRUE(o.status.ok()) << seq->id() << ": " << o.status;
    EXPECT_EQ(o.tokens, FakeGreedy(seq->prompt(), 3));
  }
  const std::vector<v1::StepRequest> steps = group_->steps();
  EXPECT_LT(LastStepIndex(steps, 1), FirstStepIndex(steps, 3)) << "a runs on";
  EXPECT_LT(LastStepIndex(steps, 3), FirstStepIndex(steps, 2)) << "c (-1) before b (5)";
  EXPECT_LT(LastStepIndex(steps, 2), FirstStepIndex(steps, 4)) << "b before d: first come";
}

// By priority, the step's prefill budget goes to the lower values first: a request admitted
// behind long prompts of a higher value is prefilled at once, not after them.
TEST_F(SchedulerTest, ByPriorityTheStepsPrefillBudgetGoesToTheLowerValueFirst) {
  SchedulerOptions o = ByPriority();
  o.max_prefill_tokens = 16;
  o.prefill_chunk = 8;
  Start(o, /*kv_capacity=*/1000);
  auto low1 = MakeSeq(1, Tokens(64, 100), 2, WithPriority(9));
  auto low2 = MakeSeq(2, Tokens(64, 300), 2, WithPriority(9));
  auto high = MakeSeq(3, Tokens(16, 500), 2, WithPriority(0));
  group_->BeforeStep(2, [&] { ASSERT_TRUE(scheduler_->Enqueue(high).ok()); });
  const std::vector<Outcome> out = RunToEnd({low1, low2});
  ASSERT_FALSE(HasFailure());
  const Outcome served = Await(*high);
  ASSERT_TRUE(served.status.ok()) << served.status;
  EXPECT_EQ(served.tokens, FakeGreedy(high->prompt(), 2));
  const std::vector<v1::StepRequest> steps = group_->steps();
  // Queued during step 2, admitted before step 3: its two chunks are steps 3 and 4 (index 3),
  // while the others' prefills (8 chunks each) take to step 10.
  EXPECT_EQ(FirstStepIndex(steps, 3), 2);
  EXPECT_LT(LastStepIndex(steps, 3), LastStepIndex(steps, 1));
  for (const auto& [index, step] : StepsOf(steps, 3)) {
    if (index <= 3) {
      EXPECT_EQ(step.token_ids_size(), 8) << "step " << index;
    }
  }
}

// By priority, a request that shares its prompt's start with a lower-priority one admitted
// before it does not wait for that one's prefill of the shared start (which goes after its
// own): it is ahead of it in the batch, and prefills at once.
TEST_F(SchedulerTest, ByPriorityARequestDoesNotWaitForALowerOnesPrefillOfASharedStart) {
  SchedulerOptions o = ByPriority();
  o.max_prefill_tokens = 8;
  o.prefill_chunk = 8;
  o.prefix_cache_entries = 4;
  Start(o, /*kv_capacity=*/1000);
  const std::vector<int32_t> shared = Tokens(40, 700);
  auto low = MakeSeq(1, Concat(shared, Tokens(24, 100)), 2, WithPriority(9));
  auto high = MakeSeq(2, Concat(shared, Tokens(8, 300)), 2, WithPriority(0));
  group_->BeforeStep(2, [&] { ASSERT_TRUE(scheduler_->Enqueue(high).ok()); });
  const std::vector<Outcome> out = RunToEnd({low});
  ASSERT_FALSE(HasFailure());
  const Outcome served = Await(*high);
  ASSERT_TRUE(served.status.ok()) << served.status;
  EXPECT_EQ(served.tokens, FakeGreedy(high->prompt(), 2));
  EXPECT_EQ(out[0].tokens, FakeGreedy(low->prompt(), 2));
  const std::vector<v1::StepRequest> steps = group_->steps();
  // Queued during step 2 (index 1): its 6 chunks are steps 3-8, before low's prefill (8
  // chunks, 2 of them done) goes on.
  EXPECT_EQ(FirstStepIndex(steps, 2), 2);
  EXPECT_LT(LastStepIndex(steps, 2), LastStepIndex(steps, 1));
}

// By priority with whole prompts (prefill_chunk 0), a prompt the step's budget left out has
// the next step's first: a request admitted each step ahead of it (a lower value) does not
// keep taking the room it needs. Here p waits a step for s's prefill of their common start,
// then finds the budget's remainder too small behind h; it used to wait until h6 went.
TEST_F(SchedulerTest, ByPriorityAWholePromptLeftOutOfAStepGoesInTheNext) {
  const Claim c = StartClaim(Options());
  std::vector<std::shared_ptr<Sequence>> high = {c.h};
  for (int k = 2; k <= 6; ++k) {
    high.push_back(MakeSeq(10 + k, Tokens(40, 1000 * k), 2, WithPriority(0)));
    group_->BeforeStep(k, [&, k] { ASSERT_TRUE(scheduler_->Enqueue(high[k - 1]).ok()); });
  }
  const std::vector<Outcome> out = RunToEnd({c.s, c.p});
  ASSERT_FALSE(HasFailure());
  EXPECT_EQ(out[1].tokens, FakeGreedy(c.p->prompt(), 2));
  for (const std::shared_ptr<Sequence>& h : high) {
    const Outcome served = Await(*h);
    ASSERT_TRUE(served.status.ok()) << served.status;
    EXPECT_EQ(served.tokens, FakeGreedy(h->prompt(), 2));
  }
  const std::vector<v1::StepRequest> steps = group_->steps();
  EXPECT_EQ(FirstStepIndex(steps, 2), 2) << "p: after s's step and the one h took";
  EXPECT_EQ(FirstStep(steps, 2).prefix_from(), 1u) << "p still starts from s";
  ExpectWithinPrefillBudget(steps, 64);
}

// The claim ends when its prompt waits for a prefill of their common start ahead of it: held
// back by the claim, that prefill (j, a lower value sharing 32 of p's tokens) never went, and p
// waited for it with no step ever sent again.
TEST_F(SchedulerTest, AWholePromptsClaimDoesNotHoldBackThePrefillItWaitsFor) {
  const Claim c = StartClaim(Options());
  auto j =
      MakeSeq(11, Concat(Concat(c.shared, {c.tail.begin(), c.tail.begin() + 16}), Tokens(4, 5000)),
              2, WithPriority(0));
  group_->BeforeStep(2, [&] { ASSERT_TRUE(scheduler_->Enqueue(j).ok()); });
  const std::vector<Outcome> out = RunToEnd({c.s, c.p});
  ASSERT_FALSE(HasFailure());
  EXPECT_EQ(out[1].tokens, FakeGreedy(c.p->prompt(), 2));
  for (const std::shared_ptr<Sequence>& q : {c.h, j}) {
    const Outcome served = Await(*q);
    ASSERT_TRUE(served.status.ok()) << q->id() << ": " << served.status;
    EXPECT_EQ(served.tokens, FakeGreedy(q->prompt(), 2));
  }
  const std::vector<v1::StepRequest> steps = group_->steps();
  EXPECT_LT(FirstStepIndex(steps, 11), FirstStepIndex(steps, 2)) << "j first, then p from it";
  EXPECT_EQ(FirstStep(steps, 2).prefix_from(), 11u);
}

// A scored prompt's chunks ahead of a claim leave the claimed prompt its room too: here p is
// left out by h (as above), then a scored prompt of a lower value, in chunks of 40, took the
// budget's remainder below p's 30 tokens step after step until its 200 tokens were done.
TEST_F(SchedulerTest, ScoredChunksAheadOfAClaimLeaveItsRoom) {
  SchedulerOptions o = Options();
  o.score_chunk = 40;
  const Claim c = StartClaim(o);
  GenerationParams scoring = WithPriority(0);
  scoring.prompt_logprobs = true;
  auto scored = MakeSeq(11, Tokens(200, 3000), 1, scoring);
  group_->BeforeStep(2, [&] { ASSERT_TRUE(scheduler_->Enqueue(scored).ok()); });
  const std::vector<Outcome> out = RunToEnd({c.s, c.p});
  ASSERT_FALSE(HasFailure());
  EXPECT_EQ(out[1].tokens, FakeGreedy(c.p->prompt(), 2));
  for (const std::shared_ptr<Sequence>& q : {c.h, scored}) {
    const Outcome served = Await(*q);
    ASSERT_TRUE(served.status.ok()) << q->id() << ": " << served.status;
  }
  const std::vector<v1::StepRequest> steps = group_->steps();
  EXPECT_EQ(FirstStepIndex(steps, 2), 2) << "p: the step after it was left out";
  ExpectWithinPrefillBudget(steps, 64);
}

// By priority with preemption, a request that finds no room preempts running ones of a lower
// priority, the last to arrive of the lowest first. They come back after it and end as they
// would have.
TEST_F(SchedulerTest, ByPriorityARequestPreemptsLowerOnesForABatchSlot) {
  SchedulerOptions o = ByPriority();
  o.max_batch = 2;
  Start(o);
  auto a = MakeSeq(1, Tokens(10, 100), 20, WithPriority(3));
  auto b = MakeSeq(2, Tokens(10, 200), 20, WithPriority(3));
  auto c = MakeSeq(3, Tokens(10, 300), 5, WithPriority(0));
  group_->BeforeStep(3, [&] { ASSERT_TRUE(scheduler_->Enqueue(c).ok()); });
  const std::vector<Outcome> out = RunToEnd({a, b});
  ASSERT_FALSE(HasFailure());
  EXPECT_EQ(out[0].tokens, FakeGreedy(a->prompt(), 20));
  EXPECT_EQ(out[1].tokens, FakeGreedy(b->prompt(), 20));
  const Outcome high = Await(*c);
  ASSERT_TRUE(high.status.ok()) << high.status;
  EXPECT_EQ(high.tokens, FakeGreedy(c->prompt(), 5));
  EXPECT_EQ(b->preemptions(), 1) << "the last to arrive of the lowest priority";
  EXPECT_EQ(a->preemptions(), 0);
  EXPECT_EQ(c->preemptions(), 0);
  const std::vector<v1::StepRequest> steps = group_->steps();
  EXPECT_EQ(FirstStepIndex(steps, 3), 3) << "c came in the step after the one it arrived in";
  EXPECT_LT(LastStepIndex(steps, 3), LastStepIndex(steps, 2)) << "b finishes after c";
}

// Of one priority, a sequence taken first that the request turns out not to need stays: here
// the small one that arrived last (y) does not make room alone, the large one (x) does, and y
// runs on.
TEST_F(SchedulerTest, ByPriorityOnlyTheSequencesNeededArePreempted) {
  SchedulerOptions o = ByPriority();
  o.kv_budget_tokens = 100;
  Start(o, /*kv_capacity=*/1000);
  auto x = MakeSeq(1, Tokens(50, 100), 10, WithPriority(5));
  auto y = MakeSeq(2, Tokens(4, 200), 10, WithPriority(5));
  auto h = MakeSeq(3, Tokens(50, 300), 5, WithPriority(0));
  // At step 3 x and y count 52 and 6; h needs 50 + 2 beside them: 110. Without y it would
  // still need 50 + 1 beside x's 52: 103; without x, 50 + 1 beside y's 6: 57.
  group_->BeforeStep(2, [&] { ASSERT_TRUE(scheduler_->Enqueue(h).ok()); });
  const std::vector<Outcome> out = RunToEnd({x, y});
  ASSERT_FALSE(HasFailure());
  EXPECT_EQ(out[0].tokens, FakeGreedy(x->prompt(), 10));
  EXPECT_EQ(out[1].tokens, FakeGreedy(y->prompt(), 10));
  const Outcome high = Await(*h);
  ASSERT_TRUE(high.status.ok()) << high.status;
  EXPECT_EQ(high.tokens, FakeGreedy(h->prompt(), 5));
  EXPECT_GE(x->preemptions(), 1);
  EXPECT_EQ(y->preemptions(), 0);
  EXPECT_EQ(h->preemptions(), 0);
}

// When the KV budget is what binds, the preemption before a step takes the lowest priority
// too: the request of a higher priority admitted last is not the one that goes.
TEST_F(SchedulerTest, ByPriorityTheKvBudgetPreemptsTheLowestPriorityFirst) {
  SchedulerOptions o = ByPriority();
  o.kv_budget_tokens = 60;
  Start(o, /*kv_capacity=*/1000);
  auto low = MakeSeq(1, Tokens(20, 100), 30, WithPriority(1));
  auto high = MakeSeq(2, Tokens(20, 200), 30, WithPriority(0));
  group_->BeforeStep(2, [&] { ASSERT_TRUE(scheduler_->Enqueue(high).ok()); });
  const std::vector<Outcome> out = RunToEnd({low});
  ASSERT_FALSE(HasFailure());
  EXPECT_EQ(out[0].tokens, FakeGreedy(low->prompt(), 30));
  const Outcome h = Await(*high);
  ASSERT_TRUE(h.status.ok()) << h.status;
  EXPECT_EQ(h.tokens, FakeGreedy(high->prompt(), 30));
  EXPECT_EQ(high->preemptions(), 0);
  EXPECT_GE(low->preemptions(), 1);
  const std::vector<v1::StepRequest> steps = group_->steps();
  EXPECT_LT(LastStepIndex(steps, 2), LastStepIndex(steps, 1));
}

TEST_F(SchedulerTest, AShortAnswerFailsTheBatchAndFreesEverythingTheWorkersHold) {
  ASSERT_NO_FATAL_FAILURE(StartWithAParkedSequence(Options(), Tokens(30, 100)));

  group_->AnswerShort(static_cast<int>(group_->steps().size()) + 2);
  auto a = MakeSeq(2, Tokens(5, 300), 10);
  auto b = MakeSeq(3, Tokens(5, 400), 10);
  ASSERT_TRUE(scheduler_->EnqueueAll({{a, b}}).ok());
  for (auto* seq : {a.get(), b.get()}) {
    const Outcome out = Await(*seq);
    EXPECT_EQ(out.status.code(), absl::StatusCode::kInternal) << out.status;
  }
  AwaitIdle();
  EXPECT_TRUE(group_->held().empty());
  EXPECT_EQ(scheduler_->prefix_cached_sequences(), 0);
}

// Results out of order (a worker's bug) would stream each client another request's token:
// the batch fails as a short answer's does, nothing streamed from that step, nothing held.
TEST_F(SchedulerTest, ResultsOutOfOrderFailTheBatchInsteadOfCrossingStreams) {
  Start(Options());
  auto a = MakeSeq(1, Tokens(5, 100), 10);
  auto b = MakeSeq(2, Tokens(5, 200), 10);
  group_->AnswerSwapped(3);
  ASSERT_TRUE(scheduler_->EnqueueAll({{a, b}}).ok());
  scheduler_->Start();
  for (Sequence* seq : {a.get(), b.get()}) {
    const Outcome out = Await(*seq);
    EXPECT_EQ(out.status.code(), absl::StatusCode::kInternal) << out.status;
    EXPECT_NE(out.status.message().find("rank 0 returned result 0 for sequence"),
              absl::string_view::npos)
        << out.status;
    // What streamed before the swapped step is its own.
    const std::vector<int32_t> own = FakeGreedy(seq->prompt(), 10);
    ASSERT_LT(out.tokens.size(), own.size());
    EXPECT_EQ(out.tokens, std::vector<int32_t>(own.begin(), own.begin() + out.tokens.size()));
  }
  AwaitIdle();
  EXPECT_TRUE(group_->held().empty());
}

// A token id outside the vocabulary from rank 0 (a worker's bug: it would stream as no text)
// fails its sequence with INTERNAL and frees it; the fake's ids are 10..1009.
TEST_F(SchedulerTest, ATokenIdOutsideTheVocabularyFailsItsSequence) {
  SchedulerOptions options = Options();
  options.vocab_size = 10;
  Start(options);
  auto seq = MakeSeq(1, Tokens(5, 100), 4);
  ASSERT_TRUE(scheduler_->Enqueue(seq).ok());
  scheduler_->Start();
  const Outcome out = Await(*seq);
  EXPECT_EQ(out.status.code(), absl::StatusCode::kInternal) << out.status;
  EXPECT_NE(out.status.message().find("outside the vocabulary of 10"), absl::string_view::npos)
      << out.status;
  EXPECT_TRUE(out.tokens.empty());
  AwaitIdle();
  EXPECT_TRUE(group_->held().empty());
}

TEST_F(SchedulerTest, ACancelledSequenceLeavesTheBatchAtTheNextStep) {
  Start(Options());
  auto a = MakeSeq(1, Tokens(5, 100), 100);
  auto b = MakeSeq(2, Tokens(5, 200), 12);
  group_->BeforeStep(4, [this, a] { scheduler_->Cancel(a); });
  ASSERT_TRUE(scheduler_->EnqueueAll({{a, b}}).ok());
  scheduler_->Start();
  const Outcome out_b = Await(*b);
  ASSERT_TRUE(out_b.status.ok()) << out_b.status;
  EXPECT_EQ(out_b.tokens, FakeGreedy(b->prompt(), 12)) << "b is not disturbed";
  const auto a_steps = StepsOf(group_->steps(), 1);
  ASSERT_EQ(a_steps.size(), 4u) << "the step it was cancelled in runs; no later one has it";
  AwaitIdle();
  EXPECT_TRUE(group_->held().empty());
}

TEST_F(SchedulerTest, ARefusedGroupFailsTheQueuedWithItsReason) {
  Start(Options());
  group_->Refuse(absl::FailedPreconditionError("fp16 needs 4 workers, 2 joined"));
  scheduler_->Start();
  auto seq = MakeSeq(1, Tokens(5, 100), 4);
  ASSERT_TRUE(scheduler_->Enqueue(seq).ok());
  const Outcome out = Await(*seq, absl::Seconds(5));
  EXPECT_EQ(out.status.code(), absl::StatusCode::kFailedPrecondition) << out.status;
  EXPECT_NE(out.status.message().find("fp16 needs 4 workers"), std::string::npos);
  EXPECT_TRUE(group_->steps().empty());
}

// Rank 0 sampling a token the guide rules out (a worker's bug, or one older than the
// coordinator) fails the sequence, which is released, not kept as a prefix for others.
TEST_F(SchedulerTest, ASequenceFailedByItsGuideIsReleasedNotCached) {
  auto vocab = std::make_shared<const TokenVocabulary>(
      std::vector<std::string>{"", "", "", "y", "e", "s", "n", "o"});
  SchedulerOptions options = Options();
  options.prefix_cache_entries = 8;
  Start(options, FakeStepGroup::Options{.kv_capacity = std::nullopt,
                                        .holds = std::nullopt,
                                        .token_masks = true,
                                        .ignore_masks = true});
  GenerationParams p;
  p.guided_choice = {"yes", "no"};
  auto seq = MakeSeq(1, Tokens(64, 100), 8, p);  // long enough to be kept as a prefix
  seq->set_guide(*OutputConstraint::Choice(p.guided_choice), vocab);
  const std::vector<std::shared_ptr<Sequence>> one = {seq};
  ASSERT_TRUE(scheduler_->EnqueueAll(one).ok());
  scheduler_->Start();
  const Outcome out = Await(*seq);
  EXPECT_EQ(out.status.code(), absl::StatusCode::kInternal) << out.status;
  EXPECT_THAT(std::string(out.status.message()), ::testing::HasSubstr("does not allow"));
  AwaitIdle();
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (group_->held().count(1) > 0 && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  EXPECT_EQ(group_->held().count(1), 0u) << "kept on the workers as a prefix";
}

// A guided sequence's sampling steps carry its token mask (its prompt chunks none), and the
// tokens rank 0 samples under it spell a choice, which ends the sequence; workers that do not
// take masks (older than guided decoding) get the sequence refused, not sampled freely.
TEST_F(SchedulerTest, GuidedSequencesCarryTheirMaskAndNeedWorkersThatTakeIt) {
  auto vocab = std::make_shared<const TokenVocabulary>(
      std::vector<std::string>{"", "", "", "y", "e", "s", "n", "o"});
  auto guided = [&](uint64_t id) {
    GenerationParams p;
    p.guided_choice = {"yes", "no"};
    auto seq = MakeSeq(id, Tokens(6, 100), 8, p);
    seq->set_guide(*OutputConstraint::Choice(p.guided_choice), vocab);
    return seq;
  };
  SchedulerOptions options = Options();
  options.prefill_chunk = 4;  // a prompt chunk that samples nothing, then the last chunk
  options.max_prefill_tokens = 4;
  ServiceMetrics metrics([] { return LiveState{}; });
  Start(options, std::nullopt, /*token_masks=*/true, &metrics);
  const std::vector<Outcome> outs = RunToEnd({guided(1)});
  ASSERT_EQ(outs.size(), 1u);
  const std::vector<int32_t>& t = outs[0].tokens;
  EXPECT_TRUE(t == (std::vector<int32_t>{3, 4, 5}) || t == (std::vector<int32_t>{6, 7}))
      << ::testing::PrintToString(t);
  EXPECT_EQ(outs[0].responses.back().finish_reason(), v1::FINISH_REASON_STOP);
  int masked = 0;
  for (const v1::StepRequest& step : group_->steps()) {
    for (const v1::SeqStep& s : step.seqs()) {
      EXPECT_EQ(s.has_mask(), !s.prefill_only());
      masked += s.has_mask();
    }
  }
  EXPECT_EQ(masked, static_cast<int>(t.size()));
  EXPECT_THAT(metrics.Text(), ::testing::HasSubstr(
                                  absl::StrCat("llmint8_guided_mask_seconds_count ", masked, "\n")))
      << "one observation a step with a mask";

  scheduler_->Stop();
  Start(Options(), std::nullopt, /*token_masks=*/false);
  scheduler_->Start();
  auto refused = guided(2);
  auto free = MakeSeq(3, Tokens(6, 100), 2);
  const std::vector<std::shared_ptr<Sequence>> both = {refused, free};
  ASSERT_TRUE(scheduler_->EnqueueAll(both).ok());
  const Outcome out = Await(*refused, absl::Seconds(5));
  EXPECT_EQ(out.status.code(), absl::StatusCode::kFailedPrecondition) << out.status;
  EXPECT_TRUE(Await(*free).status.ok()) << "unguided requests are served";
}

// Once a step's masks took SchedulerOptions::step_mask_budget, its other generating guided
// sequences wait for the next step: with no budget at all, one mask a step, and every guided
// sequence still ends on one of its choices.
TEST_F(SchedulerTest, AStepsMaskBudgetDefersTheOtherGuidedSequences) {
  auto vocab = std::make_shared<const TokenVocabulary>(
      std::vector<std::string>{"", "", "", "y", "e", "s", "n", "o"});
  std::vector<std::shared_ptr<Sequence>> seqs;
  for (uint64_t id = 1; id <= 3; ++id) {
    GenerationParams p;
    p.guided_choice = {"yes", "no"};
    seqs.push_back(MakeSeq(id, Tokens(3, 100 * id), 8, p));
    seqs.back()->set_guide(*OutputConstraint::Choice(p.guided_choice), vocab);
  }
  seqs.push_back(MakeSeq(4, Tokens(3, 400), 6));  // unguided: never deferred
  SchedulerOptions options = Options();
  options.step_mask_budget = absl::ZeroDuration();
  Start(options, std::nullopt, /*token_masks=*/true);
  const std::vector<Outcome> outs = RunToEnd(seqs);
  ASSERT_EQ(outs.size(), 4u);
  for (int i = 0; i < 3; ++i) {
    const std::vector<int32_t>& t = outs[i].tokens;
    EXPECT_TRUE(t == (std::vector<int32_t>{3, 4, 5}) || t == (std::vector<int32_t>{6, 7}))
        << ::testing::PrintToString(t);
  }
  EXPECT_EQ(outs[3].tokens, FakeGreedy(seqs[3]->prompt(), 6));
  // The generating steps (one token each; the prompts, 3 tokens, all go in the first step
  // and sample beside it) carry one mask at most; the unguided sequence is in steps 1 to 6.
  int most = 0;
  std::vector<uint64_t> unguided_steps;
  for (const v1::StepRequest& step : group_->steps()) {
    int masks = 0;
    for (const v1::SeqStep& s : step.seqs()) {
      masks += s.has_mask() && s.token_ids_size() == 1;
      if (s.seq_id() == 4) unguided_steps.push_back(step.step_id());
    }
    most = std::max(most, masks);
  }
  EXPECT_EQ(most, 1) << "one generating mask a step";
  EXPECT_THAT(unguided_steps, ::testing::ElementsAre(1, 2, 3, 4, 5, 6))
      << "the unguided sequence is not held back";
  // Round-robin: the guided sequences take turns (none waits for another to finish).
  std::vector<uint64_t> turns;
  for (const v1::StepRequest& step : group_->steps()) {
    for (const v1::SeqStep& s : step.seqs()) {
      if (s.has_mask() && s.token_ids_size() == 1) turns.push_back(s.seq_id());
    }
  }
  ASSERT_GE(turns.size(), 3u);
  EXPECT_THAT(std::vector<uint64_t>(turns.begin(), turns.begin() + 3),
              ::testing::UnorderedElementsAre(1, 2, 3))
      << ::testing::PrintToString(turns);
}

// A guide that cannot say which tokens may come (its scan costs more than a request may): the
// sequence's tokens go without a mask and nothing is sampled, then it fails (INVALID_ARGUMENT)
// and leaves the workers; a sequence beside it goes on.
TEST_F(SchedulerTest, AGuideThatCannotMaskFailsItsSequenceAfterTheStep) {
  std::vector<std::string> words = {""};
  for (int len = 0; len < 13; ++len) {  // every 13-byte word of a and b
    std::vector<std::string> longer;
    for (const std::string& w : words) {
      longer.push_back(w + "a");
      longer.push_back(w + "b");
    }
    words = std::move(longer);
  }
  auto vocab = std::make_shared<const TokenVocabulary>(words);
  auto re = *CompiledRegex::Compile("[ab]*a[ab]{12}");  // an exponential DFA
  GenerationParams p;
  p.guided_regex = re;
  auto guided = MakeSeq(1, Tokens(6, 100), 4, p);
  guided->set_guide(re->NewConstraint(re), vocab);
  auto free = MakeSeq(2, Tokens(6, 200), 3);
  Start(Options());
  const std::vector<std::shared_ptr<Sequence>> both = {guided, free};
  ASSERT_TRUE(scheduler_->EnqueueAll(both).ok());
  scheduler_->Start();
  const Outcome failed = Await(*guided);
  EXPECT_EQ(failed.status.code(), absl::StatusCode::kInvalidArgument) << failed.status;
  EXPECT_THAT(failed.status.message(), ::testing::HasSubstr("simplify"));
  EXPECT_TRUE(failed.tokens.empty());
  EXPECT_TRUE(Await(*free).status.ok());
  AwaitIdle();
  EXPECT_EQ(group_->held().count(1), 0u) << "the failed sequence left the workers";
  for (const v1::StepRequest& step : group_->steps()) {
    for (const v1::SeqStep& st : step.seqs()) {
      if (st.seq_id() == 1) {
        EXPECT_FALSE(st.has_mask());
      }
    }
  }
}

TEST_F(SchedulerTest, TheQueueIsBoundedAndABatchQueuesWholeOrNotAtAll) {
  SchedulerOptions o = Options();
  o.queue_capacity = 3;
  Start(o);  // not started: nothing leaves the queue
  ASSERT_TRUE(scheduler_->Enqueue(MakeSeq(1, Tokens(5, 100), 4)).ok());
  ASSERT_TRUE(scheduler_->Enqueue(MakeSeq(2, Tokens(5, 100), 4)).ok());
  const std::vector<std::shared_ptr<Sequence>> two = {MakeSeq(3, Tokens(5, 100), 4),
                                                      MakeSeq(4, Tokens(5, 100), 4)};
  EXPECT_EQ(scheduler_->EnqueueAll(two).code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(scheduler_->queued(), 2) << "none of the two was queued";
  auto cancelled = MakeSeq(5, Tokens(5, 100), 4);
  ASSERT_TRUE(scheduler_->Enqueue(cancelled).ok());
  EXPECT_EQ(scheduler_->Enqueue(MakeSeq(6, Tokens(5, 100), 4)).code(),
            absl::StatusCode::kResourceExhausted);
  cancelled->Cancel();  // its handler saw the client leave: its place is free
  auto seventh = MakeSeq(7, Tokens(5, 100), 4);
  EXPECT_TRUE(scheduler_->Enqueue(seventh).ok());

  // A client that cancels between its handler's polls: its probe says so, and a full queue
  // frees the place at once (marking the sequence cancelled). A detached probe (its handler
  // returned) says nothing.
  scheduler_->Cancel(seventh);
  std::atomic<bool> gone = false;
  auto probe = std::make_shared<ClientProbe>([&gone] { return gone.load(); });
  auto waiting = MakeSeq(8, Tokens(5, 100), 4);
  waiting->set_client_probe(probe);
  ASSERT_TRUE(scheduler_->Enqueue(waiting).ok());
  EXPECT_EQ(scheduler_->Enqueue(MakeSeq(9, Tokens(5, 100), 4)).code(),
            absl::StatusCode::kResourceExhausted);
  gone = true;
  EXPECT_TRUE(scheduler_->Enqueue(MakeSeq(10, Tokens(5, 100), 4)).ok());
  EXPECT_TRUE(waiting->cancelled());
  EXPECT_EQ(scheduler_->queued(), 3);
  probe->Detach();
  EXPECT_FALSE(waiting->client_gone());
}

// Stop does not wait for a step the workers are still computing (a long prefill may take up to
// the step timeout): the group cancels it, and its sequence ends UNAVAILABLE as the server's
// shutdown, not as a lost group.
TEST_F(SchedulerTest, StopCancelsTheStepInProgress) {
  Start(Options());
  auto a = MakeSeq(1, Tokens(8, 100), 6);
  absl::Notification in_step;
  bool cancelled = false;
  group_->BeforeStep(2, [&] {
    in_step.Notify();
    cancelled = group_->AwaitCancel(absl::Seconds(60));
  });
  ASSERT_TRUE(scheduler_->Enqueue(a).ok());
  scheduler_->Start();
  in_step.WaitForNotification();
  scheduler_->Stop();
  EXPECT_TRUE(cancelled) << "Stop waited for the step instead of cancelling it";
  const Outcome out = Await(*a);
  EXPECT_EQ(out.status.code(), absl::StatusCode::kUnavailable) << out.status;
  EXPECT_THAT(out.status.message(), ::testing::HasSubstr("the server is shutting down"));
}

// Stop while a step runs that then loses the group: the sequences that step put back in the
// queue (a later choice that waited for the first) end too, so no handler waits on them.
TEST_F(SchedulerTest, StopEndsWhatAStepThatLostTheGroupPutBack) {
  Start(Options());
  const std::vector<int32_t> prompt = Tokens(20, 100);
  auto c0 = MakeSeq(1, prompt, 4);
  auto c1 = MakeSeq(2, prompt, 4);
  c1->set_prefix_source(c0);  // waits in step 1: unsent when the group is lost
  std::thread stopper;
  group_->FailStep(1, absl::UnavailableError("worker 1 is gone"), /*breaks=*/true);
  group_->BeforeStep(1, [&] {
    stopper = std::thread([this] { scheduler_->Stop(); });
    uint64_t id = 100;  // refused once Stop has begun
    while (scheduler_->Enqueue(MakeSeq(id++, Tokens(3, 1), 1)).ok()) {
      absl::SleepFor(absl::Milliseconds(1));
    }
  });
  ASSERT_TRUE(scheduler_->EnqueueAll({{c0, c1}}).ok());
  scheduler_->Start();
  const Outcome first = Await(*c0, absl::Seconds(10));
  EXPECT_EQ(first.status.code(), absl::StatusCode::kUnavailable) << first.status;
  const Outcome put_back = Await(*c1, absl::Seconds(10));
  EXPECT_EQ(put_back.status.code(), absl::StatusCode::kUnavailable) << put_back.status;
  if (stopper.joinable()) stopper.join();
  EXPECT_EQ(scheduler_->queued(), 0);
}

// The group breaks and re-forms while a step is being sent: the new group holds none of the
// batch's sequences, so the step does not run there (its decode tokens would start sequences
// anew); the running request fails, and the next is served by the new group.
TEST_F(SchedulerTest, AStepBuiltForAGroupThatReformedDoesNotRunOnTheNewOne) {
  Start(Options());
  auto a = MakeSeq(1, Tokens(8, 100), 4);
  group_->BeforeStep(2, [&] {
    group_->Break();
    group_->Reform();
  });
  ASSERT_TRUE(scheduler_->Enqueue(a).ok());
  scheduler_->Start();
  const Outcome lost = Await(*a);
  EXPECT_EQ(lost.status.code(), absl::StatusCode::kUnavailable) << lost.status;
  auto b = MakeSeq(2, Tokens(8, 300), 2);
  ASSERT_TRUE(scheduler_->Enqueue(b).ok());
  const Outcome next = Await(*b);
  EXPECT_TRUE(next.status.ok()) << next.status;
  EXPECT_EQ(next.tokens, FakeGreedy(b->prompt(), 2));
  for (const v1::StepRequest& step : group_->steps()) {
    for (const v1::SeqStep& s : step.seqs()) {
      EXPECT_FALSE(step.epoch() == 2 && s.seq_id() == 1) << "sequence 1 ran on the new group";
    }
  }
}

// The group is lost after a new request's first step was built but before it was sent: nothing
// of it reached a worker, so it waits for the next group like a queued one (no preemption, no
// resume used) instead of failing.
TEST_F(SchedulerTest, ARequestWhoseFirstStepWasNeverSentWaitsForTheNextGroup) {
  Start(Options());
  auto a = MakeSeq(1, Tokens(8, 100), 4);
  group_->BeforeStep(1, [&] { group_->Break(); });
  ASSERT_TRUE(scheduler_->Enqueue(a).ok());
  scheduler_->Start();
  ASSERT_TRUE(AwaitGroupLoss(1)) << "the request should wait, queued";
  group_->Reform();
  const Outcome out = Await(*a);
  ASSERT_TRUE(out.status.ok()) << out.status;
  EXPECT_EQ(out.tokens, FakeGreedy(a->prompt(), 4));
  EXPECT_EQ(a->preemptions(), 0);
  EXPECT_EQ(scheduler_->preemptions(), 0u);
}

TEST_F(SchedulerTest, DrainServesWhatIsQueuedAndRefusesNewRequests) {
  SchedulerOptions o = Options();
  o.max_batch = 1;
  Start(o);
  std::vector<std::shared_ptr<Sequence>> seqs;
  for (uint64_t id = 1; id <= 3; ++id) seqs.push_back(MakeSeq(id, Tokens(5, 100), 6));
  ASSERT_TRUE(scheduler_->EnqueueAll(seqs).ok());
  scheduler_->Start();
  EXPECT_TRUE(scheduler_->Accepting().ok());
  EXPECT_TRUE(scheduler_->Drain(absl::Seconds(20)));
  EXPECT_EQ(scheduler_->Accepting().code(), absl::StatusCode::kUnavailable);
  for (auto& seq : seqs) {
    const Outcome out = Await(*seq, absl::Seconds(1));
    EXPECT_TRUE(out.status.ok()) << out.status;
    EXPECT_EQ(out.tokens.size(), 6u);
  }
  EXPECT_EQ(scheduler_->Enqueue(MakeSeq(9, Tokens(5, 100), 4)).code(),
            absl::StatusCode::kUnavailable);
}

// ---- Speculative decoding (prompt lookup) ----

// What a FakeStepGroup with Options::period samples after `prompt`: the token `period` back.
std::vector<int32_t> Periodic(std::vector<int32_t> tokens, int period, int count) {
  std::vector<int32_t> out;
  for (int i = 0; i < count; ++i) {
    out.push_back(tokens[tokens.size() - static_cast<size_t>(period)]);
    tokens.push_back(out.back());
  }
  return out;
}

// Sequence `id`'s steps against its `tokens`: its drafts never run past max_new, and each step
// drops the drafts of the one before that were not accepted (the leading ones equal to the
// tokens it generated from there were). Returns the drafts accepted.
int64_t CheckDrafts(const std::vector<v1::StepRequest>& steps, uint64_t id,
                    const std::vector<int32_t>& tokens, int max_new,
                    std::vector<int32_t>* accepted_at = nullptr) {
  int64_t accepted_total = 0;
  int32_t pending_drop = 0;
  for (const auto& [index, s] : StepsOf(steps, id)) {
    if (s.has_sampling()) pending_drop = 0;  // (again) a new sequence on the workers
    EXPECT_EQ(s.drop_positions(), pending_drop) << "step " << index;
    const int g = s.sample_index();
    EXPECT_LE(g + s.draft_token_ids_size() + 1, max_new) << "step " << index;
    int32_t accepted = 0;
    while (accepted < s.draft_token_ids_size() && g + accepted < std::ssize(tokens) &&
           s.draft_token_ids(accepted) == tokens[static_cast<size_t>(g + accepted)]) {
      if (accepted_at != nullptr) accepted_at->push_back(g + accepted);
      ++accepted;
    }
    accepted_total += accepted;
    pending_drop = s.draft_token_ids_size() - accepted;
  }
  return accepted_total;
}

// Outputs that loop: their drafts are accepted, and the tokens are those of steps one at a
// time, in fewer steps, also when the KV capacity makes the scheduler preempt (the group
// checks each step's positions, the drafts' included, against it).
TEST_F(SchedulerTest, AcceptedDraftsGiveTheSameTokensInFewerSteps) {
  SchedulerOptions o = Options();
  o.speculative_tokens = 4;
  ServiceMetrics metrics([] { return LiveState(); });
  Start(o,
        FakeStepGroup::Options{
            .kv_capacity = 64, .holds = std::nullopt, .token_masks = true, .period = 3},
        &metrics);
  auto a = MakeSeq(1, Tokens(10, 300), 40);
  auto b = MakeSeq(2, Tokens(12, 500), 7);
  auto c = MakeSeq(3, Tokens(10, 700), 30);  // a and c do not fit together to their ends
  const std::vector<Outcome> outs = RunToEnd({a, b, c});
  if (HasFailure()) return;
  EXPECT_EQ(outs[0].tokens, Periodic(a->prompt(), 3, 40));
  EXPECT_EQ(outs[1].tokens, Periodic(b->prompt(), 3, 7));
  EXPECT_EQ(outs[2].tokens, Periodic(c->prompt(), 3, 30));
  EXPECT_GT(scheduler_->preemptions(), 0u);
  AwaitIdle();  // the counters of the last step are added after its sequences finished
  const std::vector<v1::StepRequest> steps = group_->steps();
  const int64_t accepted = CheckDrafts(steps, 1, outs[0].tokens, 40) +
                           CheckDrafts(steps, 2, outs[1].tokens, 7) +
                           CheckDrafts(steps, 3, outs[2].tokens, 30);
  EXPECT_EQ(scheduler_->accepted_draft_tokens(), static_cast<uint64_t>(accepted));
  EXPECT_GE(scheduler_->draft_tokens(), scheduler_->accepted_draft_tokens());
  // 7 tokens: the prefill's, one step at a time until a 2-gram recurs, then up to 5 a step.
  EXPECT_LE(StepsOf(steps, 2).size(), 5u);
  EXPECT_GE(accepted, 50);
  EXPECT_THAT(metrics.Text(),
              ::testing::HasSubstr(absl::StrCat("llmint8_spec_decode_accepted_tokens_total ",
                                                scheduler_->accepted_draft_tokens())));
}

// Drafts that rank 0 does not accept: the prompt holds every token the fake samples (ids 10
// to 1009), each followed by the next id, which the fake's hash does not sample. The tokens
// are still those of steps one at a time, and each step drops the last one's drafts.
TEST_F(SchedulerTest, RejectedDraftsAreDroppedByTheNextStep) {
  SchedulerOptions o = Options();
  o.speculative_tokens = 3;
  o.max_context = 2048;
  o.prompt_lookup = {.min_n = 1, .max_n = 2};
  Start(o, std::optional<int64_t>(8 * 2048));
  const std::vector<int32_t> every = Tokens(1000, 10);
  auto a = MakeSeq(1, every, 12);
  const std::vector<Outcome> outs = RunToEnd({a});
  if (HasFailure()) return;
  EXPECT_EQ(outs[0].tokens, FakeGreedy(every, 12));
  CheckDrafts(group_->steps(), 1, outs[0].tokens, 12);
  EXPECT_GT(scheduler_->draft_tokens(), 0u) << "the prompt's 2-grams recur";
  int drops = 0;
  for (const auto& [index, s] : StepsOf(group_->steps(), 1)) drops += s.drop_positions() > 0;
  EXPECT_GT(drops, 0);
}

// A sequence that asks logprobs drafts too: every token it streams has one (an accepted
// draft's from its result's drafts); one that ends on a stop id inside its accepted drafts
// ends there, parked with the positions the workers hold past its tokens counted.
TEST_F(SchedulerTest, DraftsCarryLogprobsAndStopWhereTheSequenceEnds) {
  SchedulerOptions o = Options();
  o.speculative_tokens = 4;
  o.prefix_cache_entries = 8;
  o.min_shared_prefix = 4;
  Start(o, FakeStepGroup::Options{
               .kv_capacity = 8 * 256, .holds = std::nullopt, .token_masks = true, .period = 4});
  GenerationParams logprobs;
  logprobs.logprobs = true;
  auto a = MakeSeq(1, Tokens(10, 300), 20, logprobs);
  GenerationParams stop;
  stop.stop_token_ids = {611};  // the prompt's last: generated again every 4 tokens
  auto b = MakeSeq(2, Tokens(12, 600), 30, stop);
  const std::vector<Outcome> outs = RunToEnd({a, b});
  if (HasFailure()) return;
  EXPECT_EQ(outs[0].tokens, Periodic(a->prompt(), 4, 20));
  // The fake gives each accepted draft a logprob and the tokens it samples none (0).
  std::vector<int32_t> drafted;  // indices of a's tokens that were accepted drafts
  const int64_t accepted_a = CheckDrafts(group_->steps(), 1, outs[0].tokens, 20, &drafted);
  EXPECT_GT(accepted_a, 10) << "most of a's tokens were accepted drafts";
  int32_t index = 0;  // of the token among the generated ones
  for (const v1::GenerateResponse& r : outs[0].responses) {
    if (!r.has_token_id()) continue;
    const bool draft = std::find(drafted.begin(), drafted.end(), index) != drafted.end();
    EXPECT_EQ(r.logprob(), draft ? testing::FakeDraftLogprob(index) : 0.0f) << "token " << index;
    ++index;
  }
  // 608 609 610 611: the stop id ends the fourth token, the second draft of the step that
  // sent 610 611 608 609 after 609 (all four accepted by the fake).
  EXPECT_EQ(outs[1].tokens, Periodic(b->prompt(), 4, 4));
  const int64_t accepted = accepted_a + CheckDrafts(group_->steps(), 2, outs[1].tokens, 30);
  AwaitIdle();
  EXPECT_EQ(scheduler_->prefix_cached_sequences(), 2);
  // Parked: a's 29 cached positions (32 with the granule of 16), b's 15 and the 3 draft
  // positions past its end (18: 32).
  EXPECT_EQ(scheduler_->prefix_cached_positions(), 64);
  // b's: 610 611 (608 609 came after its end).
  EXPECT_EQ(scheduler_->accepted_draft_tokens(), static_cast<uint64_t>(accepted));
}

// A sequence's pending drop (its last step's drafts that were not accepted) survives a step
// the workers refuse for memory (sent again with the step that replaces it) and goes with a
// preemption and with a lost group (the cache is gone): the tokens stay those of steps one at
// a time, which a wrong drop would change (the fake samples from every cached token).
TEST_F(SchedulerTest, PendingDropsSurviveRefusedStepsAndGoWithTheCache) {
  SchedulerOptions o = Options();
  o.speculative_tokens = 3;
  o.max_context = 2048;
  o.prompt_lookup = {.min_n = 1, .max_n = 2};
  o.resume_on_group_loss = absl::Seconds(30);
  Start(o, std::optional<int64_t>(8 * 2048));
  const std::vector<int32_t> every = Tokens(1000, 10);  // every id the fake samples, in order
  const std::vector<int32_t> other = Concat({7}, every);
  auto a = MakeSeq(1, every, 16);
  auto b = MakeSeq(2, other, 16);
  group_->FailStep(4, absl::ResourceExhaustedError("Step: out of memory"), /*breaks=*/false);
  group_->FailStep(8, absl::UnavailableError("worker 1 is gone"), /*breaks=*/true);
  const std::vector<std::shared_ptr<Sequence>> both = {a, b};
  ASSERT_TRUE(scheduler_->EnqueueAll(both).ok());
  scheduler_->Start();
  ASSERT_TRUE(AwaitGroupLoss());
  group_->Reform();
  const Outcome out_a = Await(*a), out_b = Await(*b);
  ASSERT_TRUE(out_a.status.ok()) << out_a.status;
  ASSERT_TRUE(out_b.status.ok()) << out_b.status;
  EXPECT_EQ(out_a.tokens, FakeGreedy(every, 16));
  EXPECT_EQ(out_b.tokens, FakeGreedy(other, 16));
  EXPECT_GT(scheduler_->draft_tokens(), 0u);
  EXPECT_GT(a->preemptions() + b->preemptions(), 0);
  // The refused step (the 4th) and the lost one (the 8th) carried drops.
  const std::vector<v1::StepRequest> steps = group_->steps();
  ASSERT_GE(steps.size(), 8u);
  for (size_t i : {size_t{3}, size_t{7}}) {
    int dropping = 0;
    for (const v1::SeqStep& s : steps[i].seqs()) dropping += s.drop_positions() > 0;
    EXPECT_GT(dropping, 0) << "step " << i + 1;
  }
}

}  // namespace
}  // namespace llmint8::coordinator
