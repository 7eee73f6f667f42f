// End-to-end: `llmint8 serve` as its users run it, a coordinator and the worker processes it
// starts and supervises: the ports it refuses, a lost worker started again (and with
// --norespawn, serve stopped), and a worker stuck at shutdown.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <set>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/cli/run_cli.h"
#include "tests/e2e/cluster.h"

namespace llmint8::e2e {
namespace {

using ::testing::HasSubstr;

constexpr char kModelDir[] = "tests/golden/tiny-opt";

// Signals serve's worker listening on 127.0.0.1:`port` (serve's children have no handle here).
void SignalWorkerOnPort(int port, int signal) {
  const std::string command =
      absl::StrCat("pkill -", signal, " -f '[l]lmint8 worker --listen=127.0.0.1:", port, " '");
  ASSERT_EQ(std::system(command.c_str()), 0) << command;
}

// Whether serve's worker on 127.0.0.1:`port` still runs.
bool WorkerOnPortRuns(int port) {
  return std::system(
             absl::StrCat("pgrep -f '[l]lmint8 worker --listen=127.0.0.1:", port, " ' > /dev/null")
                 .c_str()) == 0;
}

// `serve --tp=2` of the tiny model on `port` (workers on port + 1, port + 2), SERVING.
std::unique_ptr<Process> Serve(int port, const std::string& log,
                               std::vector<std::string> more = {}) {
  std::vector<std::string> args = {"serve",
                                   "--model=" + SourcePath(kModelDir),
                                   "--dtype=fp32",
                                   "--tp=2",
                                   absl::StrCat("--listen=127.0.0.1:", port),
                                   absl::StrCat("--worker_base_port=", port + 1)};
  args.insert(args.end(), more.begin(), more.end());
  auto serve = std::make_unique<Process>(args, log);
  EXPECT_TRUE(WaitForHealth(absl::StrCat("127.0.0.1:", port), 1, 60)) << "never SERVING";
  return serve;
}

// A worker port that is one of serve's own is refused before anything starts (--check_flags
// says so too): the worker would lose the race to bind it and be restarted for ever.
TEST(ServeE2ETest, WorkerPortsThatAreServesOwnAreRefused) {
  const int port = FreePort(3);
  const std::string log = absl::StrCat(::testing::TempDir(), "/serve_ports_", port, ".log");
  for (const char* check : {"--check_flags", "--nocheck_flags"}) {
    const std::string command =
        absl::StrCat(LlmintBinary(), " serve --tp=2 ", check, " --listen=127.0.0.1:", port,
                     " --worker_base_port=", port + 1, " --metrics_listen=127.0.0.1:", port + 2,
                     " > ", log, " 2>&1");
    const int status = std::system(command.c_str());
    EXPECT_EQ(WEXITSTATUS(status), 1) << command;
    const absl::StatusOr<std::string> said = RunAndRead(absl::StrCat("cat ", log));
    ASSERT_TRUE(said.ok());
    EXPECT_THAT(*said, HasSubstr(absl::StrCat("--metrics_listen's port ", port + 2,
                                              " is one of the workers' ports")));
  }
}

// With --norespawn a worker that dies takes serve down with exit status 1 and the reason, for
// a supervisor (systemd, Kubernetes) to restart the whole; before, serve stayed up, unready,
// for ever.
TEST(ServeE2ETest, WithNorespawnALostWorkerStopsServe) {
  const int port = FreePort(3);
  const std::string log = absl::StrCat(::testing::TempDir(), "/serve_norespawn_", port, ".log");
  std::unique_ptr<Process> serve = Serve(port, log, {"--norespawn"});
  SignalWorkerOnPort(port + 2, SIGKILL);
  const int status = serve->WaitForExit(30);
  ASSERT_NE(status, -1) << "serve still runs 30 s after its worker died";
  EXPECT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 1);
  const absl::StatusOr<std::string> said = RunAndRead(absl::StrCat("cat ", log));
  ASSERT_TRUE(said.ok());
  EXPECT_THAT(*said, HasSubstr("worker 1 exited on signal 9 and --norespawn is set"));
}

// By default serve starts a worker that died again, and the group re-forms: the same greedy
// tokens as before the loss, and the log says which worker went and how.
TEST(ServeE2ETest, ALostWorkerIsStartedAgainAndTheGroupServesAgain) {
  const int port = FreePort(3);
  const std::string address = absl::StrCat("127.0.0.1:", port);
  const std::string log = absl::StrCat(::testing::TempDir(), "/serve_respawn_", port, ".log");
  std::unique_ptr<Process> serve = Serve(port, log);
  auto stub =
      v1::Generation::NewStub(grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  const Generated before = Generate(*stub, GreedyRequest({2, 7, 11}, 6));
  ASSERT_TRUE(before.status.ok()) << before.status.error_message();
  SignalWorkerOnPort(port + 2, SIGKILL);
  ASSERT_TRUE(WaitForLogLine(log, "exited on signal 9", 30)) << "serve never saw the loss";
  // Until the group has re-formed a request may fail with UNAVAILABLE (retry it), as clients
  // of a server that lost a worker are told.
  Generated after;
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  do {
    after = Generate(*stub, GreedyRequest({2, 7, 11}, 6));
    if (after.status.error_code() != grpc::StatusCode::UNAVAILABLE) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  } while (std::chrono::steady_clock::now() < until);
  ASSERT_TRUE(after.status.ok()) << after.status.error_message();
  EXPECT_EQ(after.tokens, before.tokens);
  EXPECT_EQ(serve->WaitForExit(0), -1) << "serve exited";
  const absl::StatusOr<std::string> said = RunAndRead(absl::StrCat("cat ", log));
  ASSERT_TRUE(said.ok());
  EXPECT_THAT(*said, ::testing::ContainsRegex("worker 1 \\(pid [0-9]+\\) exited on signal 9"));
}

// The socket inodes process `pid` holds open.
std::set<std::string> SocketsOf(const std::string& pid) {
  std::set<std::string> out;
  std::error_code ec;
  for (const auto& fd : std::filesystem::directory_iterator("/proc/" + pid + "/fd", ec)) {
    const std::string target = std::filesystem::read_symlink(fd.path(), ec).string();
    if (!ec && target.rfind("socket:", 0) == 0) out.insert(target);
  }
  return out;
}

// A worker started again while serve serves holds none of serve's descriptors: not the
// connection of an HTTP client open at that moment (nor any other socket of serve's).
TEST(ServeE2ETest, AWorkerStartedAgainHoldsNoneOfServesConnections) {
  const int port = FreePort(4);
  const std::string log = absl::StrCat(::testing::TempDir(), "/serve_fds_", port, ".log");
  std::unique_ptr<Process> serve =
      Serve(port, log, {absl::StrCat("--http_listen=127.0.0.1:", port + 3)});
  // An HTTP client's connection, open while the worker starts again.
  const int client = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port + 3));
  ASSERT_EQ(connect(client, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)), 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // accepted by serve
  SignalWorkerOnPort(port + 2, SIGKILL);
  ASSERT_TRUE(WaitForLogLine(log, "exited on signal 9", 30));
  const auto pid_of = [](const std::string& pattern) {
    const absl::StatusOr<std::string> pid =
        RunAndRead(absl::StrCat("pgrep -f '", pattern, "' | head -1 | tr -d '\\n'"));
    return pid.ok() ? *pid : std::string();
  };
  const std::string worker_pattern =
      absl::StrCat("[l]lmint8 worker --listen=127.0.0.1:", port + 2, " ");
  std::string worker_pid;  // the new worker's
  for (int i = 0; i < 300 && worker_pid.empty(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    worker_pid = pid_of(worker_pattern);
  }
  ASSERT_FALSE(worker_pid.empty()) << "the worker was not started again";
  ASSERT_TRUE(WaitForHealth(absl::StrCat("127.0.0.1:", port), 1, 60)) << "never SERVING again";
  const std::string serve_pid =
      pid_of(absl::StrCat("[l]lmint8 serve .*--listen=127.0.0.1:", port, " "));
  ASSERT_FALSE(serve_pid.empty());
  // It was given serve's --drain_timeout (the default, 20 s), as the first workers were.
  const std::string cmdline = tools::testing::ReadFile("/proc/" + worker_pid + "/cmdline");
  EXPECT_NE(cmdline.find("--drain_timeout=20s"), std::string::npos) << cmdline;
  const std::set<std::string> serves = SocketsOf(serve_pid);
  const std::set<std::string> workers = SocketsOf(worker_pid);
  ASSERT_FALSE(serves.empty());
  ASSERT_FALSE(workers.empty());  // its own listening socket at least
  for (const std::string& socket : workers) {
    EXPECT_EQ(serves.count(socket), 0u) << socket << " of serve's is held by the new worker";
  }
  close(client);
}

// A worker that does not stop (stuck in a collective or a driver call: here SIGSTOP) does not
// hold serve's shutdown: it is killed --drain_timeout + 5 s after the signal.
TEST(ServeE2ETest, AStuckWorkerDoesNotHoldServesShutdown) {
  const int port = FreePort(3);
  const std::string log = absl::StrCat(::testing::TempDir(), "/serve_stuck_", port, ".log");
  std::unique_ptr<Process> serve = Serve(port, log, {"--drain_timeout=1s"});
  SignalWorkerOnPort(port + 2, SIGSTOP);
  const auto signalled = std::chrono::steady_clock::now();
  serve->Signal(SIGTERM);
  const int status = serve->WaitForExit(30);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - signalled).count();
  ASSERT_NE(status, -1) << "serve still runs 30 s after SIGTERM";
  EXPECT_LT(seconds, 20.0);
  const absl::StatusOr<std::string> said = RunAndRead(absl::StrCat("cat ", log));
  ASSERT_TRUE(said.ok());
  EXPECT_THAT(*said, HasSubstr("killing 1 worker(s)"));
  EXPECT_FALSE(WorkerOnPortRuns(port + 2)) << "killed, not left behind";
}

// A second signal stops now: whether it comes while the coordinator shuts down (its drain of a
// request stuck on a worker, or the lease's end waiting on that worker) or while serve waits
// for the workers, the stuck worker (SIGSTOP) is killed at once, not --drain_timeout + 5 s
// later.
TEST(ServeE2ETest, ASecondSignalStopsServeAtOnceThoughAWorkerIsStuck) {
  const int port = FreePort(3);
  const std::string address = absl::StrCat("127.0.0.1:", port);
  const std::string log = absl::StrCat(::testing::TempDir(), "/serve_second_", port, ".log");
  std::unique_ptr<Process> serve = Serve(port, log, {"--drain_timeout=60s"});
  SignalWorkerOnPort(port + 2, SIGSTOP);
  auto stub =
      v1::Generation::NewStub(grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  Generated stuck;
  std::thread request([&] { stuck = Generate(*stub, GreedyRequest({2, 7, 11}, 6)); });
  std::this_thread::sleep_for(std::chrono::seconds(1));  // its first step waits on the worker
  serve->Signal(SIGTERM);
  EXPECT_TRUE(WaitForLogLine(log, "draining", 10)) << "no drain began";  // (request runs)
  serve->Signal(SIGTERM);
  const auto again = std::chrono::steady_clock::now();
  const int status = serve->WaitForExit(40);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - again).count();
  request.join();
  ASSERT_NE(status, -1) << "serve still runs 40 s after the second signal";
  EXPECT_LT(seconds, 10.0);
  EXPECT_EQ(stuck.status.error_code(), grpc::StatusCode::UNAVAILABLE)
      << stuck.status.error_message();
  const absl::StatusOr<std::string> said = RunAndRead(absl::StrCat("cat ", log));
  ASSERT_TRUE(said.ok());
  EXPECT_THAT(*said, HasSubstr("killing"));
  EXPECT_FALSE(WorkerOnPortRuns(port + 2));
}

}  // namespace
}  // namespace llmint8::e2e
