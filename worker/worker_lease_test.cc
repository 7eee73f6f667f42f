// The coordinator lease as a WorkerService applies it: an in-process worker holding a one-rank
// group refuses another coordinator's LoadShard and keeps its group, tells that coordinator's
// probes it is held, and lets it in once the holder ends the lease. And a draining worker
// (SIGTERM) is Drained() only once its group holds nothing or its coordinator is gone.
#include <cstdint>
#include <string>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "llmint8/v1/worker.pb.h"
#include "worker/worker_service.h"

namespace llmint8::worker {
namespace {

constexpr int64_t kFirst = int64_t{3} << 32;  // two coordinator instances' first epochs
constexpr int64_t kSecond = int64_t{5} << 32;

v1::LoadShardRequest OneRank(int64_t epoch, int64_t lease_ms) {
  v1::LoadShardRequest req;
  req.set_epoch(epoch + 1);
  req.set_rank(0);
  req.set_world_size(1);
  req.set_model("synthetic:125m,layers=1,hidden=64,heads=4,ffn=128,vocab=256,positions=64");
  req.set_dtype("fp16");
  req.set_lease_ms(lease_ms);
  return req;
}

v1::WorkerInfoResponse Probe(WorkerService& service, int64_t epoch) {
  v1::WorkerInfoRequest req;
  req.set_epoch(epoch);
  v1::WorkerInfoResponse resp;
  EXPECT_TRUE(service.Info(nullptr, &req, &resp).ok());
  return resp;
}

grpc::Status Load(WorkerService& service, const v1::LoadShardRequest& req) {
  v1::LoadShardResponse resp;
  return service.LoadShard(nullptr, &req, &resp);
}

TEST(WorkerLeaseTest, AnotherCoordinatorIsRefusedAndTheGroupStays) {
  WorkerService service(WorkerOptions{});
  const v1::LoadShardRequest first = OneRank(kFirst, 600'000);
  ASSERT_TRUE(Load(service, first).ok());

  EXPECT_TRUE(Probe(service, kSecond).held_by_another());
  EXPECT_FALSE(Probe(service, first.epoch()).held_by_another());
  const grpc::Status refused = Load(service, OneRank(kSecond, 600'000));
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_NE(refused.error_message().find("another coordinator"), std::string::npos)
      << refused.error_message();
  const v1::WorkerInfoResponse after = Probe(service, first.epoch());
  EXPECT_EQ(after.epoch(), first.epoch());
  EXPECT_TRUE(after.loaded());

  // The same coordinator re-forms at will.
  EXPECT_TRUE(Load(service, OneRank(kFirst + 1, 600'000)).ok());
}

// A LoadShard refused for its own fields (another coordinator's, or a peer's garbage) leaves
// the group that runs as it is; fields out of range, an endless lease and a degree the model
// cannot split into are refused before anything changes.
TEST(WorkerLeaseTest, ARefusedLoadShardLeavesTheGroupAsItIs) {
  WorkerService service(WorkerOptions{});
  const v1::LoadShardRequest first = OneRank(kFirst, 0);
  ASSERT_TRUE(Load(service, first).ok());
  struct Case {
    void (*edit)(v1::LoadShardRequest&);
    const char* says;
  };
  const Case cases[] = {
      {[](v1::LoadShardRequest& r) { r.set_dtype("bogus"); }, "dtype \"bogus\" is not supported"},
      {[](v1::LoadShardRequest& r) { r.set_lease_ms(int64_t{1} << 62); }, "lease_ms"},
      {[](v1::LoadShardRequest& r) { r.set_max_batch(-5); }, "max_batch is -5"},
      {[](v1::LoadShardRequest& r) { r.set_max_step_tokens(int64_t{1} << 62); }, "max_step_tokens"},
      {[](v1::LoadShardRequest& r) { r.set_memory_sharers(-1); }, "memory_sharers"},
      {[](v1::LoadShardRequest& r) { r.set_threshold(-1); }, "threshold"},
      {[](v1::LoadShardRequest& r) { r.set_world_size(200000); }, "world_size in [1, 4096]"},
      {[](v1::LoadShardRequest& r) {
         r.set_world_size(3);
         r.set_rendezvous_address("127.0.0.1:1");
       },
       "valid TP degrees for"},
      {[](v1::LoadShardRequest& r) { r.set_model("/no/such/model"); }, "config.json"},
      {[](v1::LoadShardRequest& r) { r.set_device("cuda"); }, "this worker runs on cpu"},
      {[](v1::LoadShardRequest& r) { r.set_backend("mpi"); }, "backend 'mpi'"},
      {[](v1::LoadShardRequest& r) { r.set_backend("nccl"); }, "nccl needs device cuda"},
      {[](v1::LoadShardRequest& r) {
         r.set_world_size(2);
         r.set_rendezvous_address("127.0.0.1:1");
         r.set_backend("local");
       },
       "local is a group of one"},
  };
  for (const Case& c : cases) {
    v1::LoadShardRequest bad = OneRank(kFirst + 1, 0);
    c.edit(bad);
    const grpc::Status refused = Load(service, bad);
    EXPECT_FALSE(refused.ok()) << c.says;
    EXPECT_NE(refused.error_message().find(c.says), std::string::npos) << refused.error_message();
    const v1::WorkerInfoResponse after = Probe(service, first.epoch());
    EXPECT_EQ(after.epoch(), first.epoch()) << c.says;
    EXPECT_TRUE(after.loaded()) << c.says;
  }
  // Nor is a refused request a newer group of its coordinator: a load of an older epoch after
  // it is not given up as superseded.
  v1::LoadShardRequest ahead = OneRank(kFirst + 100, 0);
  ahead.set_world_size(0);
  EXPECT_EQ(Load(service, ahead).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_TRUE(Load(service, OneRank(kFirst + 2, 0)).ok());
}

// A coordinator's load older than one it asked for since is given up (ABORTED: it would form a
// group no other rank joins), also after another coordinator's request came between them.
TEST(WorkerLeaseTest, ALoadOlderThanItsCoordinatorsNewestIsGivenUp) {
  WorkerService service(WorkerOptions{});
  ASSERT_TRUE(Load(service, OneRank(kFirst + 10, 600'000)).ok());
  EXPECT_EQ(Load(service, OneRank(kSecond, 600'000)).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
  const grpc::Status stale = Load(service, OneRank(kFirst + 5, 600'000));
  EXPECT_EQ(stale.error_code(), grpc::StatusCode::ABORTED) << stale.error_message();
  EXPECT_NE(stale.error_message().find("asked for a newer group"), std::string::npos)
      << stale.error_message();
  EXPECT_EQ(Probe(service, kFirst + 11).epoch(), kFirst + 11) << "its group stays";
}

// A prompt score asked with fields out of range is refused before the step (it scored NaN), and
// the worker steps on afterwards.
TEST(WorkerStepTest, ScoreFieldsOutOfRangeAreRefused) {
  WorkerService service(WorkerOptions{});
  const v1::LoadShardRequest load = OneRank(kFirst, 0);
  ASSERT_TRUE(Load(service, load).ok());
  auto step = [&](int32_t top, int32_t next) {
    v1::StepRequest req;
    req.set_epoch(load.epoch());
    v1::SeqStep* seq = req.add_seqs();
    seq->set_seq_id(7);
    seq->add_token_ids(2);
    seq->add_token_ids(5);
    seq->set_prompt_logprobs(true);
    seq->set_prefill_only(true);
    seq->set_top_logprobs(top);
    if (next != 0) seq->set_next_prompt_token(next);
    v1::StepResponse resp;
    return service.Step(nullptr, &req, &resp);
  };
  EXPECT_EQ(step(1000000, 0).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(step(0, -7).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(step(0, 256).error_code(), grpc::StatusCode::INVALID_ARGUMENT);  // vocab 256
  EXPECT_TRUE(step(2, 9).ok());
}

// A step past the limits its group was loaded for is refused before it runs (the worker kept
// room for steps within them), and steps within them run.
TEST(WorkerStepTest, AStepPastTheLoadedLimitsIsRefused) {
  WorkerService service(WorkerOptions{});
  v1::LoadShardRequest load = OneRank(kFirst, 0);
  load.set_max_batch(2);
  load.set_max_step_tokens(6);
  load.set_max_step_rows(4);
  ASSERT_TRUE(Load(service, load).ok());
  uint64_t next_id = 1;
  // `prompts` sequences of `tokens` tokens each; scored: every position needs a logits row.
  auto step = [&](int prompts, int tokens, bool scored) {
    v1::StepRequest req;
    req.set_epoch(load.epoch());
    for (int i = 0; i < prompts; ++i) {
      v1::SeqStep* seq = req.add_seqs();
      seq->set_seq_id(next_id++);
      for (int t = 0; t < tokens; ++t) seq->add_token_ids(2 + t);
      seq->set_prompt_logprobs(scored);
      seq->set_prefill_only(true);
    }
    v1::StepResponse resp;
    return service.Step(nullptr, &req, &resp);
  };
  const grpc::Status tokens = step(1, 7, false);
  EXPECT_EQ(tokens.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(tokens.error_message().find("7 tokens"), std::string::npos) << tokens.error_message();
  const grpc::Status rows = step(1, 5, true);
  EXPECT_EQ(rows.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(rows.error_message().find("5 logits rows"), std::string::npos) << rows.error_message();
  EXPECT_TRUE(step(1, 6, false).ok());
  EXPECT_TRUE(step(1, 4, true).ok());
  EXPECT_TRUE(step(3, 2, false).ok());  // 3 rows, 6 tokens
}

// Unset, the limits are worker.proto's defaults, which the worker kept room for: max_context +
// max_batch tokens a step (a coordinator that sends 0 cannot send steps of any size).
TEST(WorkerStepTest, UnsetLimitsAreTheDocumentedDefaults) {
  WorkerService service(WorkerOptions{});
  v1::LoadShardRequest load = OneRank(kFirst, 0);  // positions 64: a context of 64
  load.set_max_batch(2);
  ASSERT_TRUE(Load(service, load).ok());
  auto step = [&](uint64_t first_id, int prompts, int tokens) {
    v1::StepRequest req;
    req.set_epoch(load.epoch());
    for (int i = 0; i < prompts; ++i) {
      v1::SeqStep* seq = req.add_seqs();
      seq->set_seq_id(first_id + static_cast<uint64_t>(i));
      for (int t = 0; t < tokens; ++t) seq->add_token_ids(2 + t % 50);
      seq->set_prefill_only(true);
    }
    v1::StepResponse resp;
    return service.Step(nullptr, &req, &resp);
  };
  const grpc::Status over = step(1, 3, 40);  // 120 > 64 + 2
  EXPECT_EQ(over.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(over.error_message().find("at most 66 a step"), std::string::npos)
      << over.error_message();
  EXPECT_TRUE(step(10, 2, 33).ok());  // 66
}

TEST(WorkerLeaseTest, EndLeaseLetsTheNextCoordinatorInAtOnce) {
  WorkerService service(WorkerOptions{});
  const v1::LoadShardRequest first = OneRank(kFirst, 600'000);
  ASSERT_TRUE(Load(service, first).ok());
  v1::ReleaseRequest release;
  release.set_epoch(kSecond + 1);  // not the holder: changes nothing
  release.set_end_lease(true);
  v1::ReleaseResponse released;
  ASSERT_TRUE(service.Release(nullptr, &release, &released).ok());
  EXPECT_TRUE(Probe(service, kSecond).held_by_another());

  release.set_epoch(first.epoch());
  ASSERT_TRUE(service.Release(nullptr, &release, &released).ok());
  EXPECT_FALSE(Probe(service, kSecond).held_by_another());
  const v1::LoadShardRequest second = OneRank(kSecond, 600'000);
  ASSERT_TRUE(Load(service, second).ok());
  EXPECT_EQ(Probe(service, second.epoch()).epoch(), second.epoch());
}

TEST(WorkerLeaseTest, ACoordinatorThatAsksForNoLeaseKeepsNothing) {
  WorkerService service(WorkerOptions{});
  ASSERT_TRUE(Load(service, OneRank(kFirst, 0)).ok());
  EXPECT_FALSE(Probe(service, kSecond).held_by_another());
  EXPECT_TRUE(Load(service, OneRank(kSecond, 0)).ok());
}

// One step that starts sequence `id` in group `epoch`.
grpc::Status StartSequence(WorkerService& service, int64_t epoch, uint64_t id) {
  v1::StepRequest req;
  req.set_epoch(epoch);
  req.set_step_id(1);
  v1::SeqStep* seq = req.add_seqs();
  seq->set_seq_id(id);
  seq->add_token_ids(2);
  seq->add_token_ids(7);
  v1::StepResponse resp;
  return service.Step(nullptr, &req, &resp);
}

grpc::Status ReleaseOne(WorkerService& service, int64_t epoch, uint64_t id) {
  v1::ReleaseRequest release;
  release.set_epoch(epoch);
  release.add_seq_ids(id);
  v1::ReleaseResponse released;
  return service.Release(nullptr, &release, &released);
}

WorkerOptions DrainQuiet(absl::Duration quiet) {
  WorkerOptions o;
  o.drain_quiet = quiet;
  return o;
}

// Loads group kFirst, starts sequence 1 in it, and drains the worker; two of the group's
// probes see the drain. The group's load request.
v1::LoadShardRequest RunningOneThenDraining(WorkerService& service) {
  const v1::LoadShardRequest first = OneRank(kFirst, 600'000);
  EXPECT_TRUE(Load(service, first).ok());
  EXPECT_TRUE(StartSequence(service, first.epoch(), 1).ok());
  service.Drain();
  EXPECT_TRUE(Probe(service, first.epoch()).draining());
  EXPECT_TRUE(Probe(service, first.epoch()).draining());
  return first;
}

TEST(WorkerDrainTest, DrainedOnceTheGroupHoldsNothingAndNoNewGroupMeanwhile) {
  WorkerService service(DrainQuiet(absl::ZeroDuration()));
  EXPECT_TRUE(service.Drained()) << "no group";
  const v1::LoadShardRequest first = RunningOneThenDraining(service);
  ASSERT_FALSE(::testing::Test::HasFailure());
  EXPECT_FALSE(service.Drained()) << "sequence 1 is running";
  EXPECT_EQ(Load(service, OneRank(kFirst + 1, 600'000)).error_code(),
            grpc::StatusCode::UNAVAILABLE);
  ASSERT_TRUE(ReleaseOne(service, first.epoch(), 1).ok());
  EXPECT_TRUE(service.Drained());
}

// The coordinator may release its last sequence and then step one it had preempted: a worker
// drains only once its group has held nothing for drain_quiet, not between those two calls.
TEST(WorkerDrainTest, DrainedOnlyOnceTheGroupHeldNothingForTheQuietPeriod) {
  WorkerService service(DrainQuiet(absl::Seconds(2)));
  const v1::LoadShardRequest first = RunningOneThenDraining(service);
  ASSERT_FALSE(::testing::Test::HasFailure());
  ASSERT_TRUE(ReleaseOne(service, first.epoch(), 1).ok());
  EXPECT_FALSE(service.Drained()) << "empty for less than 2 s";
  ASSERT_TRUE(StartSequence(service, first.epoch(), 2).ok());  // the preempted one, back
  absl::SleepFor(absl::Milliseconds(2100));
  EXPECT_FALSE(service.Drained()) << "sequence 2 is running";
  ASSERT_TRUE(ReleaseOne(service, first.epoch(), 2).ok());
  absl::SleepFor(absl::Milliseconds(2100));
  EXPECT_TRUE(service.Drained());
}

TEST(WorkerDrainTest, AnIdleGroupIsDrainedOnlyOnceItsCoordinatorWasTold) {
  // Else a request admitted before the coordinator's next probe would find the worker gone.
  WorkerService service(WorkerOptions{});
  const v1::LoadShardRequest first = OneRank(kFirst, 600'000);
  ASSERT_TRUE(Load(service, first).ok());
  service.Drain();
  EXPECT_FALSE(service.Drained());
  EXPECT_TRUE(Probe(service, kSecond).draining());  // another coordinator's probe
  EXPECT_FALSE(service.Drained());
  // The first answer may still be on its way when a step is sent; after the second it has
  // arrived (the coordinator probes one at a time).
  EXPECT_TRUE(Probe(service, first.epoch()).draining());
  EXPECT_FALSE(service.Drained());
  EXPECT_TRUE(Probe(service, first.epoch()).draining());
  EXPECT_TRUE(service.Drained());
}

TEST(WorkerDrainTest, DrainedWhenNoCoordinatorHoldsTheGroupAnyMore) {
  WorkerService service(WorkerOptions{});
  const v1::LoadShardRequest first = OneRank(kFirst, 600'000);
  ASSERT_TRUE(Load(service, first).ok());
  ASSERT_TRUE(StartSequence(service, first.epoch(), 1).ok());
  service.Drain();
  EXPECT_FALSE(service.Drained());
  v1::ReleaseRequest release;  // the coordinator stops: nobody will release sequence 1
  release.set_epoch(first.epoch());
  release.set_end_lease(true);
  v1::ReleaseResponse released;
  ASSERT_TRUE(service.Release(nullptr, &release, &released).ok());
  EXPECT_TRUE(service.Drained());
}

// A coordinator that dies (or is cut off) without ending its lease leaves a group nobody will
// step or release: once silent for the lease and abandoned_after more, the worker drops it and
// its memory goes back (it used to keep weights and KV cache until the next LoadShard). A
// coordinator that keeps probing keeps its group.
TEST(WorkerLeaseTest, AGroupWhoseCoordinatorFellSilentIsDropped) {
  WorkerOptions options;
  options.abandoned_after = absl::Milliseconds(300);
  WorkerService service(options);
  const v1::LoadShardRequest first = OneRank(kFirst, 200);
  ASSERT_TRUE(Load(service, first).ok());
  v1::StepRequest step;
  step.set_epoch(first.epoch());
  v1::SeqStep* seq = step.add_seqs();
  seq->set_seq_id(1);
  seq->add_token_ids(5);
  seq->add_token_ids(6);
  v1::StepResponse stepped;
  ASSERT_TRUE(service.Step(nullptr, &step, &stepped).ok());
  auto stats = [&service] {
    v1::StatsResponse s;
    EXPECT_TRUE(service.Stats(nullptr, nullptr, &s).ok());
    return s;
  };
  ASSERT_GT(stats().total_bytes(), 0);
  // Probed every 50 ms for 1.5 s (past lease + abandoned_after): kept.
  absl::Time silent_since;
  for (int i = 0; i < 30; ++i) {
    if (i > 0) absl::SleepFor(absl::Milliseconds(50));
    EXPECT_TRUE(Probe(service, first.epoch()).loaded());
    silent_since = absl::Now();  // (just after the last contact)
  }
  EXPECT_EQ(stats().active_sequences(), 1);
  // Then silence: dropped within lease + abandoned_after + a watch period or two.
  while (stats().total_bytes() > 0 && absl::Now() - silent_since < absl::Seconds(10)) {
    absl::SleepFor(absl::Milliseconds(20));
  }
  EXPECT_EQ(stats().total_bytes(), 0);
  EXPECT_EQ(stats().active_sequences(), 0);
  EXPECT_GE(absl::Now() - silent_since, absl::Milliseconds(500)) << "not before lease + 300 ms";
  v1::WorkerInfoRequest info_req;
  v1::WorkerInfoResponse info;
  ASSERT_TRUE(service.Info(nullptr, &info_req, &info).ok());
  EXPECT_FALSE(info.loaded());
  // Another coordinator may take the worker at once.
  EXPECT_TRUE(Load(service, OneRank(kSecond, 200)).ok());
}

}  // namespace
}  // namespace llmint8::worker
