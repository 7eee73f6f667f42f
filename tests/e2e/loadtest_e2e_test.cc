// `llmint8 loadtest` against a real coordinator + 2 workers (tests/golden/tiny-opt, fp32): it
// sends what it says, every request completes, and the figures are consistent.
#include <signal.h>

#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/cli/run_cli.h"
#include "tests/e2e/cluster.h"

namespace llmint8::e2e {
namespace {

using ::testing::HasSubstr;
using tools::testing::RunCli;

// `loadtest --json` with `flags` against a served tiny-opt: its report (null, and a failure,
// when it does not exit 0).
nlohmann::json LoadtestReport(const std::string& flags) {
  ClusterOptions options;
  options.model = SourcePath("tests/golden/tiny-opt");
  Cluster cluster(options);
  if (!WaitForHealth(cluster.address(), 1, 60)) {
    ADD_FAILURE() << "never SERVING";
    return nullptr;
  }
  const tools::testing::CliResult r =
      RunCli(absl::StrCat("loadtest --coordinator=", cluster.address(), " ", flags, " --json"));
  if (r.exit_code != 0) {
    ADD_FAILURE() << "loadtest exited " << r.exit_code << ": " << r.err;
    return nullptr;
  }
  return nlohmann::json::parse(r.out);
}

TEST(LoadtestE2ETest, CountsEveryTokenAndOrdersThePercentiles) {
  const nlohmann::json j =
      LoadtestReport("--requests=10 --concurrency=3 --prompt_tokens=5 --max_new_tokens=7 --seed=4");
  ASSERT_FALSE(j.is_null());
  EXPECT_EQ(j["requests"], 10);
  EXPECT_EQ(j["seed"], 4);
  EXPECT_EQ(j["failed"], 0);
  EXPECT_EQ(j["generated_tokens"], 70);  // ignore_eos: every request runs to max_new_tokens
  EXPECT_EQ(j["tensor_parallel"], 2);
  EXPECT_EQ(j["guide"], "none");
  EXPECT_NEAR(j["output_tokens_per_s"].get<double>(), 70 / j["wall_s"].get<double>(), 1e-6);
  for (const char* name : {"ttft_ms", "tpot_ms", "latency_ms"}) {
    const nlohmann::json& q = j[name];
    EXPECT_GT(q["p50"].get<double>(), 0) << name;
    EXPECT_LE(q["p50"].get<double>(), q["p90"].get<double>()) << name;
    EXPECT_LE(q["p90"].get<double>(), q["p99"].get<double>()) << name;
  }
  EXPECT_LE(j["ttft_ms"]["p99"].get<double>(), j["latency_ms"]["p99"].get<double>());
  EXPECT_LE(j["latency_ms"]["p99"].get<double>(), 1000 * j["wall_s"].get<double>());
}

// --prompt: every request sends the server's tokens of that text; --temperature samples, each
// request seeded --seed + i, so a second run of the same seed generates the same tokens (CPU
// workers are batch-invariant); --end_at_eos lets a request end before --max_new_tokens.
TEST(LoadtestE2ETest, ATextPromptSampledAndEndedAtEos) {
  ClusterOptions options;
  options.model =
      "synthetic:125m,layers=2,hidden=64,heads=4,ffn=256,vocab=400,positions=128,seed=7";
  options.extra_coordinator_flags = {
      absl::StrCat("--tokenizer=", SourcePath("tests/fixtures/tokenizer/tiny-bpe/tokenizer.json"))};
  Cluster cluster(options);
  ASSERT_TRUE(WaitForHealth(cluster.address(), 1, 60)) << "never SERVING";
  const std::string flags =
      "--requests=6 --concurrency=3 --prompt='hello world' --temperature=0.9 --top_k=5 "
      "--end_at_eos --max_new_tokens=8 --seed=3 --json";
  std::vector<nlohmann::json> runs;
  for (int run = 0; run < 2; ++run) {
    const tools::testing::CliResult r =
        RunCli(absl::StrCat("loadtest --coordinator=", cluster.address(), " ", flags));
    ASSERT_EQ(r.exit_code, 0) << r.err;
    runs.push_back(nlohmann::json::parse(r.out));
  }
  const nlohmann::json& j = runs[0];
  EXPECT_EQ(j["prompt"], "text");
  EXPECT_GE(j["prompt_tokens"].get<int>(), 2) << "BOS and the text's tokens";
  EXPECT_FLOAT_EQ(j["temperature"].get<float>(), 0.9f);
  EXPECT_EQ(j["end_at_eos"], true);
  EXPECT_EQ(j["failed"], 0);
  EXPECT_GE(j["generated_tokens"].get<int>(), 6);
  EXPECT_LE(j["generated_tokens"].get<int>(), 48);
  EXPECT_EQ(runs[1]["generated_tokens"], j["generated_tokens"]) << "the same seeds";

  const tools::testing::CliResult both = RunCli(absl::StrCat(
      "loadtest --coordinator=", cluster.address(), " --prompt=hi --shared_prefix_tokens=2"));
  EXPECT_EQ(both.exit_code, 2);
  EXPECT_THAT(both.err, HasSubstr("--shared_prefix_tokens is for random prompts"));
}

// --shared_prefix_tokens: every prompt starts with the same 20 tokens. One request at a time,
// each after the first copies them from the server's prefix cache (at least; more only where
// the random rest happens to match too), and the count comes back.
TEST(LoadtestE2ETest, SharedPrefixesAreCopiedFromThePrefixCache) {
  const nlohmann::json j = LoadtestReport(
      "--requests=5 --concurrency=1 --prompt_tokens=28 --shared_prefix_tokens=20 "
      "--max_new_tokens=4 --seed=4");
  ASSERT_FALSE(j.is_null());
  EXPECT_EQ(j["failed"], 0);
  EXPECT_EQ(j["shared_prefix_tokens"], 20);
  EXPECT_GE(j["cached_prompt_tokens"].get<int>(), 4 * 20);
  EXPECT_LE(j["cached_prompt_tokens"].get<int>(), 4 * 27);
  const tools::testing::CliResult bad =
      RunCli("loadtest --prompt_tokens=8 --shared_prefix_tokens=9");
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_THAT(bad.err, HasSubstr("--shared_prefix_tokens must be in [0, --prompt_tokens]"));
}

// Without --seed each run draws new prompts (the last run's are in the prefix cache), and
// the report names the seed that repeats them.
TEST(LoadtestE2ETest, EachRunWithoutASeedDrawsNewPromptsAndNamesItsSeed) {
  ClusterOptions options;
  options.model = SourcePath("tests/golden/tiny-opt");
  Cluster cluster(options);
  ASSERT_TRUE(WaitForHealth(cluster.address(), 1, 60)) << "never SERVING";
  std::vector<int64_t> seeds;
  for (int run = 0; run < 2; ++run) {
    const tools::testing::CliResult r =
        RunCli(absl::StrCat("loadtest --coordinator=", cluster.address(),
                            " --requests=2 --concurrency=1 --prompt_tokens=5 --max_new_tokens=2"));
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const size_t at = r.out.find("(--seed=");
    ASSERT_NE(at, std::string::npos) << r.out;
    seeds.push_back(std::stoll(r.out.substr(at + 9)));
    EXPECT_THAT(r.out, HasSubstr("2 requests, 1 at once")) << r.out;
  }
  EXPECT_NE(seeds[0], seeds[1]) << "two runs drew the same prompts";
}

// Started before the workers, it waits for the group instead of timing the wait.
TEST(LoadtestE2ETest, WaitsForTheGroupToForm) {
  ClusterOptions options;
  options.model = SourcePath("tests/golden/tiny-opt");
  options.start_workers = false;
  Cluster cluster(options);
  ASSERT_TRUE(WaitForHealth(cluster.address(), 2, 30)) << "expected NOT_SERVING";
  tools::testing::CliResult r;
  const auto launched = std::chrono::steady_clock::now();
  std::thread run([&] {
    r = RunCli(absl::StrCat("loadtest --coordinator=", cluster.address(),
                            " --requests=4 --concurrency=2 --prompt_tokens=3 --max_new_tokens=5 "
                            "--json"));
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  cluster.StartWorker(0);
  cluster.StartWorker(1);
  run.join();
  const double ran_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - launched).count();
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const nlohmann::json j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["generated_tokens"], 20);
  // The 1.5 s before the workers started is not in the wall time: it began with the group,
  // however slowly this machine ran the rest.
  EXPECT_LE(j["wall_s"].get<double>(), ran_s - 1.5) << "ran " << ran_s << " s";
}

// A coordinator that stops answering (a frozen process here; a vanished host or a cut network
// alike send no reset) ends a waiting client's stream through the client's keepalive pings,
// instead of leaving it waiting for ever: generate without --timeout exits UNAVAILABLE.
TEST(LoadtestE2ETest, AClientOfACoordinatorThatStopsAnsweringDoesNotWaitForEver) {
  ClusterOptions options;
  options.model = SourcePath("tests/golden/tiny-opt");
  options.start_workers = false;  // the request waits in the queue, its stream open
  Cluster cluster(options);
  ASSERT_TRUE(WaitForHealth(cluster.address(), 2, 30)) << "expected NOT_SERVING";
  tools::testing::CliResult r;
  std::thread run([&] {
    r = RunCli(absl::StrCat("generate --coordinator=", cluster.address(),
                            " --token_ids=2,17,93 --max_new_tokens=4"),
               "timeout 120");
  });
  std::this_thread::sleep_for(std::chrono::seconds(3));  // the Generate call is in flight
  cluster.SignalCoordinator(SIGSTOP);
  const auto stopped = std::chrono::steady_clock::now();
  run.join();
  const double waited_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - stopped).count();
  cluster.SignalCoordinator(SIGCONT);  // for the cluster to stop it
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_THAT(r.err, HasSubstr("UNAVAILABLE")) << r.err;
  // Within a ping interval and its timeout (20 + 10 s), with room for a slow machine.
  EXPECT_LE(waited_s, 60) << r.err;
}

// loadtest and generate.
TEST(LoadtestE2ETest, BadFlagsAndAnUnreachableCoordinatorAreClearErrors) {
  tools::testing::CliResult r = RunCli("loadtest --requests=0");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("must be >= 1"));
  // Refused before anything is dialled: a seed that is neither one nor "new each run"; top-k /
  // top-p that greedy requests would ignore.
  r = RunCli("loadtest --seed=-2");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("--seed must be >= 0, or -1"));
  for (const char* flags : {"--top_k=40", "--top_p=0.9", "--top_k=40 --temperature=0"}) {
    r = RunCli(absl::StrCat("loadtest ", flags));
    EXPECT_EQ(r.exit_code, 2) << flags;
    EXPECT_THAT(r.err, HasSubstr("set --temperature > 0 too")) << flags;
  }
  r = RunCli(absl::StrCat("loadtest --coordinator=127.0.0.1:", FreePort(), " --requests=1"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("does not answer health checks"));
  // generate names the gRPC code and the coordinator it called.
  const std::string target = absl::StrCat("127.0.0.1:", FreePort());
  r = RunCli(absl::StrCat("generate --coordinator=", target, " --prompt=hi --timeout=5"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr(absl::StrCat("UNAVAILABLE: Generate on ", target, ": ")));
  // Prompt flags that cannot be sent are refused before any call (exit 2, nothing dialled).
  struct Case {
    std::string flags;
    std::string says;
  };
  for (const Case& c : {Case{"", "pass the prompt: --prompt=TEXT, or --token_ids"},
                        Case{"--prompt=hi --token_ids=2,3", "--prompt or --token_ids, not both"},
                        // sh's printf writes the byte 0xff.
                        Case{"--prompt=\"$(printf 'ab\\377')\"", "not valid UTF-8 (byte 2)"},
                        Case{"--prompt=hi --timeout=-1", "--timeout must be >= 0"},
                        Case{"--prompt=hi --stop=a,,b", "stop sequence 2 is empty"},
                        // The flag's C escapes make the byte 0xff.
                        Case{"--prompt=hi '--stop=a\\xff'", "--stop 'a\\xff' is not valid UTF-8"},
                        Case{"--prompt=hi --seed=-2", "--seed must be >= 0, or -1"}}) {
    r = RunCli(absl::StrCat("generate --coordinator=", target, " ", c.flags));
    EXPECT_EQ(r.exit_code, 2) << c.flags << ": " << r.err;
    EXPECT_THAT(r.err, HasSubstr(c.says)) << c.flags;
  }
}

}  // namespace
}  // namespace llmint8::e2e
