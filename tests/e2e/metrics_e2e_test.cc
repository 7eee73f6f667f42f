// The coordinator's Prometheus endpoint (--metrics_listen) scraped over HTTP while real
// coordinator and worker processes serve: counters equal what the test sent, the gauges follow
// the worker group.
#include <signal.h>

#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "tests/e2e/cluster.h"
#include "tests/e2e/metrics_scrape.h"

namespace llmint8::e2e {
namespace {

constexpr char kModelDir[] = "tests/golden/tiny-opt";

// GET /health on the metrics port: its HTTP status, -1 without an answer.
int HealthCode(int port) {
  httplib::Client client("127.0.0.1", port);
  const httplib::Result res = client.Get("/health");
  return res ? res->status : -1;
}

TEST(MetricsE2ETest, CountersMatchTheRequestsAndGaugesFollowTheGroup) {
  const int metrics_port = FreePort();
  ClusterOptions options;
  options.model = SourcePath(kModelDir);
  options.extra_coordinator_flags = {absl::StrCat("--metrics_listen=127.0.0.1:", metrics_port)};
  Cluster cluster(options);
  ASSERT_TRUE(WaitForHealth(cluster.address(), 1, 60)) << "the coordinator never served";
  const std::string before = Scrape(metrics_port);
  ASSERT_FALSE(before.empty()) << "no answer from http://127.0.0.1:" << metrics_port << "/metrics";
  EXPECT_EQ(Sample(before, "llmint8_worker_group_ready"), 1);
  EXPECT_EQ(Sample(before, "llmint8_worker_group_size"), 2);
  EXPECT_EQ(Sample(before, "llmint8_workers{state=\"serving\"}"), 2);
  EXPECT_EQ(Sample(before, "llmint8_workers{state=\"held_by_another\"}"), 0);
  EXPECT_EQ(Sample(before, "llmint8_workers{state=\"loading\"}"), 0);
  EXPECT_EQ(Sample(before, "llmint8_generated_tokens_total"), 0);
  EXPECT_EQ(Sample(before, "llmint8_scheduler_steps_total"), 0);
  EXPECT_EQ(HealthCode(metrics_port), 200);

  auto stub = cluster.NewStub();
  const Generated ok = Generate(*stub, GreedyRequest({2, 17, 300}, 5));
  ASSERT_TRUE(ok.status.ok()) << ok.status.error_message();
  ASSERT_EQ(ok.tokens.size(), 5u);
  EXPECT_EQ(Generate(*stub, GreedyRequest({}, 5)).status.error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);

  const std::string after = Scrape(metrics_port);
  EXPECT_EQ(Sample(after, "llmint8_requests_total{code=\"OK\"}"), 1);
  EXPECT_EQ(Sample(after, "llmint8_requests_total{code=\"INVALID_ARGUMENT\"}"), 1);
  EXPECT_EQ(Sample(after, "llmint8_requests_finished_total{reason=\"length\"}"), 1);
  EXPECT_EQ(Sample(after, "llmint8_prompt_tokens_total"), 3);
  EXPECT_EQ(Sample(after, "llmint8_generated_tokens_total"), 5);
  // One prefill step and four decode steps, each a batch of one sequence.
  EXPECT_EQ(Sample(after, "llmint8_scheduler_steps_total"), 5);
  EXPECT_EQ(Sample(after, "llmint8_step_seconds_count"), 5);
  EXPECT_EQ(Sample(after, "llmint8_step_batch_size_sum"), 5);
  EXPECT_EQ(Sample(after, "llmint8_time_to_first_token_seconds_count"), 1);
  EXPECT_GT(Sample(after, "llmint8_request_duration_seconds_sum"), 0);
  EXPECT_EQ(Sample(after, "llmint8_time_per_output_token_seconds_count"), 1);
  EXPECT_GT(Sample(after, "llmint8_time_per_output_token_seconds_sum"), 0);
  // The scheduler releases a finished sequence just after its client saw the last token.
  EXPECT_EQ(WaitForSample(metrics_port, "llmint8_running_sequences", 0, 5), 0);
  EXPECT_EQ(Sample(after, "llmint8_queued_requests"), 0);
  // The budget the workers reported, at most max_batch (32) x the model's context (128).
  EXPECT_EQ(Sample(after, "llmint8_kv_budget_positions"), 32 * 128);
  EXPECT_EQ(WaitForSample(metrics_port, "llmint8_kv_reserved_positions", 0, 5), 0);
  EXPECT_EQ(Sample(after, "llmint8_draining"), 0);

  // A lost worker shows at the next scrape, and the group's re-forming when it is back.
  cluster.KillWorker(1, SIGKILL);
  EXPECT_EQ(WaitForSample(metrics_port, "llmint8_worker_group_ready", 0, 10), 0);
  EXPECT_EQ(HealthCode(metrics_port), 503) << "/health follows the group";
  cluster.StartWorker(1);
  EXPECT_EQ(WaitForSample(metrics_port, "llmint8_worker_group_ready", 1, 60), 1);
  EXPECT_EQ(HealthCode(metrics_port), 200);
  EXPECT_EQ(Sample(Scrape(metrics_port), "llmint8_worker_group_epoch"), 2);
}

}  // namespace
}  // namespace llmint8::e2e
