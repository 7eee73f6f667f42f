// Preemption by recompute with real coordinator and worker processes: under a KV budget too
// small for the requests running together, the scheduler preempts some (their cache dropped on
// the workers) and prefills their prompt and output again later. On CPU workers every op is
// batch-invariant (README.md), so each stream must equal its solo run to the bit: the tokens,
// their logprobs, and a seeded draw with penalties, whose state rank 0 rebuilds from the
// tokens prefilled again.
#include <chrono>
#include <cstdint>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/e2e/cluster.h"
#include "tests/e2e/metrics_scrape.h"
#include "tests/e2e/reference.h"

namespace llmint8::e2e {
namespace {

using ::testing::ElementsAreArray;

constexpr char kModelDir[] = "tests/golden/tiny-opt";
constexpr int kRequests = 6;
constexpr int kPrompt = 8;
constexpr int kTokens = 40;  // 48 positions a request; six of them are 288, the budget 64

// Request i: greedy when even; odd ones sample (seeded) with the penalties that count the
// sequence's tokens, and ask for logprobs.
v1::GenerateRequest Request(int i) {
  std::vector<int32_t> prompt = {2};
  for (int t = 1; t < kPrompt; ++t) prompt.push_back((t * 31 + i * 97 + 5) % 1000);
  v1::GenerateRequest req = GreedyRequest(prompt, kTokens);
  req.set_logprobs(true);
  if (i % 2 == 1) {
    req.set_temperature(0.9f);
    req.set_top_p(0.95f);
    req.set_seed(100 + static_cast<uint64_t>(i));
    req.set_repetition_penalty(1.2f);
    req.set_frequency_penalty(0.3f);
  }
  return req;
}

// Requests 0 .. kRequests - 1, each from its own client thread, all at once.
std::vector<Generated> AllTogether(v1::Generation::Stub& stub) {
  std::vector<Generated> out(kRequests);
  std::vector<std::thread> clients;
  for (int i = 0; i < kRequests; ++i) {
    clients.emplace_back([&stub, &out, i] { out[i] = Generate(stub, Request(i)); });
  }
  for (std::thread& t : clients) t.join();
  return out;
}

// GetModelInfo's KV budget and preemption mode, once the scheduler has the group's budget (it
// takes up to its next loop, 100 ms, after the group is ready); a failure without an answer.
std::pair<int64_t, std::string> Admission(v1::Generation::Stub& stub) {
  v1::ModelInfo info;
  for (int attempt = 0; attempt < 50 && info.kv_budget_positions() == 0; ++attempt) {
    if (attempt > 0) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    const grpc::Status s = stub.GetModelInfo(&ctx, v1::GetModelInfoRequest(), &info);
    if (!s.ok()) {
      ADD_FAILURE() << "GetModelInfo: " << s.error_message();
      return {0, ""};
    }
  }
  return {info.kv_budget_positions(), info.preemption()};
}

std::vector<float> Logprobs(const Generated& g) {
  std::vector<float> out;
  for (const v1::GenerateResponse& r : g.responses) {
    if (r.has_token_id()) out.push_back(r.logprob());
  }
  return out;
}

TEST(PreemptionE2ETest, PreemptedRequestsGiveWhatTheyGiveAlone) {
  const int metrics_port = FreePort();
  ClusterOptions options;
  options.model = SourcePath(kModelDir);
  options.extra_coordinator_flags = {"--kv_budget_tokens=64",
                                     absl::StrCat("--metrics_listen=127.0.0.1:", metrics_port)};
  Cluster cluster(options);
  ASSERT_TRUE(WaitForHealth(cluster.address(), 1, 60)) << "never SERVING";
  auto stub = cluster.NewStub();
  EXPECT_EQ(Admission(*stub), std::make_pair(int64_t{64}, std::string("recompute")));
  const absl::StatusOr<std::string> status =
      RunAndRead(absl::StrCat(LlmintBinary(), " status --coordinator=", cluster.address()));
  ASSERT_TRUE(status.ok()) << status.status();
  EXPECT_THAT(*status, ::testing::HasSubstr("KV budget 64 positions (preemption recompute)"));

  // One at a time: 48 positions fit the budget, nothing is preempted.
  std::vector<Generated> alone;
  for (int i = 0; i < kRequests; ++i) {
    alone.push_back(Generate(*stub, Request(i)));
    ASSERT_TRUE(alone.back().status.ok()) << i << ": " << alone.back().status.error_message();
    ASSERT_EQ(alone.back().tokens.size(), static_cast<size_t>(kTokens));
  }
  EXPECT_EQ(Sample(Scrape(metrics_port), "llmint8_preemptions_total"), 0);
  auto ref = InProcessReference::Open(SourcePath(kModelDir), model::Precision::kF32);
  ASSERT_TRUE(ref.ok()) << ref.status();
  for (int i = 0; i < kRequests; i += 2) {
    const v1::GenerateRequest req = Request(i);
    const std::vector<int32_t> prompt(req.token_ids().ids().begin(), req.token_ids().ids().end());
    auto want = (*ref)->Greedy(prompt, kTokens);
    ASSERT_TRUE(want.ok()) << want.status();
    EXPECT_THAT(alone[i].tokens, ElementsAreArray(*want)) << "request " << i;
  }

  // All together: they outgrow the budget within a few steps.
  const std::vector<Generated> together = AllTogether(*stub);
  for (int i = 0; i < kRequests; ++i) {
    ASSERT_TRUE(together[i].status.ok()) << i << ": " << together[i].status.error_message();
    EXPECT_THAT(together[i].tokens, ElementsAreArray(alone[i].tokens)) << "request " << i;
    EXPECT_THAT(Logprobs(together[i]), ElementsAreArray(Logprobs(alone[i]))) << "request " << i;
    EXPECT_EQ(together[i].text, alone[i].text) << "request " << i;
    ASSERT_FALSE(together[i].responses.empty());
    EXPECT_EQ(together[i].responses.back().usage().prompt_tokens(), kPrompt);
    EXPECT_EQ(together[i].responses.back().usage().completion_tokens(), kTokens);
  }
  const std::string after = Scrape(metrics_port);
  EXPECT_GE(Sample(after, "llmint8_preemptions_total"), 1) << "nothing was preempted";
  // The request log names the preempted ones.
  EXPECT_TRUE(WaitForLogLine(cluster.log_dir() + "/coordinator.log", " preempted=", 5));
  EXPECT_LE(Sample(after, "llmint8_kv_reserved_positions"), 64);
  EXPECT_EQ(WaitForSample(metrics_port, "llmint8_running_sequences", 0, 5), 0);
  EXPECT_EQ(WaitForSample(metrics_port, "llmint8_kv_reserved_positions", 0, 5), 0);
}

// Workers that hold less than --kv_budget_tokens says (each under --memory_limit): the
// steps they refuse bring the budget down, sequences are preempted to fit it, and every
// request still ends as it does alone; the lowered budget shows in GetModelInfo.
TEST(PreemptionE2ETest, ABudgetAboveWhatTheWorkersHoldComesDown) {
  const int metrics_port = FreePort();
  ClusterOptions options;
  options.model = SourcePath(kModelDir);
  // A worker holds 363 kB of weights. One request alone fits: its 48 positions take 32 kB of
  // KV cache (64 reserved, 512 B each), and steps of at most 6 x 8 prompt tokens
  // (--prefill_chunk=8, a resumed input too) and 6 decodes leave at most about 130 kB of
  // activations (measured): 526 kB. Six together do not: 6 x 32 kB of cache beside the
  // weights and 99 kB of activations a step of the six prompts took are 658 kB.
  options.extra_worker_flags = {"--memory_limit=580000"};
  // No parked sequences: what the scheduler counts is the running requests' alone.
  options.extra_coordinator_flags = {"--kv_budget_tokens=4096", "--prefix_cache_entries=0",
                                     "--prefill_chunk=8",
                                     absl::StrCat("--metrics_listen=127.0.0.1:", metrics_port)};
  Cluster cluster(options);
  ASSERT_TRUE(WaitForHealth(cluster.address(), 1, 60)) << "never SERVING";
  auto stub = cluster.NewStub();
  EXPECT_EQ(Admission(*stub), std::make_pair(int64_t{4096}, std::string("recompute")));
  std::vector<Generated> alone;
  for (int i = 0; i < kRequests; ++i) {
    alone.push_back(Generate(*stub, Request(i)));
    ASSERT_TRUE(alone.back().status.ok()) << i << ": " << alone.back().status.error_message();
  }
  const std::vector<Generated> together = AllTogether(*stub);
  for (int i = 0; i < kRequests; ++i) {
    ASSERT_TRUE(together[i].status.ok()) << i << ": " << together[i].status.error_message();
    EXPECT_THAT(together[i].tokens, ElementsAreArray(alone[i].tokens)) << "request " << i;
    EXPECT_THAT(Logprobs(together[i]), ElementsAreArray(Logprobs(alone[i]))) << "request " << i;
  }
  EXPECT_TRUE(WaitForLogLine(cluster.log_dir() + "/coordinator.log",
                             "the workers refused a step for memory", 5));
  const int64_t lowered = Admission(*stub).first;
  // Below a count the workers refused, which was at most all six requests' positions.
  EXPECT_LT(lowered, kRequests * (kPrompt + kTokens));
  EXPECT_EQ(Sample(Scrape(metrics_port), "llmint8_kv_budget_positions"),
            static_cast<double>(lowered));
  EXPECT_GE(Sample(Scrape(metrics_port), "llmint8_preemptions_total"), 1);
}

// With --preemption=off the budget holds each request's prompt + max_new_tokens from
// admission: the same requests wait their turn instead, nothing is preempted.
TEST(PreemptionE2ETest, OffReservesAtAdmissionAndNeverPreempts) {
  const int metrics_port = FreePort();
  ClusterOptions options;
  options.model = SourcePath(kModelDir);
  options.extra_coordinator_flags = {"--kv_budget_tokens=64", "--preemption=off",
                                     absl::StrCat("--metrics_listen=127.0.0.1:", metrics_port)};
  Cluster cluster(options);
  ASSERT_TRUE(WaitForHealth(cluster.address(), 1, 60)) << "never SERVING";
  EXPECT_EQ(Admission(*cluster.NewStub()), std::make_pair(int64_t{64}, std::string("off")));
  const std::vector<Generated> together = AllTogether(*cluster.NewStub());
  for (int i = 0; i < kRequests; ++i) {
    ASSERT_TRUE(together[i].status.ok()) << i << ": " << together[i].status.error_message();
    EXPECT_EQ(together[i].tokens.size(), static_cast<size_t>(kTokens));
  }
  EXPECT_EQ(Sample(Scrape(metrics_port), "llmint8_preemptions_total"), 0);
}

}  // namespace
}  // namespace llmint8::e2e
