// Priority scheduling with real coordinator and worker processes (the bundled model, CPU): a
// request of a higher priority (a lower value) preempts a running one of a lower priority that
// holds the one batch slot, finishes first, and the preempted one then ends as it does alone
// (CPU workers are batch-invariant, README.md). A server that schedules first come, first
// served refuses a priority other than 0.
#include <chrono>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/e2e/cluster.h"
#include "tests/e2e/metrics_scrape.h"

namespace llmint8::e2e {
namespace {

using ::testing::ElementsAreArray;
using ::testing::HasSubstr;

constexpr char kModelDir[] = "models/opt-sotu-cpu";

v1::GenerateRequest Request(int32_t first_token, int max_new_tokens, int32_t priority) {
  v1::GenerateRequest req = GreedyRequest({2, first_token, 9, 10, 11}, max_new_tokens);
  req.set_ignore_eos(true);
  req.set_priority(priority);
  return req;
}

TEST(PriorityE2ETest, AHigherPriorityRequestPreemptsALowerOneAndBothEndAsAlone) {
  const int metrics_port = FreePort();
  ClusterOptions options;
  options.model = SourcePath(kModelDir);
  options.dtype = "fp16";
  options.extra_coordinator_flags = {"--scheduling=priority", "--max_batch=1",
                                     absl::StrCat("--metrics_listen=127.0.0.1:", metrics_port)};
  Cluster cluster(options);
  ASSERT_TRUE(WaitForHealth(cluster.address(), 1, 120)) << "never SERVING";
  auto stub = cluster.NewStub();
  const absl::StatusOr<std::string> status =
      RunAndRead(absl::StrCat(LlmintBinary(), " status --coordinator=", cluster.address()));
  ASSERT_TRUE(status.ok()) << status.status();
  EXPECT_THAT(*status, HasSubstr("scheduling priority"));

  // 250 of the context's 256 positions: about 2.5 s of decoding here.
  const v1::GenerateRequest low = Request(100, 250, 5);
  const v1::GenerateRequest high = Request(200, 10, -1);
  const Generated low_alone = Generate(*stub, low);
  ASSERT_TRUE(low_alone.status.ok()) << low_alone.status.error_message();
  const Generated high_alone = Generate(*stub, high);
  ASSERT_TRUE(high_alone.status.ok()) << high_alone.status.error_message();

  // The low one streams; once its first token is here the high one comes, with 249 of the
  // low one's tokens still to go.
  absl::Notification started;
  Generated low_run;
  std::chrono::steady_clock::time_point low_done;
  std::thread client([&] {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
    auto reader = stub->Generate(&ctx, low);
    v1::GenerateResponse resp;
    while (reader->Read(&resp)) {
      if (resp.has_token_id()) low_run.tokens.push_back(resp.token_id());
      if (!started.HasBeenNotified()) started.Notify();
    }
    low_run.status = reader->Finish();
    low_done = std::chrono::steady_clock::now();
    if (!started.HasBeenNotified()) started.Notify();
  });
  started.WaitForNotification();
  const Generated high_run = Generate(*stub, high);
  const auto high_done = std::chrono::steady_clock::now();
  client.join();
  ASSERT_TRUE(high_run.status.ok()) << high_run.status.error_message();
  ASSERT_TRUE(low_run.status.ok()) << low_run.status.error_message();
  EXPECT_THAT(high_run.tokens, ElementsAreArray(high_alone.tokens));
  EXPECT_THAT(low_run.tokens, ElementsAreArray(low_alone.tokens));
  EXPECT_LT(high_done, low_done) << "the high priority request waited for the low one";
  EXPECT_GE(Sample(Scrape(metrics_port), "llmint8_preemptions_total"), 1);
  EXPECT_TRUE(WaitForLogLine(cluster.log_dir() + "/coordinator.log", " priority=5 preempted=1", 5));
}

TEST(PriorityE2ETest, FirstComeFirstServedRefusesAPriority) {
  ClusterOptions options;
  options.model = SourcePath(kModelDir);
  options.dtype = "fp16";
  Cluster cluster(options);
  ASSERT_TRUE(WaitForHealth(cluster.address(), 1, 120)) << "never SERVING";
  auto stub = cluster.NewStub();
  const Generated refused = Generate(*stub, Request(100, 4, 1));
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(refused.status.error_message(), HasSubstr("--scheduling=priority"));
  const Generated served = Generate(*stub, Request(100, 4, 0));
  EXPECT_TRUE(served.status.ok()) << served.status.error_message();
}

}  // namespace
}  // namespace llmint8::e2e
