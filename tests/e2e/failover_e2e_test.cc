// Failover. A worker killed mid-stream: the in-flight stream ends with UNAVAILABLE, health turns
// NOT_SERVING, a request sent meanwhile waits in the queue, and when the worker is back the group
// re-forms, the queued request is served and new ones succeed. A worker stopped with SIGTERM lets
// its group's running request finish first, and a rolling restart of the workers under load fails
// no request. With --group=smallest an idle worker takes the lost member's place without waiting
// for it to come back. The coordinator killed while its workers keep running (a rescheduled
// coordinator pod): its streams end UNAVAILABLE, and a new coordinator at the same address forms
// the group again once the dead one's lease on the workers lapses. A second coordinator against the
// same workers waits until the first lets them go.
#include <signal.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/file.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/cli/run_cli.h"
#include "tests/e2e/cluster.h"
#include "tests/e2e/reference.h"

namespace llmint8::e2e {
namespace {

using ::testing::ElementsAreArray;

constexpr char kTinyModel[] = "tests/golden/tiny-opt";

// The in-process runtime's greedy tokens on the tiny golden model (fp32), as the service
// must give them.
absl::StatusOr<std::vector<int32_t>> ReferenceGreedy(const std::vector<int32_t>& prompt, int n) {
  auto ref = InProcessReference::Open(SourcePath(kTinyModel), model::Precision::kF32);
  if (!ref.ok()) return ref.status();
  return (*ref)->Greedy(prompt, n);
}

// A 120-token greedy stream that has delivered its first tokens (null if it did not).
struct LongStream {
  grpc::ClientContext ctx;
  std::unique_ptr<grpc::ClientReader<v1::GenerateResponse>> reader;

  static std::unique_ptr<LongStream> Start(v1::Generation::Stub& stub) {
    auto stream = std::make_unique<LongStream>();
    stream->ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    stream->reader = stub.Generate(&stream->ctx, GreedyRequest({2, 7}, 120));
    v1::GenerateResponse resp;
    for (int i = 0; i < 3; ++i) {
      if (!stream->reader->Read(&resp)) return nullptr;
    }
    return stream;
  }
  // Reads the rest: the stream's status.
  grpc::Status Finish() {
    v1::GenerateResponse resp;
    while (reader->Read(&resp)) {
    }
    return reader->Finish();
  }
};

// The tiny model served by a coordinator and 2 workers, and the runtime's greedy tokens for
// prompt_.
class TinyGroupE2ETest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::vector<int32_t>> expected = ReferenceGreedy(prompt_, 16);
    ASSERT_TRUE(expected.ok()) << expected.status();
    expected_ = *std::move(expected);
    ClusterOptions options;
    options.model = SourcePath(kTinyModel);
    cluster_ = std::make_unique<Cluster>(options);
    ASSERT_TRUE(WaitForHealth(cluster_->address(), 1, 60)) << "never SERVING";
  }

  const std::vector<int32_t> prompt_ = {2, 100, 200, 300};
  std::vector<int32_t> expected_;
  std::unique_ptr<Cluster> cluster_;
};

TEST_F(TinyGroupE2ETest, KilledWorkerFailsStreamsThenGroupReforms) {
  Cluster& cluster = *cluster_;
  auto stub = cluster.NewStub();

  // A long stream, its worker killed after its first tokens.
  auto stream = LongStream::Start(*stub);
  ASSERT_NE(stream, nullptr);
  const auto killed_at = std::chrono::steady_clock::now();
  cluster.KillWorker(1, SIGKILL);
  const grpc::Status status = stream->Finish();
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - killed_at).count();
  std::fprintf(stderr, "stream ended %.3f s after the kill: %s\n", seconds,
               status.error_message().c_str());
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << status.error_message();
  EXPECT_TRUE(WaitForHealth(cluster.address(), 2, 10)) << "health never said NOT_SERVING";
  EXPECT_EQ(HealthStatus(cluster.address(), nullptr, "llmint8.v1.Generation"), 2);
  EXPECT_EQ(HealthStatus(cluster.address(), nullptr, "liveness"), 1) << "alive without a group";

  // Sent while the group is down: it waits in the queue.
  Generated queued;
  std::thread waiter(
      [&] { queued = Generate(*cluster.NewStub(), GreedyRequest(prompt_, 16), 60); });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  cluster.StartWorker(1);
  EXPECT_TRUE(WaitForHealth(cluster.address(), 1, 60)) << "the group never re-formed";
  EXPECT_EQ(HealthStatus(cluster.address(), nullptr, "llmint8.v1.Generation"), 1);
  waiter.join();
  ASSERT_TRUE(queued.status.ok()) << queued.status.error_message();
  EXPECT_THAT(queued.tokens, ElementsAreArray(expected_));

  Generated again = Generate(*stub, GreedyRequest(prompt_, 16));
  ASSERT_TRUE(again.status.ok()) << again.status.error_message();
  EXPECT_THAT(again.tokens, ElementsAreArray(expected_));
}

// A worker that freezes mid-stream (SIGSTOP: as a hung or cut-off host, it sends no reset):
// the stream ends with UNAVAILABLE within seconds, when the coordinator's probes miss it, not
// when its peer's collective times out; once it runs again the group re-forms.
TEST_F(TinyGroupE2ETest, AFrozenWorkerFailsItsStreamsWithinSecondsThenTheGroupReforms) {
  Cluster& cluster = *cluster_;
  auto stub = cluster.NewStub();
  auto stream = LongStream::Start(*stub);
  ASSERT_NE(stream, nullptr);
  const auto frozen_at = std::chrono::steady_clock::now();
  cluster.SignalWorker(1, SIGSTOP);
  const grpc::Status status = stream->Finish();
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - frozen_at).count();
  std::fprintf(stderr, "stream ended %.3f s after the freeze: %s\n", seconds,
               status.error_message().c_str());
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << status.error_message();
  EXPECT_LT(seconds, 10.0) << "the collective's own timeout is 30 s";
  EXPECT_TRUE(WaitForHealth(cluster.address(), 2, 10)) << "health never said NOT_SERVING";
  cluster.SignalWorker(1, SIGCONT);
  EXPECT_TRUE(WaitForHealth(cluster.address(), 1, 120)) << "the group never re-formed";
  Generated again = Generate(*stub, GreedyRequest(prompt_, 16), 60);
  ASSERT_TRUE(again.status.ok()) << again.status.error_message();
  EXPECT_THAT(again.tokens, ElementsAreArray(expected_));
}

// A worker stopped with SIGTERM (a Kubernetes rolling update) drains: the stream running on
// its group goes on to its last token, a request sent meanwhile waits in the coordinator's
// queue, and the worker exits once its group holds nothing; back, it re-forms the group and
// the queued request is served.
TEST_F(TinyGroupE2ETest, AWorkerStoppedWithSigtermLetsItsRunningRequestFinish) {
  Cluster& cluster = *cluster_;
  absl::StatusOr<std::vector<int32_t>> long_expected = ReferenceGreedy({2, 7}, 120);
  ASSERT_TRUE(long_expected.ok()) << long_expected.status();
  auto stub = cluster.NewStub();
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  auto reader = stub->Generate(&ctx, GreedyRequest({2, 7}, 120));
  std::vector<int32_t> tokens;
  v1::GenerateResponse resp;
  while (tokens.size() < 3 && reader->Read(&resp)) tokens.push_back(resp.token_id());
  ASSERT_EQ(tokens.size(), 3u);

  // EXPECT, not ASSERT, while the threads run: they must be joined.
  const std::string worker = cluster.worker_address(1);
  std::thread stopper([&] { cluster.KillWorker(1, SIGTERM); });  // returns once it exited
  // Draining: not ready (it joins no new group), still alive. It cannot exit before the
  // coordinator has probed it twice more, so the window is >= 2 probe rounds.
  EXPECT_TRUE(WaitForHealth(worker, 2, 10)) << "the draining worker still says ready";
  EXPECT_EQ(HealthStatus(worker, nullptr, "liveness"), 1);
  EXPECT_TRUE(WaitForLogLine(cluster.log_dir() + "/coordinator.log", "is shutting down", 10));
  Generated queued;
  std::thread waiter(
      [&] { queued = Generate(*cluster.NewStub(), GreedyRequest(prompt_, 16), 60); });

  while (reader->Read(&resp)) tokens.push_back(resp.token_id());
  const grpc::Status status = reader->Finish();
  EXPECT_TRUE(status.ok()) << status.error_message();
  EXPECT_THAT(tokens, ElementsAreArray(*long_expected)) << "served to its end";
  stopper.join();
  EXPECT_TRUE(WaitForHealth(cluster.address(), 2, 10)) << "health never said NOT_SERVING";

  cluster.StartWorker(1);
  EXPECT_TRUE(WaitForHealth(cluster.address(), 1, 60)) << "the group never re-formed";
  waiter.join();
  ASSERT_TRUE(queued.status.ok()) << queued.status.error_message();
  EXPECT_THAT(queued.tokens, ElementsAreArray(expected_));
}

// A rolling restart (what a Kubernetes rollout of the worker StatefulSet does): each worker in
// turn gets SIGTERM, drains, exits and comes back, while clients keep sending requests. No
// request fails, and every one gets the runtime's tokens.
TEST_F(TinyGroupE2ETest, ARollingRestartOfTheWorkersFailsNoRequest) {
  Cluster& cluster = *cluster_;
  std::atomic<bool> stop{false};
  std::atomic<int> served{0}, failed{0}, wrong{0};
  std::vector<std::thread> clients;
  for (int c = 0; c < 4; ++c) {
    clients.emplace_back([&] {
      auto stub = cluster.NewStub();
      while (!stop) {
        const Generated g = Generate(*stub, GreedyRequest(prompt_, 16), 60);
        if (!g.status.ok()) {
          ++failed;
          std::fprintf(stderr, "failed: %s\n", g.status.error_message().c_str());
        } else if (g.tokens != expected_) {
          ++wrong;
        } else {
          ++served;
        }
      }
    });
  }
  for (int rank = 0; rank < 2; ++rank) {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    cluster.KillWorker(rank, SIGTERM);  // returns once it drained and exited
    cluster.StartWorker(rank);
    EXPECT_TRUE(WaitForHealth(cluster.address(), 1, 60)) << "no group after restarting " << rank;
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  stop = true;
  for (std::thread& t : clients) t.join();
  std::fprintf(stderr, "%d served, %d failed, %d with other tokens\n", served.load(), failed.load(),
               wrong.load());
  EXPECT_EQ(failed.load(), 0);
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_GT(served.load(), 8);
}

// A worker that gets SIGTERM while its group is already broken (its peer died) still holds a
// cached sequence of that group, which nobody will release: the re-forming coordinator lets
// it go at its first probe, so it exits at once rather than after its 120 s drain timeout.
TEST(WorkerDrainE2ETest, ADrainingWorkerOfABrokenGroupIsLetGoAtOnce) {
  ClusterOptions options;
  options.model = SourcePath(kTinyModel);
  options.extra_worker_flags = {"--drain_timeout=120s"};
  Cluster cluster(options);
  ASSERT_TRUE(WaitForHealth(cluster.address(), 1, 60)) << "never SERVING";
  std::vector<int32_t> prompt = {2};  // long enough for the prefix cache to keep
  for (int t = 1; t < 30; ++t) prompt.push_back((t * 41 + 3) % 1000);
  const Generated cached = Generate(*cluster.NewStub(), GreedyRequest(prompt, 4));
  ASSERT_TRUE(cached.status.ok()) << cached.status.error_message();
  ASSERT_TRUE(cluster.WaitActiveSequences(2)) << "the finished sequence stays cached on both";

  cluster.KillWorker(0, SIGKILL);
  ASSERT_TRUE(WaitForHealth(cluster.address(), 2, 10)) << "health never said NOT_SERVING";
  const auto stopped_at = std::chrono::steady_clock::now();
  cluster.KillWorker(1, SIGTERM);  // returns once it exited
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - stopped_at).count();
  std::fprintf(stderr, "the draining worker exited %.3f s after SIGTERM\n", seconds);
  EXPECT_LT(seconds, 30) << "it waited for its drain timeout";
  EXPECT_TRUE(WaitForLogLine(cluster.log_dir() + "/worker1.log", "let this worker go", 1));
}

// A worker killed while the server is idle, with a finished sequence kept for its prefix
// (the prefix cache): the re-formed group holds none of it, so a prompt that starts alike is
// prefilled in full, with the runtime's tokens, and not sent to start from a sequence the new
// group never had.
TEST(WorkerFailureE2ETest, ReformedGroupForgetsTheCachedPrefixes) {
  std::vector<int32_t> prompt = {2};
  for (int t = 1; t < 30; ++t) prompt.push_back((t * 41 + 3) % 1000);
  auto expected = ReferenceGreedy(prompt, 6);
  ASSERT_TRUE(expected.ok()) << expected.status();

  ClusterOptions options;
  options.model = SourcePath(kTinyModel);
  Cluster cluster(options);
  ASSERT_TRUE(WaitForHealth(cluster.address(), 1, 60)) << "never SERVING";
  auto stub = cluster.NewStub();
  Generated first = Generate(*stub, GreedyRequest(prompt, 6));
  ASSERT_TRUE(first.status.ok()) << first.status.error_message();
  Generated cached = Generate(*stub, GreedyRequest(prompt, 6));
  ASSERT_TRUE(cached.status.ok()) << cached.status.error_message();
  EXPECT_THAT(cached.tokens, ElementsAreArray(*expected));
  ASSERT_EQ(cached.responses.back().usage().cached_prompt_tokens(), 29);

  cluster.KillWorker(1, SIGKILL);
  EXPECT_TRUE(WaitForHealth(cluster.address(), 2, 10)) << "health never said NOT_SERVING";
  cluster.StartWorker(1);
  ASSERT_TRUE(WaitForHealth(cluster.address(), 1, 60)) << "the group never re-formed";
  Generated after = Generate(*stub, GreedyRequest(prompt, 6));
  ASSERT_TRUE(after.status.ok()) << after.status.error_message();
  EXPECT_THAT(after.tokens, ElementsAreArray(*expected));
  EXPECT_EQ(after.responses.back().usage().cached_prompt_tokens(), 0);
}

v1::ModelInfo ModelInfo(v1::Generation::Stub& stub) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  v1::ModelInfo info;
  const grpc::Status s = stub.GetModelInfo(&ctx, v1::GetModelInfoRequest(), &info);
  EXPECT_TRUE(s.ok()) << s.error_message();
  return info;
}

// The member of a one-worker group, as an index into the cluster's workers; -1 if none.
// A Generate sent until it is refused FAILED_PRECONDITION (once the group was chosen, or
// loaded), at most 300 times; the last answer.
Generated AwaitRefusal(const Cluster& cluster) {
  Generated refused;
  for (int i = 0; i < 300; ++i) {
    refused = Generate(*cluster.NewStub(), GreedyRequest({2, 100}, 4), 5);
    if (refused.status.error_code() == grpc::StatusCode::FAILED_PRECONDITION) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return refused;
}

// The failed LoadShard calls a worker's log shows.
size_t LoadFailures(const std::string& log_path) {
  const std::string log = ReadFileToString(log_path).value_or("");
  size_t failures = 0;
  for (size_t at = log.find(") failed: "); at != std::string::npos;
       at = log.find(") failed: ", at + 1)) {
    ++failures;
  }
  return failures;
}

int SoleMember(const Cluster& cluster, const v1::ModelInfo& info, int workers) {
  if (info.tensor_parallel() != 1) return -1;
  for (const v1::WorkerInfo& w : info.workers()) {
    if (w.rank() != 0) continue;
    for (int i = 0; i < workers; ++i) {
      if (cluster.worker_address(i) == w.address()) return i;
    }
  }
  return -1;
}

// Three workers of which --group=smallest takes one: the tiny model fits one worker, so the
// group is TP = 1 and leaves two idle.
constexpr int kWorkers = 3;
ClusterOptions SmallestGroupOfThree() {
  ClusterOptions options;
  options.model = SourcePath(kTinyModel);
  options.dtype = "fp16";  // planned (fp32 is not): the group is chosen from memory reports
  options.workers = kWorkers;
  options.extra_coordinator_flags = {"--group=smallest", "--join_wait=1s"};
  return options;
}

TEST(WorkerFailureE2ETest, IdleWorkerReplacesLostMemberUnderSmallestGroup) {
  Cluster cluster(SmallestGroupOfThree());
  ASSERT_TRUE(WaitForHealth(cluster.address(), 1, 60)) << "never SERVING";
  auto stub = cluster.NewStub();
  const int first = SoleMember(cluster, ModelInfo(*stub), kWorkers);
  ASSERT_GE(first, 0) << "expected a TP = 1 group of one of the " << kWorkers << " workers";

  const std::vector<int32_t> prompt = {2, 100, 200, 300};
  Generated before = Generate(*stub, GreedyRequest(prompt, 16));
  ASSERT_TRUE(before.status.ok()) << before.status.error_message();
  ASSERT_EQ(before.tokens.size(), 16u);

  // The member dies and stays dead; an idle worker takes over within the join wait.
  const auto killed_at = std::chrono::steady_clock::now();
  cluster.KillWorker(first, SIGKILL);
  ASSERT_TRUE(WaitForHealth(cluster.address(), 2, 10)) << "health never said NOT_SERVING";
  ASSERT_TRUE(WaitForHealth(cluster.address(), 1, 30)) << "no idle worker took over";
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - killed_at).count();
  std::fprintf(stderr, "serving again %.3f s after the kill, without the lost worker\n", seconds);
  const int second = SoleMember(cluster, ModelInfo(*stub), kWorkers);
  ASSERT_GE(second, 0);
  EXPECT_NE(second, first);

  Generated after = Generate(*stub, GreedyRequest(prompt, 16));
  ASSERT_TRUE(after.status.ok()) << after.status.error_message();
  EXPECT_THAT(after.tokens, ElementsAreArray(before.tokens));  // the same model, TP and dtype
}

// One worker listed twice under two names (here 127.0.0.1 and localhost): the coordinator
// refuses to form a group of it, naming both, instead of waiting for ever for the second rank.
TEST(WorkerFailureE2ETest, OneWorkerListedUnderTwoNamesIsRefused) {
  ClusterOptions options;
  options.model = SourcePath(kTinyModel);
  options.workers = 1;
  options.list_worker0_twice = true;
  Cluster cluster(options);
  const Generated refused = AwaitRefusal(cluster);
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::FAILED_PRECONDITION)
      << refused.status.error_message();
  EXPECT_THAT(refused.status.error_message(),
              ::testing::HasSubstr(
                  absl::StrCat("workers 0 (", cluster.worker_address(0), ") and 1 (localhost:")));
  EXPECT_THAT(refused.status.error_message(), ::testing::HasSubstr("are one process"));
}

// A member that misses one probe (frozen for 1.5 s: a probe of 1 s times out, the next one is
// answered) stays in the group: the group is not broken, and no worker loads its shard again.
TEST(WorkerFailureE2ETest, AMemberThatMissesOneProbeStaysInTheGroup) {
  ClusterOptions options;
  options.model = SourcePath(kTinyModel);
  Cluster cluster(options);
  ASSERT_TRUE(WaitForHealth(cluster.address(), 1, 60)) << "never SERVING";
  // A probe sent in the freeze's first 0.5 s times out; the monitor sends one every 0.25 s
  // or so, but a busy machine may delay it past that window: then the freeze is tried again.
  const std::string log_path = cluster.log_dir() + "/coordinator.log";
  std::string log;
  for (int attempt = 0; attempt < 3; ++attempt) {
    cluster.SignalWorker(1, SIGSTOP);
    std::this_thread::sleep_for(std::chrono::milliseconds(1500));
    cluster.SignalWorker(1, SIGCONT);
    std::this_thread::sleep_for(std::chrono::milliseconds(1500));
    log = ReadFileToString(log_path).value_or("");
    if (absl::StrContains(log, "asking again")) break;
  }
  Generated served = Generate(*cluster.NewStub(), GreedyRequest({2, 100, 200, 300}, 4));
  EXPECT_TRUE(served.status.ok()) << served.status.error_message();
  log = ReadFileToString(log_path).value_or("");
  EXPECT_THAT(log, ::testing::HasSubstr("did not answer a probe within 1s: asking again"))
      << "no probe timed out in three freezes";
  EXPECT_THAT(log, ::testing::Not(::testing::HasSubstr("is unreachable")));
  EXPECT_THAT(log, ::testing::Not(::testing::HasSubstr("a worker left the group")));
}

// A member that froze (SIGSTOP) is replaced by an idle worker; when it runs again it idles with
// the old group's shard, and the coordinator lets it go: it drops the shard (whose memory, on a
// shared GPU, may be the new group's).
TEST(WorkerFailureE2ETest, AMemberBackFromAFreezeDropsItsOldShard) {
  Cluster cluster(SmallestGroupOfThree());
  ASSERT_TRUE(WaitForHealth(cluster.address(), 1, 60)) << "never SERVING";
  auto stub = cluster.NewStub();
  const int first = SoleMember(cluster, ModelInfo(*stub), kWorkers);
  ASSERT_GE(first, 0);
  absl::StatusOr<v1::StatsResponse> before = cluster.WorkerStats(first);
  ASSERT_TRUE(before.ok()) << before.status();
  ASSERT_GT(before->total_bytes(), 0);

  cluster.SignalWorker(first, SIGSTOP);
  ASSERT_TRUE(WaitForHealth(cluster.address(), 2, 10)) << "health never said NOT_SERVING";
  ASSERT_TRUE(WaitForHealth(cluster.address(), 1, 30)) << "no idle worker took over";
  const int second = SoleMember(cluster, ModelInfo(*stub), kWorkers);
  ASSERT_GE(second, 0);
  EXPECT_NE(second, first);
  cluster.SignalWorker(first, SIGCONT);
  EXPECT_TRUE(WaitForLogLine(absl::StrCat(cluster.log_dir(), "/worker", first, ".log"),
                             "dropping the shard of group epoch", 20));
  absl::StatusOr<v1::StatsResponse> after = cluster.WorkerStats(first);
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(after->total_bytes(), 0);
  Generated served = Generate(*stub, GreedyRequest({2, 100, 200, 300}, 8));
  EXPECT_TRUE(served.status.ok()) << served.status.error_message();
  // GetModelInfo shows the shard figures of the members only, not the old group's of the
  // worker that left it.
  const v1::ModelInfo info = ModelInfo(*stub);
  ASSERT_EQ(info.workers_size(), kWorkers);
  for (const v1::WorkerInfo& w : info.workers()) {
    if (w.rank() == 0) {
      EXPECT_GT(w.weight_bytes(), 0) << w.address();
      EXPECT_GT(w.total_bytes(), 0) << w.address();
    } else {
      EXPECT_EQ(w.weight_bytes(), 0) << w.address();
      EXPECT_EQ(w.kv_cache_bytes(), 0) << w.address();
      EXPECT_EQ(w.total_bytes(), 0) << w.address();
    }
  }
}

// --group=smallest leaves out the workers that run on another device than the group's (they
// would refuse the shard, every time): with none left, requests are refused naming them.
TEST(WorkerFailureE2ETest, ASmallestGroupLeavesOutWorkersOnAnotherDevice) {
  ClusterOptions options = SmallestGroupOfThree();
  options.extra_coordinator_flags.push_back("--device=cuda");  // the workers run on cpu
  Cluster cluster(options);
  const Generated refused = AwaitRefusal(cluster);
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::FAILED_PRECONDITION)
      << refused.status.error_message();
  EXPECT_THAT(refused.status.error_message(), ::testing::HasSubstr("no worker runs on cuda"));
  EXPECT_THAT(refused.status.error_message(), ::testing::HasSubstr("runs on cpu"));
}

// A coordinator stopped while its workers load (a long load: 1.3B-shaped weights generated on
// the CPU) does not wait for the load: it cancels it, and the workers stop loading at their
// next layer instead of finishing a shard nobody will use.
TEST(StopWhileLoadingE2ETest, AStoppedCoordinatorCancelsTheLoadsInsteadOfWaitingForThem) {
  ClusterOptions options;
  options.model = "synthetic:1.3b";
  options.dtype = "fp16";
  Cluster cluster(options);
  ASSERT_TRUE(
      WaitForLogLine(cluster.log_dir() + "/worker0.log", "loading shard 1/2: layer 1/", 120));
  const auto stopped_at = std::chrono::steady_clock::now();
  cluster.StopCoordinator(SIGTERM);  // waits for it to exit
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - stopped_at).count();
  // (Loading the shards takes a minute here: 15 s tells the two apart on a loaded machine.)
  EXPECT_LT(seconds, 15.0) << "the coordinator waited for the load";
  for (int rank = 0; rank < 2; ++rank) {
    EXPECT_TRUE(WaitForLogLine(absl::StrCat(cluster.log_dir(), "/worker", rank, ".log"),
                               "the coordinator cancelled the load at layer", 60))
        << "worker " << rank << " went on loading";
  }
}

// A worker that cannot reach the rendezvous (it dials the coordinator's public port, which
// serves none with --rendezvous_listen) fails each load at once, while its peer waits in the
// rendezvous for it; the coordinator gives up on that group and forms a new one every second.
// The peer must drop each load given up (cancelled, or superseded by a newer epoch) rather
// than queue them and sit out a 30 s rendezvous for each: once the worker is mended, the
// group forms within seconds (before, loads piled up faster than they drained, and it never
// did).
TEST(WorkerFailureE2ETest, LoadsGivenUpDoNotPileUpOnTheWaitingWorker) {
  const int rendezvous_port = FreePort();
  ClusterOptions options;
  options.model = SourcePath(kTinyModel);
  options.start_workers = false;
  options.extra_coordinator_flags = {
      absl::StrCat("--rendezvous_listen=127.0.0.1:", rendezvous_port)};
  Cluster cluster(options);
  cluster.StartWorker(0);
  cluster.StartWorker(1, {absl::StrCat("--coordinator=", cluster.address())});
  // Eight formations given up (about one a second), each a load left on worker 0.
  ASSERT_TRUE(WaitForLogLine(cluster.log_dir() + "/coordinator.log", "no Rendezvous there", 60, 8))
      << "the misdirected worker's loads did not fail as expected";
  EXPECT_NE(HealthStatus(cluster.address()), 1);
  cluster.KillWorker(1, SIGTERM);
  cluster.StartWorker(1);
  EXPECT_TRUE(WaitForHealth(cluster.address(), 1, 20))
      << "the group did not form within 20 s of the worker being mended";
  EXPECT_TRUE(
      WaitForLogLine(cluster.log_dir() + "/worker0.log", "gave up on it before it began", 1) ||
      WaitForLogLine(cluster.log_dir() + "/worker0.log", "asked for a newer group", 1) ||
      WaitForLogLine(cluster.log_dir() + "/worker0.log", "was given up", 1))
      << "worker 0 never dropped a given-up load";
}

// Whether worker `index`'s healthy flag in GetModelInfo becomes `want` within 10 s.
bool WaitWorkerHealthy(const Cluster& cluster, int index, bool want) {
  auto stub = cluster.NewStub();
  for (int i = 0; i < 100; ++i) {
    const v1::ModelInfo info = ModelInfo(*stub);
    for (const v1::WorkerInfo& w : info.workers()) {
      if (w.address() == cluster.worker_address(index) && w.healthy() == want) return true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return false;
}

// The spares' state stays current while the group serves (they are probed too, every 2 s):
// a spare that dies shows as not answering, and healthy again once it is back.
TEST(WorkerFailureE2ETest, ASparesStateIsKeptCurrentWhileTheGroupServes) {
  Cluster cluster(SmallestGroupOfThree());
  ASSERT_TRUE(WaitForHealth(cluster.address(), 1, 60)) << "never SERVING";
  auto stub = cluster.NewStub();
  const int member = SoleMember(cluster, ModelInfo(*stub), kWorkers);
  ASSERT_GE(member, 0);
  const int spare = (member + 1) % kWorkers;
  ASSERT_TRUE(WaitWorkerHealthy(cluster, spare, true));

  cluster.KillWorker(spare, SIGKILL);
  EXPECT_TRUE(WaitWorkerHealthy(cluster, spare, false)) << "the dead spare still looks healthy";
  cluster.StartWorker(spare);
  EXPECT_TRUE(WaitWorkerHealthy(cluster, spare, true)) << "the spare back never looked healthy";
  EXPECT_EQ(SoleMember(cluster, ModelInfo(*stub), kWorkers), member) << "the group stayed";
}

TEST_F(TinyGroupE2ETest, ANewCoordinatorReformsTheGroupFromTheRunningWorkers) {
  Cluster& cluster = *cluster_;
  {
    auto stub = cluster.NewStub();
    const Generated before = Generate(*stub, GreedyRequest(prompt_, 16));
    ASSERT_TRUE(before.status.ok()) << before.status.error_message();
    EXPECT_THAT(before.tokens, ElementsAreArray(expected_));

    // A long stream, its coordinator killed after its first tokens.
    auto stream = LongStream::Start(*stub);
    ASSERT_NE(stream, nullptr);
    ASSERT_GT(cluster.ActiveSequences(), 0) << "the stream's sequence is on the workers";
    cluster.RestartCoordinator(SIGKILL);
    const grpc::Status status = stream->Finish();
    EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << status.error_message();
  }

  const auto restarted_at = std::chrono::steady_clock::now();
  ASSERT_TRUE(WaitForHealth(cluster.address(), 1, 60)) << "the new coordinator never SERVING";
  std::fprintf(
      stderr, "the new coordinator served %.3f s after its start\n",
      std::chrono::duration<double>(std::chrono::steady_clock::now() - restarted_at).count());
  EXPECT_EQ(cluster.ActiveSequences(), 0) << "a sequence of the old group survived";
  auto stub = cluster.NewStub();
  const Generated after = Generate(*stub, GreedyRequest(prompt_, 16));
  ASSERT_TRUE(after.status.ok()) << after.status.error_message();
  EXPECT_THAT(after.tokens, ElementsAreArray(expected_));
}

// A second coordinator started by mistake against the same workers: the first one's lease
// keeps the workers (worker/coordinator_lease.h), so the second waits, NOT_SERVING, and says
// why, while the first serves on undisturbed. When the first stops (SIGTERM) it lets the
// workers go, and the second forms its group at once (the first's lease is 120 s, so only
// that release lets it in within the test's wait) and serves the request queued with it.
TEST(TwoCoordinatorsE2ETest, TheSecondWaitsForTheFirstToLetGo) {
  const std::vector<int32_t> prompt = {2, 100, 200, 300};
  absl::StatusOr<std::vector<int32_t>> expected = ReferenceGreedy(prompt, 16);
  ASSERT_TRUE(expected.ok()) << expected.status();
  ClusterOptions options;
  options.model = SourcePath(kTinyModel);
  options.extra_coordinator_flags = {"--worker_lease=120s"};
  Cluster cluster(options);
  ASSERT_TRUE(WaitForHealth(cluster.address(), 1, 60)) << "never SERVING";

  const std::string second = absl::StrCat("127.0.0.1:", FreePort());
  const std::string log = cluster.log_dir() + "/second-coordinator.log";
  Process other(
      {"coordinator", "--listen=" + second,
       absl::StrCat("--workers=", cluster.worker_address(0), ",", cluster.worker_address(1)),
       "--model=" + SourcePath(kTinyModel), "--dtype=fp32"},
      log);
  ASSERT_TRUE(WaitForLogLine(log, "another coordinator's group holds 0, 1", 30))
      << "the second coordinator never said the workers are held";
  EXPECT_TRUE(WaitForHealth(second, 2, 10)) << "the second coordinator is not NOT_SERVING";
  // `llmint8 status` says so: exit 1 (not serving), each worker held by another coordinator.
  const std::string status = absl::StrCat(LlmintBinary(), " status --coordinator=", second);
  EXPECT_EQ(WEXITSTATUS(std::system((status + " > /dev/null").c_str())), 1);
  absl::StatusOr<std::string> json_status = RunAndRead(status + " --json || true");
  ASSERT_TRUE(json_status.ok()) << json_status.status();
  const nlohmann::json j = nlohmann::json::parse(*json_status, nullptr, /*allow_exceptions=*/false);
  ASSERT_FALSE(j.is_discarded()) << *json_status;
  EXPECT_EQ(j.value("health", ""), "NOT_SERVING") << *json_status;
  ASSERT_EQ(j["model_info"]["workers"].size(), 2u) << *json_status;
  for (const nlohmann::json& w : j["model_info"]["workers"]) {
    EXPECT_TRUE(w.value("held_by_another", false)) << w.dump();
    EXPECT_EQ(w.value("state", ""), "held_by_another") << w.dump();
    EXPECT_FALSE(w.value("healthy", true)) << w.dump();
  }
  absl::StatusOr<std::string> first_status =
      RunAndRead(absl::StrCat(LlmintBinary(), " status --coordinator=", cluster.address()));
  ASSERT_TRUE(first_status.ok()) << first_status.status();  // exit 0: SERVING
  EXPECT_NE(first_status->find(": SERVING\n"), std::string::npos) << *first_status;

  // A request to the second waits in its queue; the first serves every one of its own.
  std::atomic<bool> queued_done{false};
  Generated queued;
  std::thread waiter([&] {
    auto stub =
        v1::Generation::NewStub(grpc::CreateChannel(second, grpc::InsecureChannelCredentials()));
    queued = Generate(*stub, GreedyRequest(prompt, 16), 60);
    queued_done = true;
  });
  std::vector<std::thread> clients;
  std::vector<Generated> served(8);
  for (size_t c = 0; c < served.size(); ++c) {
    clients.emplace_back(
        [&, c] { served[c] = Generate(*cluster.NewStub(), GreedyRequest(prompt, 16), 30); });
  }
  for (std::thread& t : clients) t.join();
  for (const Generated& g : served) {  // EXPECT: the waiter must be joined
    EXPECT_TRUE(g.status.ok()) << g.status.error_message();
    EXPECT_THAT(g.tokens, ElementsAreArray(*expected));
  }
  EXPECT_FALSE(queued_done.load()) << "the second coordinator served while the first held";

  const auto stopped_at = std::chrono::steady_clock::now();
  cluster.StopCoordinator(SIGTERM);
  EXPECT_TRUE(WaitForHealth(second, 1, 30)) << "the second never took the workers";
  std::fprintf(
      stderr, "the second coordinator served %.3f s after the first was stopped\n",
      std::chrono::duration<double>(std::chrono::steady_clock::now() - stopped_at).count());
  waiter.join();
  ASSERT_TRUE(queued.status.ok()) << queued.status.error_message();
  EXPECT_THAT(queued.tokens, ElementsAreArray(*expected));
}

// A model the workers cannot load (here a truncated safetensors file) is refused, not waited
// for: requests fail FAILED_PRECONDITION with the workers' reason at once instead of waiting
// in the queue for ever, and health stays NOT_SERVING. The coordinator keeps trying (after 1,
// 2, 4 ... s), so once the file is mended the group forms and serves.
// A copy of the tiny model whose model.safetensors is cut in half: its header promises
// tensors past the file's end. Empty on failure.
std::string TruncatedTinyModel() {
  std::string dir = ::testing::TempDir() + "/llmint8-broken-model-XXXXXX";
  if (mkdtemp(dir.data()) == nullptr) return "";
  const std::string good = SourcePath(kTinyModel);
  std::error_code ec;
  std::filesystem::copy_file(good + "/config.json", dir + "/config.json", ec);
  absl::StatusOr<std::string> weights = ReadFileToString(good + "/model.safetensors");
  if (ec || !weights.ok()) return "";
  std::ofstream(dir + "/model.safetensors", std::ios::binary)
      << weights->substr(0, weights->size() / 2);
  return dir;
}

// One --model naming different checkpoints on different workers (here a relative path, read
// in each worker's own directory; on a cluster, another version on one host's disk): the
// group is refused, naming each worker's checkpoint, instead of serving a model that is
// neither (each rank's slices from another checkpoint, the output wrong with no error).
TEST(BrokenModelE2ETest, WorkersThatLoadedDifferentCheckpointsAreRefused) {
  std::string root = ::testing::TempDir() + "/llmint8-two-models-XXXXXX";
  ASSERT_NE(mkdtemp(root.data()), nullptr);
  for (const char* host : {"a", "b"}) {
    std::filesystem::create_directories(absl::StrCat(root, "/", host));
    std::filesystem::copy(SourcePath(kTinyModel), absl::StrCat(root, "/", host, "/model"),
                          std::filesystem::copy_options::recursive);
  }
  {
    // b's last weight differs in its lowest bits (a last row's last elements are sampled).
    const std::string path = root + "/b/model/model.safetensors";
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(-4, std::ios::end);
    const char byte = static_cast<char>(f.get() ^ 1);
    f.seekp(-4, std::ios::end);
    f.put(byte);
  }
  ClusterOptions options;
  options.model = "model";
  options.coordinator_cwd = root + "/a";
  options.worker_cwds = {root + "/a", root + "/b"};
  Cluster cluster(options);
  const Generated refused = AwaitRefusal(cluster);  // once the group is loaded and compared
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::FAILED_PRECONDITION)
      << refused.status.error_message();
  EXPECT_THAT(refused.status.error_message(),
              ::testing::HasSubstr("the workers loaded different checkpoints as model"));
  EXPECT_THAT(
      refused.status.error_message(),
      ::testing::HasSubstr(absl::StrCat("worker 1 (", cluster.worker_address(1), ") has ")));
  EXPECT_EQ(HealthStatus(cluster.address()), 2);
  std::error_code ec;
  std::filesystem::remove_all(root, ec);
}

// The load is tried again after 1, 2, 4 ... s, and a worker that was away all along (a dead
// spare under --group=smallest) does not cut those waits short: in 8 s, at most 4 tries.
TEST(BrokenModelE2ETest, ADeadSpareDoesNotCutTheRetryWaitShort) {
  const std::string dir = TruncatedTinyModel();
  ASSERT_FALSE(dir.empty());
  ClusterOptions options = SmallestGroupOfThree();
  options.model = dir;
  options.start_workers = false;
  Cluster cluster(options);
  cluster.StartWorker(0);
  cluster.StartWorker(1);  // worker 2 never starts
  ASSERT_TRUE(WaitForLogLine(cluster.log_dir() + "/coordinator.log", "worker group: refused", 30));
  std::this_thread::sleep_for(std::chrono::seconds(8));
  size_t tries = 0;
  for (int rank = 0; rank < 2; ++rank) {
    tries += LoadFailures(absl::StrCat(cluster.log_dir(), "/worker", rank, ".log"));
  }
  EXPECT_GE(tries, 2u) << "the load was not tried again";
  EXPECT_LE(tries, 4u) << "the retries did not wait 1, 2, 4 ... s";
  // Nor does it make the refusal stale: requests keep being refused with the reason, not
  // queued as if a worker had just been lost.
  EXPECT_THAT(ReadFileToString(cluster.log_dir() + "/coordinator.log").value_or(""),
              ::testing::Not(::testing::HasSubstr("worker group: broken: UNAVAILABLE: waiting")));
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
}

TEST(BrokenModelE2ETest, AModelTheWorkersCannotLoadIsRefusedUntilItIsMended) {
  const std::string dir = TruncatedTinyModel();
  ASSERT_FALSE(dir.empty());
  absl::StatusOr<std::string> weights =
      ReadFileToString(SourcePath(kTinyModel) + "/model.safetensors");
  ASSERT_TRUE(weights.ok()) << weights.status();

  ClusterOptions options;
  options.model = dir;
  Cluster cluster(options);
  EXPECT_TRUE(WaitForLogLine(cluster.log_dir() + "/coordinator.log", "worker group: refused", 30));
  const std::vector<int32_t> prompt = {2, 100, 200, 300};
  const auto sent = std::chrono::steady_clock::now();
  Generated refused = Generate(*cluster.NewStub(), GreedyRequest(prompt, 4), 60);
  const double waited =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - sent).count();
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::FAILED_PRECONDITION)
      << refused.status.error_message();
  EXPECT_THAT(refused.status.error_message(), ::testing::HasSubstr("the workers cannot load"));
  EXPECT_THAT(refused.status.error_message(), ::testing::HasSubstr("model.safetensors"));
  EXPECT_LT(waited, 40.0) << "refused within one retry, not left in the queue";
  EXPECT_EQ(HealthStatus(cluster.address()), 2);
  EXPECT_EQ(HealthStatus(cluster.address(), nullptr, "liveness"), 1);

  // A worker gone (restarted to mend its volume, say): the refusal is stale, and requests
  // wait for the workers again (here until their deadline) rather than fail with it. The
  // workers are probed while the coordinator waits to try the load again (8 s after the
  // fourth failure): the loss is seen within a probe or two, not after that wait.
  // The coordinator has the fourth failure and waits 8 s: the kill is the loss of a worker,
  // not a load's failure.
  ASSERT_TRUE(WaitForLogLine(cluster.log_dir() + "/coordinator.log",
                             "worker group: load failure 4; trying again in 8s", 60));
  const auto killed_at = std::chrono::steady_clock::now();
  cluster.KillWorker(1, SIGKILL);
  EXPECT_TRUE(WaitForLogLine(cluster.log_dir() + "/coordinator.log",
                             "worker group: broken: UNAVAILABLE: waiting for", 40));
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - killed_at).count(),
            4.0)
      << "the loss was seen only after the retry's wait";
  Generated waited_for = Generate(*cluster.NewStub(), GreedyRequest(prompt, 4), 1.0);
  EXPECT_EQ(waited_for.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED)
      << waited_for.status.error_message();
  cluster.StartWorker(1);

  // Mended (a new file renamed over the old, as a copy tool does).
  std::ofstream(dir + "/model.safetensors.new", std::ios::binary) << *weights;
  std::filesystem::rename(dir + "/model.safetensors.new", dir + "/model.safetensors");
  EXPECT_TRUE(WaitForHealth(cluster.address(), 1, 60)) << "never formed after the fix";
  absl::StatusOr<std::vector<int32_t>> expected = ReferenceGreedy(prompt, 16);
  ASSERT_TRUE(expected.ok()) << expected.status();
  Generated served = Generate(*cluster.NewStub(), GreedyRequest(prompt, 16));
  ASSERT_TRUE(served.status.ok()) << served.status.error_message();
  EXPECT_THAT(served.tokens, ElementsAreArray(*expected));
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
}

// `serve` started the workers itself, so nothing will mend a model they cannot load: it says
// why and exits 1 instead of refusing every request for ever.
TEST(BrokenModelE2ETest, ServeExitsWhenItsWorkersCannotLoadTheModel) {
  const std::string dir = TruncatedTinyModel();
  ASSERT_FALSE(dir.empty());
  const auto start = std::chrono::steady_clock::now();
  const tools::testing::CliResult r =
      tools::testing::RunCli(absl::StrCat("serve --tp=2 --listen=127.0.0.1:", FreePort(),
                                          " --worker_base_port=", FreePort(2), " --model=", dir));
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_THAT(r.err, ::testing::HasSubstr("serve: the workers cannot load " + dir));
  EXPECT_THAT(r.err, ::testing::HasSubstr("(file truncated?)"));
  EXPECT_LT(seconds, 30.0);
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
}

}  // namespace
}  // namespace llmint8::e2e
