// Streams that outlive their worker group (--resume_on_group_loss): a worker killed mid-stream
// with real processes (the bundled model, so that the stream runs for seconds), the stream
// waits, the worker comes back, the group re-forms and the stream goes on from where it was
// (its prompt and output so far prefilled again) to the tokens it gives uninterrupted (CPU
// workers are batch-invariant, README.md). A group that does not come back within the wait
// ends the stream UNAVAILABLE, as without the flag.
#include <signal.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/e2e/cluster.h"

namespace llmint8::e2e {
namespace {

using ::testing::ElementsAreArray;
using ::testing::HasSubstr;

constexpr char kModelDir[] = "models/opt-sotu-cpu";
constexpr int kTokens = 200;  // about 2 s of decoding here

v1::GenerateRequest Request() {
  v1::GenerateRequest req = GreedyRequest({2, 100, 9, 10, 11}, kTokens);
  req.set_ignore_eos(true);
  return req;
}

// A stream that has delivered its first tokens.
struct Stream {
  grpc::ClientContext ctx;
  std::unique_ptr<grpc::ClientReader<v1::GenerateResponse>> reader;
  std::vector<int32_t> tokens;

  bool Start(v1::Generation::Stub& stub) {
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
    reader = stub.Generate(&ctx, Request());
    v1::GenerateResponse resp;
    while (tokens.size() < 3 && reader->Read(&resp)) {
      if (resp.has_token_id()) tokens.push_back(resp.token_id());
    }
    return tokens.size() == 3;
  }
  grpc::Status Finish() {
    v1::GenerateResponse resp;
    while (reader->Read(&resp)) {
      if (resp.has_token_id()) tokens.push_back(resp.token_id());
    }
    return reader->Finish();
  }
};

// The bundled model served by a coordinator with --resume_on_group_loss=`wait` and 2 workers.
class ResumeE2ETest : public ::testing::Test {
 protected:
  void Serve(const std::string& wait) {
    ClusterOptions options;
    options.model = SourcePath(kModelDir);
    options.dtype = "fp16";
    options.extra_coordinator_flags = {absl::StrCat("--resume_on_group_loss=", wait)};
    cluster_ = std::make_unique<Cluster>(options);
    ASSERT_TRUE(WaitForHealth(cluster_->address(), 1, 120)) << "never SERVING";
    stub_ = cluster_->NewStub();
  }

  std::unique_ptr<Cluster> cluster_;
  std::unique_ptr<v1::Generation::Stub> stub_;
};

TEST_F(ResumeE2ETest, AStreamWhoseWorkerIsKilledGoesOnWhenTheGroupReforms) {
  ASSERT_NO_FATAL_FAILURE(Serve("60s"));
  const absl::StatusOr<std::string> info =
      RunAndRead(absl::StrCat(LlmintBinary(), " status --coordinator=", cluster_->address()));
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_THAT(*info, HasSubstr("streams wait 1m for a lost group"));
  const Generated alone = Generate(*stub_, Request());
  ASSERT_TRUE(alone.status.ok()) << alone.status.error_message();

  Stream stream;
  ASSERT_TRUE(stream.Start(*stub_));
  cluster_->KillWorker(1, SIGKILL);
  EXPECT_TRUE(WaitForHealth(cluster_->address(), 2, 10)) << "health never said NOT_SERVING";
  cluster_->StartWorker(1);
  const grpc::Status status = stream.Finish();
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_THAT(stream.tokens, ElementsAreArray(alone.tokens));
  const std::string log = cluster_->log_dir() + "/coordinator.log";
  EXPECT_TRUE(WaitForLogLine(log, "wait up to 1m (--resume_on_group_loss)", 5));
  EXPECT_TRUE(WaitForLogLine(log, " preempted=1 ", 5));
}

TEST_F(ResumeE2ETest, AStreamWhoseGroupStaysLostEndsUnavailableAfterTheWait) {
  ASSERT_NO_FATAL_FAILURE(Serve("1s"));
  Stream stream;
  ASSERT_TRUE(stream.Start(*stub_));
  const auto killed_at = std::chrono::steady_clock::now();
  cluster_->KillWorker(1, SIGKILL);
  const grpc::Status status = stream.Finish();
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - killed_at).count();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << status.error_message();
  EXPECT_THAT(status.error_message(), HasSubstr("--resume_on_group_loss=1s"));
  EXPECT_GE(seconds, 1.0) << "it waited";
  EXPECT_LT(seconds, 10.0);
}

}  // namespace
}  // namespace llmint8::e2e
