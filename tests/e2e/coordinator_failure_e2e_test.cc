// The coordinator killed while its workers keep running (a rescheduled coordinator pod): its
// streams end UNAVAILABLE, and a new coordinator at the same address forms the group again
// from the same workers, which hold nothing of the old group, and serves the runtime's tokens.
#include <signal.h>

#include <chrono>
#include <cstdio>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/e2e/cluster.h"
#include "tests/e2e/reference.h"

namespace llmint8::e2e {
namespace {

using ::testing::ElementsAreArray;

TEST(CoordinatorFailureE2ETest, ANewCoordinatorReformsTheGroupFromTheRunningWorkers) {
  const std::string model = SourcePath("tests/golden/tiny-opt");
  auto ref = InProcessReference::Open(model, model::Precision::kF32);
  ASSERT_TRUE(ref.ok()) << ref.status();
  const std::vector<int32_t> prompt = {2, 100, 200, 300};
  auto expected = (*ref)->Greedy(prompt, 16);
  ASSERT_TRUE(expected.ok()) << expected.status();

  ClusterOptions options;
  options.model = model;
  Cluster cluster(options);
  ASSERT_TRUE(WaitForHealth(cluster.address(), 1, 60)) << "never SERVING";
  {
    auto stub = cluster.NewStub();
    const Generated before = Generate(*stub, GreedyRequest(prompt, 16));
    ASSERT_TRUE(before.status.ok()) << before.status.error_message();
    EXPECT_THAT(before.tokens, ElementsAreArray(*expected));

    // A long stream, its coordinator killed after its first tokens.
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    auto reader = stub->Generate(&ctx, GreedyRequest({2, 7}, 120));
    v1::GenerateResponse resp;
    for (int i = 0; i < 3; ++i) ASSERT_TRUE(reader->Read(&resp));
    ASSERT_GT(cluster.ActiveSequences(), 0) << "the stream's sequence is on the workers";
    cluster.RestartCoordinator(SIGKILL);
    while (reader->Read(&resp)) {
    }
    const grpc::Status status = reader->Finish();
    EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << status.error_message();
  }

  const auto restarted_at = std::chrono::steady_clock::now();
  ASSERT_TRUE(WaitForHealth(cluster.address(), 1, 60)) << "the new coordinator never SERVING";
  std::fprintf(
      stderr, "the new coordinator served %.3f s after its start\n",
      std::chrono::duration<double>(std::chrono::steady_clock::now() - restarted_at).count());
  EXPECT_EQ(cluster.ActiveSequences(), 0) << "a sequence of the old group survived";
  auto stub = cluster.NewStub();
  const Generated after = Generate(*stub, GreedyRequest(prompt, 16));
  ASSERT_TRUE(after.status.ok()) << after.status.error_message();
  EXPECT_THAT(after.tokens, ElementsAreArray(*expected));
}

}  // namespace
}  // namespace llmint8::e2e
