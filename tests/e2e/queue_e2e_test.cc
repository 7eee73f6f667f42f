// End-to-end: a coordinator whose workers are not started yet, so requests wait in its queue
// and its capacity, deadlines and clients that stop answering can be tested deterministically.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "gtest/gtest.h"
#include "httplib.h"
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

// Over HTTP a full queue is 429 with Retry-After (what OpenAI clients' retry loops read) and
// the API's rate-limit error.
TEST(QueueE2ETest, AFullQueueOverHttpIs429WithRetryAfter) {
  const int metrics_port = FreePort(), http_port = FreePort();
  std::unique_ptr<Cluster> cluster = WaitingCoordinator(
      metrics_port, {absl::StrCat("--http_listen=127.0.0.1:", http_port), "--queue_capacity=1"});
  ASSERT_TRUE(WaitForHealth(cluster->address(), 2, 30)) << "expected NOT_SERVING";
  const std::string body = R"({"prompt": [2, 7], "max_tokens": 4})";
  httplib::Client first("127.0.0.1", http_port);  // takes the one slot until stopped below
  first.set_read_timeout(120);
  std::thread waiting([&] { first.Post("/v1/completions", body, "application/json"); });
  EXPECT_EQ(WaitForSample(metrics_port, kQueued, 1, 10), 1);
  httplib::Client client("127.0.0.1", http_port);
  client.set_read_timeout(60);
  const httplib::Result refused = client.Post("/v1/completions", body, "application/json");
  first.stop();
  waiting.join();
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->status, 429) << refused->body;
  EXPECT_EQ(refused->get_header_value("Retry-After"), "1");
  EXPECT_NE(refused->body.find(R"("type":"rate_limit_error")"), std::string::npos) << refused->body;
  EXPECT_NE(refused->body.find("the request queue is full (1 waiting requests)"), std::string::npos)
      << refused->body;
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

// The timer the kernel runs for the loopback connection from `local_port` to `remote_port`
// (/proc/net/tcp's "tr": 0 none, 1 retransmit, 2 keepalive, ...); -1 when it is not there.
int TcpTimer(int local_port, int remote_port) {
  const std::string local = absl::StrFormat("0100007F:%04X", local_port);
  const std::string remote = absl::StrFormat("0100007F:%04X", remote_port);
  std::ifstream table("/proc/net/tcp");
  std::string line;
  std::getline(table, line);  // the header
  while (std::getline(table, line)) {
    std::istringstream fields(line);
    std::string slot, from, to, state, queues, timer;
    fields >> slot >> from >> to >> state >> queues >> timer;
    int tr = 0;
    if (from == local && to == remote && absl::SimpleHexAtoi(timer.substr(0, 2), &tr)) return tr;
  }
  return -1;
}

// An HTTP client of a streamed completion that closes its connection while the request
// waits in the queue (nothing written to it yet) has it cancelled at once. Its connection has
// TCP keepalive on: a client host that vanishes, sending no FIN or reset, is found out too
// (--client_keepalive): the kernel probes it once the keepalive timer runs, which the test
// reads from the connection table (a vanished host itself would take network namespaces).
TEST(QueueE2ETest, AnHttpStreamWhoseClientLeavesWhileQueuedIsCancelled) {
  const int metrics_port = FreePort(), http_port = FreePort();
  std::unique_ptr<Cluster> cluster = WaitingCoordinator(
      metrics_port, {absl::StrCat("--http_listen=127.0.0.1:", http_port), "--client_keepalive=5s"});
  ASSERT_TRUE(WaitForHealth(cluster->address(), 2, 30)) << "expected NOT_SERVING";

  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(http_port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)), 0);
  sockaddr_in mine{};
  socklen_t mine_size = sizeof(mine);
  ASSERT_EQ(getsockname(fd, reinterpret_cast<sockaddr*>(&mine), &mine_size), 0);
  const int client_port = ntohs(mine.sin_port);
  const std::string body = R"({"prompt": [2, 7], "max_tokens": 4, "stream": true})";
  const std::string request = absl::StrCat(
      "POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
      "Content-Length: ",
      body.size(), "\r\n\r\n", body);
  ASSERT_EQ(send(fd, request.data(), request.size(), MSG_NOSIGNAL),
            static_cast<ssize_t>(request.size()));
  // The stream's headers go out as it joins the queue.
  timeval timeout{.tv_sec = 10, .tv_usec = 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  std::string answer;
  char buf[1024];
  ssize_t n;
  while (answer.find("\r\n\r\n") == std::string::npos && (n = recv(fd, buf, sizeof(buf), 0)) > 0) {
    answer.append(buf, static_cast<size_t>(n));
  }
  EXPECT_TRUE(answer.starts_with("HTTP/1.1 200")) << answer;
  EXPECT_EQ(WaitForSample(metrics_port, kQueued, 1, 10), 1);
  // Keepalive armed on the server's end (inherited from the listening socket): once the
  // headers are acknowledged its only timer is the keepalive one.
  int timer = -1;
  for (int i = 0; i < 100 && timer != 2; ++i) {
    timer = TcpTimer(http_port, client_port);
    if (timer != 2) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(timer, 2) << "no keepalive timer on the server's end of the connection";

  close(fd);
  EXPECT_EQ(WaitForSample(metrics_port, kCancelled, 1, 10), 1)
      << "the queued stream of a client that left was never cancelled";
  EXPECT_EQ(WaitForSample(metrics_port, kQueued, 0, 10), 0);
}

}  // namespace
}  // namespace llmint8::e2e
