// Multi-host: the coordinator and each worker in its own network namespace ("node"), joined by
// veth pairs on a bridge (tests/scaleout/netns_topology.h), so gRPC (client -> coordinator ->
// workers, workers -> coordinator's rendezvous) and Gloo (worker <-> worker, bound to eth0)
// cross real interfaces. A client in a fourth namespace streams greedy tokens, which must equal
// the in-process model's. Root only: skipped with the reason otherwise. The namespaces are
// deleted when the test ends, pass or fail.
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "tests/e2e/cluster.h"
#include "tests/e2e/reference.h"
#include "tests/scaleout/child_process.h"
#include "tests/scaleout/netns_topology.h"

namespace llmint8::scaleout {
namespace {

constexpr char kModel[] =
    "synthetic:125m,layers=2,hidden=256,heads=8,ffn=1024,vocab=1024,positions=128";
constexpr int kWorkers = 2;
constexpr int kNewTokens = 8;
constexpr int kCoordinatorPort = 50051;
constexpr int kWorkerPort = 50061;

std::vector<int32_t> ParseTokens(const std::string& text) {
  std::vector<int32_t> out;
  for (absl::string_view piece : absl::StrSplit(text, absl::ByAnyChar(" \n"), absl::SkipEmpty())) {
    int32_t id = 0;
    if (absl::SimpleAtoi(piece, &id)) out.push_back(id);
  }
  return out;
}

TEST(NetnsTest, CoordinatorAndWorkersOnSeparateNetworkNamespaces) {
  // Nodes: 0 coordinator, 1..kWorkers workers, kWorkers + 1 the client.
  NetnsTopology net;
  absl::Status created = net.Create(kWorkers + 2);
  if (created.code() == absl::StatusCode::kFailedPrecondition) {
    GTEST_SKIP() << "multi-host test needs network namespaces: " << created.message();
  }
  ASSERT_TRUE(created.ok()) << created;
  const std::string log_dir = ::testing::TempDir() + "llmint8_netns_" + std::to_string(getpid());
  std::filesystem::create_directories(log_dir);
  std::fprintf(stderr, "netns cluster logs in %s\n", log_dir.c_str());

  const std::string coordinator = absl::StrCat(net.address(0), ":", kCoordinatorPort);
  std::vector<std::string> workers;
  std::vector<std::unique_ptr<ChildProcess>> processes;
  for (int i = 1; i <= kWorkers; ++i) {
    workers.push_back(absl::StrCat(net.address(i), ":", kWorkerPort));
    processes.push_back(std::make_unique<ChildProcess>(
        std::vector<std::string>{"worker", absl::StrCat("--listen=", workers.back()),
                                 "--memory_limit=64M",
                                 absl::StrCat("--gloo_interface=", NetnsTopology::kInterface)},
        absl::StrCat(log_dir, "/worker", i - 1, ".log"), net.node(i)));
  }
  processes.push_back(std::make_unique<ChildProcess>(
      std::vector<std::string>{"coordinator", absl::StrCat("--listen=", coordinator),
                               absl::StrCat("--advertise=", coordinator),
                               absl::StrCat("--workers=", absl::StrJoin(workers, ",")),
                               absl::StrCat("--model=", kModel), "--dtype=fp16"},
      log_dir + "/coordinator.log", net.node(0)));

  const std::vector<int32_t> prompt = {2, 31, 415, 92, 6, 271};
  std::vector<std::string> generate = {e2e::LlmintBinary(), "generate",
                                       absl::StrCat("--coordinator=", coordinator),
                                       absl::StrCat("--token_ids=", absl::StrJoin(prompt, ",")),
                                       absl::StrCat("--max_new_tokens=", kNewTokens),
                                       "--ignore_eos", "--timeout=20"};
  // The group forms in the background: retry until the coordinator serves (UNAVAILABLE before).
  std::string out;
  int code = -1;
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (std::chrono::steady_clock::now() < give_up) {
    code = RunCapture(generate, net.node(kWorkers + 1), log_dir + "/client.log", &out);
    if (code == 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
  }
  ASSERT_EQ(code, 0) << ReadFile(log_dir + "/client.log") << ReadFile(log_dir + "/coordinator.log");

  auto reference = e2e::InProcessReference::Open(kModel, model::Precision::kF16);
  ASSERT_TRUE(reference.ok()) << reference.status();
  absl::StatusOr<std::vector<int32_t>> want = (*reference)->Greedy(prompt, kNewTokens);
  ASSERT_TRUE(want.ok()) << want.status();
  EXPECT_EQ(ParseTokens(out), *want);

  // The group really spans the nodes: each worker joined over Gloo on its own address.
  const std::string coordinator_log = ReadFile(log_dir + "/coordinator.log");
  EXPECT_NE(coordinator_log.find("worker group: ready"), std::string::npos) << coordinator_log;
  for (int i = 0; i < kWorkers; ++i) {
    const std::string log = ReadFile(absl::StrCat(log_dir, "/worker", i, ".log"));
    EXPECT_NE(log.find("group formed (gloo, 2 ranks)"), std::string::npos) << log;
    EXPECT_NE(log.find("via rendezvous at " + coordinator), std::string::npos) << log;
  }
  // Stop the coordinator first, then the workers, all before the namespaces go.
  while (!processes.empty()) processes.pop_back();
}

}  // namespace
}  // namespace llmint8::scaleout
