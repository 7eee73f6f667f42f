// A lost GPU context (common/device_lost.h) as the Worker service handles it: a step that
// fails with it breaks the group, the worker records it (DeviceLost(), which `llmint8 worker`
// exits on with status 3) and refuses every later LoadShard with UNAVAILABLE saying why; an
// ordinary step failure does not. The fault is put where DoStep puts a failed step's status
// (BreakGroup): a CPU model has no CUDA context to lose.
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "common/device_lost.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "llmint8/v1/worker.pb.h"
#include "worker/worker_service.h"

namespace llmint8::worker {

class WorkerServiceTestPeer {
 public:
  // What DoStep does with a step whose model call failed so that the group is lost.
  static absl::Status FailStep(WorkerService& service, absl::Status why, uint64_t step_id) {
    absl::MutexLock lock(&service.mu_);
    return service.BreakGroup(std::move(why), step_id);
  }
};

namespace {

using ::testing::HasSubstr;

constexpr int64_t kEpoch = (int64_t{7} << 32) + 1;

v1::LoadShardRequest OneRank(int64_t epoch) {
  v1::LoadShardRequest req;
  req.set_epoch(epoch);
  req.set_rank(0);
  req.set_world_size(1);
  req.set_model("synthetic:125m,layers=1,hidden=64,heads=4,ffn=128,vocab=256,positions=64");
  req.set_dtype("fp16");
  req.set_lease_ms(600'000);
  return req;
}

grpc::Status Load(WorkerService& service, int64_t epoch) {
  const v1::LoadShardRequest req = OneRank(epoch);
  v1::LoadShardResponse resp;
  return service.LoadShard(nullptr, &req, &resp);
}

grpc::Status Step(WorkerService& service, int64_t epoch) {
  v1::StepRequest req;
  req.set_epoch(epoch);
  req.set_step_id(9);
  v1::SeqStep* seq = req.add_seqs();
  seq->set_seq_id(1);
  seq->add_token_ids(2);
  v1::StepResponse resp;
  return service.Step(nullptr, &req, &resp);
}

TEST(WorkerDeviceLostTest, ALostContextBreaksTheGroupAndRefusesEveryLaterLoad) {
  WorkerService service(WorkerOptions{});
  ASSERT_TRUE(Load(service, kEpoch).ok());
  ASSERT_TRUE(Step(service, kEpoch).ok());
  ASSERT_TRUE(service.DeviceLost().ok());

  const absl::Status lost = DeviceLostError("CUDA error 700 (an illegal memory access)");
  const absl::Status step = WorkerServiceTestPeer::FailStep(service, lost, 10);
  EXPECT_EQ(step.code(), absl::StatusCode::kUnavailable) << step;
  EXPECT_THAT(std::string(step.message()), HasSubstr("an illegal memory access"));
  EXPECT_EQ(service.DeviceLost(), lost) << "what `llmint8 worker` exits (status 3) on";

  // The group answers no more steps, and no group is joined again, by any coordinator.
  const grpc::Status after = Step(service, kEpoch);
  EXPECT_EQ(after.error_code(), grpc::StatusCode::UNAVAILABLE) << after.error_message();
  for (const int64_t epoch : {kEpoch + 1, (int64_t{9} << 32) + 1}) {
    const grpc::Status load = Load(service, epoch);
    EXPECT_EQ(load.error_code(), grpc::StatusCode::UNAVAILABLE) << load.error_message();
    EXPECT_THAT(load.error_message(), HasSubstr("GPU context is lost"));
  }
}

TEST(WorkerDeviceLostTest, AnOrdinaryBrokenStepLosesOnlyTheGroup) {
  WorkerService service(WorkerOptions{});
  ASSERT_TRUE(Load(service, kEpoch).ok());
  const absl::Status step =
      WorkerServiceTestPeer::FailStep(service, absl::UnavailableError("gloo: peer closed"), 10);
  EXPECT_EQ(step.code(), absl::StatusCode::kUnavailable) << step;
  EXPECT_TRUE(service.DeviceLost().ok()) << service.DeviceLost();
  EXPECT_EQ(Step(service, kEpoch).error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_TRUE(Load(service, kEpoch + 1).ok()) << "a new group is formed as usual";
  EXPECT_TRUE(Step(service, kEpoch + 1).ok());
}

}  // namespace
}  // namespace llmint8::worker
