// End-to-end: a coordinator whose workers are not started yet, so requests wait in its queue
// and its capacity, deadlines and clients that stop answering can be tested deterministically.
#include <signal.h>

#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/e2e/cluster.h"
#include "tests/e2e/metrics_scrape.h"

namespace llmint8::e2e {
namespace {

constexpr char kModelDir[] = "tests/golden/tiny-opt";
constexpr char kQueued[] = "llmint8_queued_requests";
constexpr char kCancelled[] = "llmint8_requests_total{code=\"CANCELLED\"}";

// The tiny model's coordinator with its metrics on `metrics_port`, its 2 workers not started.
std::unique_ptr<Cluster> WaitingCoordinator(int metrics_port, std::vector<std::string> flags) {
  ClusterOptions options;
  options.model = SourcePath(kModelDir);
  options.start_workers = false;
  options.extra_coordinator_flags = std::move(flags);
  options.extra_coordinator_flags.push_back(
      absl::StrCat("--metrics_listen=127.0.0.1:", metrics_port));
  return std::make_unique<Cluster>(options);
}

TEST(QueueE2ETest, FullQueueIsResourceExhaustedAndDeadlineFreesTheSlot) {
  const int metrics_port = FreePort();
  std::unique_ptr<Cluster> cluster = WaitingCoordinator(metrics_port, {"--queue_capacity=1"});
  ASSERT_TRUE(WaitForHealth(cluster->address(), 2, 30)) << "expected NOT_SERVING";
  // Not ready, yet alive: a liveness probe must not restart a coordinator that waits.
  EXPECT_EQ(HealthStatus(cluster->address(), nullptr, "llmint8.v1.Generation"), 2);
  EXPECT_EQ(HealthStatus(cluster->address(), nullptr, "liveness"), 1);
  auto stub = cluster->NewStub();
  // One request waits in the single queue slot (until its deadline); short probes around
  // it are refused while it is there. Which of them takes the slot first is up to timing.
  Generated first;
  std::thread waiting([&] { first = Generate(*cluster->NewStub(), GreedyRequest({2}, 4), 3); });
  int refused = 0;
  for (int i = 0; i < 40 && refused == 0; ++i) {
    const grpc::StatusCode code = Generate(*stub, GreedyRequest({2}, 4), 0.1).status.error_code();
    EXPECT_TRUE(code == grpc::StatusCode::RESOURCE_EXHAUSTED ||
                code == grpc::StatusCode::DEADLINE_EXCEEDED)
        << code;
    refused += code == grpc::StatusCode::RESOURCE_EXHAUSTED;
  }
  waiting.join();
  refused += first.status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED;
  EXPECT_GE(refused, 1);
  EXPECT_TRUE(first.status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED ||
              first.status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED);
  // The expired requests leave the queue (the server notices a deadline within its poll,
  // later than the client on a loaded machine): the next one is queued again (and
  // expires), not refused.
  EXPECT_EQ(WaitForSample(metrics_port, kQueued, 0, 10), 0);
  EXPECT_EQ(Generate(*stub, GreedyRequest({2}, 4), 0.3).status.error_code(),
            grpc::StatusCode::DEADLINE_EXCEEDED);
}

// A client that stops answering (here SIGSTOP; a host that lost its network alike) sends no
// reset, and its stream only receives: the coordinator's keepalive ping (--client_keepalive)
// finds it out, cuts it off, and its queued request leaves the queue as CANCELLED. A client
// that answers the pings stays, however long it waits, and is served.
TEST(QueueE2ETest, AClientThatStopsAnsweringPingsIsCutOffAndItsRequestFreed) {
  const int metrics_port = FreePort();
  std::unique_ptr<Cluster> cluster = WaitingCoordinator(metrics_port, {"--client_keepalive=1s"});
  ASSERT_TRUE(WaitForHealth(cluster->address(), 2, 30)) << "expected NOT_SERVING";
  Generated live;
  std::thread live_client([&] {
    live = Generate(*cluster->NewStub(), GreedyRequest({2, 100}, 4), 120);
  });
  ASSERT_EQ(WaitForSample(metrics_port, kQueued, 1, 10), 1);

  Process silent(
      {"generate", "--coordinator=" + cluster->address(), "--token_ids=2,7", "--max_new_tokens=4"},
      cluster->log_dir() + "/silent_client.log");
  EXPECT_EQ(WaitForSample(metrics_port, kQueued, 2, 10), 2);
  silent.Signal(SIGSTOP);
  const auto stopped_at = std::chrono::steady_clock::now();
  EXPECT_EQ(WaitForSample(metrics_port, kCancelled, 1, 30), 1)
      << "the silent client's request was never freed";
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - stopped_at).count();
  std::fprintf(stderr, "the silent client was cut off %.2f s after it stopped\n", seconds);
  // A ping after 1 s without a frame, 1 s for its answer, the server's 50 ms poll.
  EXPECT_LT(seconds, 10.0);
  silent.Kill(SIGKILL);  // a stopped process takes no SIGTERM

  // The live client has answered several pings meanwhile; it is still queued, and served.
  std::this_thread::sleep_for(std::chrono::seconds(3));
  const std::string metrics = Scrape(metrics_port);
  EXPECT_EQ(Sample(metrics, kQueued), 1);
  EXPECT_EQ(Sample(metrics, kCancelled), 1);
  cluster->StartWorker(0);
  cluster->StartWorker(1);
  live_client.join();
  EXPECT_TRUE(live.status.ok()) << live.status.error_message();
  EXPECT_EQ(live.tokens.size(), 4u);
}

}  // namespace
}  // namespace llmint8::e2e
