// Speculative decoding by prompt lookup (--speculative_tokens) with real processes and the
// bundled model in int8: streams run side by side give the tokens that a
// coordinator without it gives (greedy, and seeded sampling with penalties: rank 0 verifies a
// draft by sampling its position as a step of its own would), with the same logprobs where a
// request asks for them, while the workers accept drafts.
#include <iostream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/casts.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/e2e/cluster.h"
#include "tests/e2e/metrics_scrape.h"

namespace llmint8::e2e {
namespace {

using ::testing::ElementsAreArray;
using ::testing::HasSubstr;

constexpr char kModelDir[] = "models/opt-sotu-cpu";

// Prompts as token ids, and what each request asks (ignore_eos: every stream runs its length).
std::vector<v1::GenerateRequest> Requests() {
  std::vector<v1::GenerateRequest> out;
  const std::vector<std::vector<int32_t>> prompts = {
      {2, 100, 9, 10, 11}, {2, 133, 194, 9, 5, 1777, 16}, {2, 1437, 4, 100, 9}, {2, 50, 51, 52}};
  for (size_t i = 0; i < prompts.size(); ++i) {
    out.push_back(GreedyRequest(prompts[i], 96));
  }
  out[1].set_frequency_penalty(0.3f);
  out[2].set_temperature(0.8f);
  out[2].set_top_k(40);
  out[2].set_seed(7);
  out[3].set_temperature(1.0f);
  out[3].set_seed(11);
  out[3].set_repetition_penalty(1.2f);
  v1::GenerateRequest logprobs = GreedyRequest(prompts[0], 48);
  logprobs.set_logprobs(true);
  out.push_back(logprobs);
  return out;
}

// Every request at once, each on its own stream: their tokens (each followed by its logprob's
// bits when the request asks logprobs), in order.
std::vector<std::vector<int32_t>> RunAll(Cluster& cluster) {
  const std::vector<v1::GenerateRequest> requests = Requests();
  std::vector<Generated> got(requests.size());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < requests.size(); ++i) {
    threads.emplace_back([&, i] {
      std::unique_ptr<v1::Generation::Stub> stub = cluster.NewStub();
      got[i] = Generate(*stub, requests[i], 120);
    });
  }
  for (std::thread& t : threads) t.join();
  std::vector<std::vector<int32_t>> tokens;
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_TRUE(got[i].status.ok()) << "request " << i << ": " << got[i].status.error_message();
    std::vector<int32_t>& out = tokens.emplace_back();
    for (const v1::GenerateResponse& r : got[i].responses) {
      if (!r.has_token_id()) continue;
      out.push_back(r.token_id());
      if (requests[i].logprobs()) out.push_back(absl::bit_cast<int32_t>(r.logprob()));
    }
  }
  return tokens;
}

std::unique_ptr<Cluster> Serve(std::vector<std::string> flags) {
  ClusterOptions options;
  options.model = SourcePath(kModelDir);
  options.dtype = "int8";
  options.extra_coordinator_flags = std::move(flags);
  auto cluster = std::make_unique<Cluster>(options);
  EXPECT_TRUE(WaitForHealth(cluster->address(), 1, 120)) << "never SERVING";
  return cluster;
}

TEST(SpeculativeE2ETest, DraftsChangeTheStepsNotTheTokens) {
  std::vector<std::vector<int32_t>> plain;
  {
    std::unique_ptr<Cluster> cluster = Serve({});
    plain = RunAll(*cluster);
  }
  if (HasFailure()) return;
  const int metrics_port = FreePort();
  std::unique_ptr<Cluster> cluster =
      Serve({"--speculative_tokens=4", absl::StrCat("--metrics_listen=127.0.0.1:", metrics_port)});
  const std::vector<std::vector<int32_t>> drafted = RunAll(*cluster);
  if (HasFailure()) return;
  for (size_t i = 0; i < plain.size(); ++i) {
    EXPECT_THAT(drafted[i], ElementsAreArray(plain[i])) << "request " << i;
  }
  const std::string metrics = Scrape(metrics_port);
  const double drafts = Sample(metrics, "llmint8_spec_decode_draft_tokens_total");
  const double accepted = Sample(metrics, "llmint8_spec_decode_accepted_tokens_total");
  EXPECT_GT(accepted, 0) << "the greedy streams loop: their drafts are accepted";
  EXPECT_GE(drafts, accepted);
  std::cout << "draft tokens " << drafts << ", accepted " << accepted << "\n";
  // Each request's log line says how many of its drafts it kept (drafts=A/S): together what
  // the metrics count, and the greedy ones, whose text repeats itself, kept some.
  ASSERT_TRUE(WaitForLogLine(cluster->log_dir() + "/coordinator.log", " OK: finish=", 5,
                             static_cast<int>(plain.size())));
  const std::string log = cluster->CoordinatorLog();
  int kept_some = 0;
  double sent_sum = 0, kept_sum = 0;
  for (absl::string_view line : absl::StrSplit(log, '\n')) {
    const size_t at = line.find(" drafts=");
    if (at == absl::string_view::npos) continue;
    std::cout << line.substr(line.find("seq ")) << "\n";
    const absl::string_view field = line.substr(at + 8, line.find(' ', at + 1) - (at + 8));
    const std::vector<absl::string_view> parts = absl::StrSplit(field, '/');
    int kept = 0, sent = 0;
    ASSERT_TRUE(parts.size() == 2 && absl::SimpleAtoi(parts[0], &kept) &&
                absl::SimpleAtoi(parts[1], &sent))
        << line;
    kept_some += kept > 0;
    kept_sum += kept;
    sent_sum += sent;
  }
  EXPECT_GE(kept_some, 2);
  EXPECT_EQ(sent_sum, drafts);
  EXPECT_EQ(kept_sum, accepted);

  const absl::StatusOr<std::string> info =
      RunAndRead(absl::StrCat(LlmintBinary(), " status --coordinator=", cluster->address()));
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_THAT(*info, HasSubstr("speculative decoding: 4 draft tokens by prompt lookup (n 2..4)"));
}

}  // namespace
}  // namespace llmint8::e2e
