#include "coordinator/metrics.h"

#include <atomic>
#include <string>

#include "absl/strings/str_cat.h"
#include "coordinator/metrics_server.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "httplib.h"

namespace llmint8::coordinator {
namespace {

using ::testing::HasSubstr;

v1::GenerateResponse Final(v1::FinishReason reason, double queue_ms, double ttft_ms,
                           double total_ms) {
  v1::GenerateResponse r;
  r.set_finish_reason(reason);
  r.mutable_timings()->set_queue_ms(queue_ms);
  r.mutable_timings()->set_time_to_first_token_ms(ttft_ms);
  r.mutable_timings()->set_total_ms(total_ms);
  return r;
}

TEST(ServiceMetricsTest, CountsRequestsByCodeAndReasonAndTokens) {
  ServiceMetrics m([] { return LiveState{}; });
  const v1::GenerateResponse length = Final(v1::FINISH_REASON_LENGTH, 2, 30, 400);
  const v1::GenerateResponse eos = Final(v1::FINISH_REASON_EOS, 20, 300, 3000);
  m.RecordRequest({absl::StatusCode::kOk, 7, 16, length});
  m.RecordRequest({absl::StatusCode::kOk, 5, 3, eos});
  m.RecordRequest({absl::StatusCode::kInvalidArgument, 0, 0, std::nullopt});
  m.RecordRequest({absl::StatusCode::kCancelled, 4, 2, std::nullopt});  // tokens before the cancel
  m.RecordRequest({absl::StatusCode::kDeadlineExceeded, 3, 0, std::nullopt});  // in the queue
  m.RecordRequest({absl::StatusCode::kCancelled, 0, 0, std::nullopt});  // before it was queued
  const std::string text = m.Text();
  EXPECT_THAT(text, HasSubstr("llmint8_requests_total{code=\"OK\"} 2\n"));
  EXPECT_THAT(text, HasSubstr("llmint8_requests_total{code=\"INVALID_ARGUMENT\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("llmint8_requests_total{code=\"CANCELLED\"} 2\n"));
  EXPECT_THAT(text, HasSubstr("llmint8_requests_finished_total{reason=\"length\"} 1\n"));
  // The queued streams that were cancelled or ran out of time, not the one refused first.
  EXPECT_THAT(text, HasSubstr("llmint8_requests_finished_total{reason=\"cancelled\"} 2\n"));
  EXPECT_THAT(text, HasSubstr("llmint8_requests_finished_total{reason=\"eos\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("llmint8_prompt_tokens_total 19\n"));
  EXPECT_THAT(text, HasSubstr("llmint8_generated_tokens_total 21\n"));
  // Histograms see only the two finished streams: 0.03 s and 0.3 s to the first token.
  EXPECT_THAT(text, HasSubstr("llmint8_time_to_first_token_seconds_count 2\n"));
  EXPECT_THAT(text, HasSubstr("llmint8_time_to_first_token_seconds_sum 0.33\n"));
  EXPECT_THAT(text, HasSubstr("llmint8_time_to_first_token_seconds_bucket{le=\"0.025\"} 0\n"));
  EXPECT_THAT(text, HasSubstr("llmint8_time_to_first_token_seconds_bucket{le=\"0.05\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("llmint8_time_to_first_token_seconds_bucket{le=\"0.5\"} 2\n"));
  EXPECT_THAT(text, HasSubstr("llmint8_request_duration_seconds_sum 3.4\n"));
  EXPECT_THAT(text, HasSubstr("llmint8_request_queue_seconds_sum 0.022\n"));
  // Per output token after the first: (0.4 - 0.03) s / 15 and (3 - 0.3) s / 2.
  EXPECT_THAT(text, HasSubstr("llmint8_time_per_output_token_seconds_count 2\n"));
  EXPECT_THAT(text, HasSubstr("llmint8_time_per_output_token_seconds_bucket{le=\"0.025\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("llmint8_time_per_output_token_seconds_bucket{le=\"1\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("llmint8_time_per_output_token_seconds_bucket{le=\"2.5\"} 2\n"));
}

// Every code and finish reason has its series from the start, at 0: a rate over the first
// error of a kind sees it.
TEST(ServiceMetricsTest, EveryCodeAndReasonStartsAtZero) {
  ServiceMetrics m([] { return LiveState{}; });
  const std::string text = m.Text();
  EXPECT_THAT(text, HasSubstr("llmint8_requests_total{code=\"INTERNAL\"} 0\n"));
  EXPECT_THAT(text, HasSubstr("llmint8_requests_total{code=\"UNAUTHENTICATED\"} 0\n"));
  EXPECT_THAT(text, HasSubstr("llmint8_requests_total{code=\"OK\"} 0\n"));
  for (const char* reason : {"length", "stop", "eos", "cancelled"}) {
    EXPECT_THAT(text, HasSubstr(absl::StrCat("llmint8_requests_finished_total{reason=\"", reason,
                                             "\"} 0\n")));
  }
}

// A prompt only scored (max_new_tokens 0) had no first token: not in that histogram.
TEST(ServiceMetricsTest, APromptOnlyScoredHasNoTimeToFirstToken) {
  ServiceMetrics m([] { return LiveState{}; });
  m.RecordRequest({absl::StatusCode::kOk, 9, 0, Final(v1::FINISH_REASON_LENGTH, 1, 20, 20)});
  const std::string text = m.Text();
  EXPECT_THAT(text, HasSubstr("llmint8_time_to_first_token_seconds_count 0\n"));
  EXPECT_THAT(text, HasSubstr("llmint8_request_duration_seconds_count 1\n"));
}

// A stream of one token has no time between tokens: it is left out of that histogram.
TEST(ServiceMetricsTest, OneTokenStreamsHaveNoTimePerOutputToken) {
  ServiceMetrics m([] { return LiveState{}; });
  m.RecordRequest({absl::StatusCode::kOk, 3, 1, Final(v1::FINISH_REASON_LENGTH, 1, 20, 20)});
  const std::string text = m.Text();
  EXPECT_THAT(text, HasSubstr("llmint8_time_to_first_token_seconds_count 1\n"));
  EXPECT_THAT(text, HasSubstr("llmint8_time_per_output_token_seconds_count 0\n"));
}

TEST(ServiceMetricsTest, StepsFillTheStepHistograms) {
  ServiceMetrics m([] { return LiveState{}; });
  m.RecordStep(1, absl::Milliseconds(3));
  m.RecordStep(32, absl::Milliseconds(40));
  const std::string text = m.Text();
  EXPECT_THAT(text, HasSubstr("llmint8_step_seconds_count 2\n"));
  EXPECT_THAT(text, HasSubstr("llmint8_step_seconds_bucket{le=\"0.005\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("llmint8_step_seconds_bucket{le=\"0.05\"} 2\n"));
  EXPECT_THAT(text, HasSubstr("llmint8_step_batch_size_sum 33\n"));
  EXPECT_THAT(text, HasSubstr("llmint8_step_batch_size_bucket{le=\"16\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("llmint8_step_batch_size_bucket{le=\"32\"} 2\n"));
}

TEST(ServiceMetricsTest, GuidedMasksFillTheirHistogram) {
  ServiceMetrics m([] { return LiveState{}; });
  m.RecordGuidedMasks(absl::Microseconds(200));
  m.RecordGuidedMasks(absl::Milliseconds(30));
  const std::string text = m.Text();
  EXPECT_THAT(text, HasSubstr("llmint8_guided_mask_seconds_count 2\n"));
  EXPECT_THAT(text, HasSubstr("llmint8_guided_mask_seconds_bucket{le=\"0.00025\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("llmint8_guided_mask_seconds_bucket{le=\"0.05\"} 2\n"));
}

TEST(ServiceMetricsTest, GuideLookupsAreCountedByResultFromZero) {
  ServiceMetrics m([] { return LiveState{}; });
  EXPECT_THAT(m.Text(), HasSubstr("llmint8_guide_cache_lookups_total{result=\"hit\"} 0\n"));
  m.RecordGuideLookup(/*hit=*/false);
  m.RecordGuideLookup(/*hit=*/true);
  m.RecordGuideLookup(/*hit=*/true);
  const std::string text = m.Text();
  EXPECT_THAT(text, HasSubstr("llmint8_guide_cache_lookups_total{result=\"hit\"} 2\n"));
  EXPECT_THAT(text, HasSubstr("llmint8_guide_cache_lookups_total{result=\"miss\"} 1\n"));
}

TEST(ServiceMetricsTest, GaugesAreReadAtEachScrape) {
  LiveState state{3,
                  5,
                  1234,
                  true,
                  2,
                  7,
                  96,
                  8192,
                  48,
                  2,
                  300,
                  false,
                  {{"serving", 2}, {"held_by_another", 0}}};
  ServiceMetrics m([&state] { return state; });
  std::string text = m.Text();
  EXPECT_THAT(text, HasSubstr("llmint8_queued_requests 3\n"));
  EXPECT_THAT(text, HasSubstr("llmint8_running_sequences 5\n"));
  EXPECT_THAT(text, HasSubstr("llmint8_scheduler_steps_total 1234\n"));
  EXPECT_THAT(text, HasSubstr("llmint8_worker_group_ready 1\n"));
  EXPECT_THAT(text, HasSubstr("llmint8_worker_group_size 2\n"));
  EXPECT_THAT(text, HasSubstr("llmint8_worker_group_epoch 7\n"));
  EXPECT_THAT(text, HasSubstr("llmint8_kv_reserved_positions 96\n"));
  EXPECT_THAT(text, HasSubstr("llmint8_kv_budget_positions 8192\n"));
  EXPECT_THAT(text, HasSubstr("llmint8_prefix_cache_positions 48\n"));
  EXPECT_THAT(text, HasSubstr("llmint8_prefix_cache_sequences 2\n"));
  EXPECT_THAT(text, HasSubstr("llmint8_prefix_cache_hit_tokens_total 300\n"));
  EXPECT_THAT(text, HasSubstr("llmint8_draining 0\n"));
  EXPECT_THAT(text, HasSubstr("llmint8_workers{state=\"serving\"} 2\n"));
  EXPECT_THAT(text, HasSubstr("llmint8_workers{state=\"held_by_another\"} 0\n"));
  EXPECT_THAT(text, HasSubstr("# TYPE llmint8_queued_requests gauge\n"));
  state.draining = true;
  EXPECT_THAT(m.Text(), HasSubstr("llmint8_draining 1\n"));
  state.group_ready = false;
  state.queued = 0;
  text = m.Text();
  EXPECT_THAT(text, HasSubstr("llmint8_worker_group_ready 0\n"));
  EXPECT_THAT(text, HasSubstr("llmint8_queued_requests 0\n"));
}

TEST(MetricsServerTest, ServesTheRenderedTextAtSlashMetricsAndHealthAtSlashHealth) {
  int scrapes = 0;
  std::atomic<bool> serving{true};
  auto server = MetricsServer::Start(
      "127.0.0.1:0",
      [&scrapes] {
        ++scrapes;  // one server thread: no race
        return std::string("llmint8_x 1\n");
      },
      [&serving] { return serving.load(); });
  ASSERT_TRUE(server.ok()) << server.status();
  ASSERT_GT((*server)->port(), 0);
  httplib::Client client("127.0.0.1", (*server)->port());
  httplib::Result res = client.Get("/metrics");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(res->body, "llmint8_x 1\n");
  EXPECT_THAT(res->get_header_value("Content-Type"), HasSubstr("text/plain; version=0.0.4"));
  res = client.Get("/other");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 404);
  EXPECT_EQ(scrapes, 1);
  res = client.Get("/health");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(res->body, "SERVING\n");
  serving = false;
  res = client.Get("/health");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 503);
  EXPECT_EQ(res->body, "NOT_SERVING\n");
}

TEST(MetricsServerTest, BadAddressesAreClearErrors) {
  for (const char* listen : {"9090", "localhost:", "host:port", "127.0.0.1:70000"}) {
    EXPECT_EQ(MetricsServer::Start(
                  listen, [] { return std::string(); }, [] { return true; })
                  .status()
                  .code(),
              absl::StatusCode::kInvalidArgument)
        << listen;
  }
  auto first = MetricsServer::Start(
      "127.0.0.1:0", [] { return std::string(); }, [] { return true; });
  ASSERT_TRUE(first.ok()) << first.status();
  auto second = MetricsServer::Start(
      absl::StrCat("127.0.0.1:", (*first)->port()), [] { return std::string(); },
      [] { return true; });
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(second.status().message(), HasSubstr("pick another port"));
}

}  // namespace
}  // namespace llmint8::coordinator
