// ShardModel on the GPU at TP = 1, 2, 4 in separate processes over NCCL: the same greedy tokens
// as TP 1 and logits within a derived fp16 bound, in fp16 and int8 (tests/tp/tp_harness.h).
//
// The ranks share the one GPU: each rank's process sets its own NCCL_HOSTID, so NCCL treats the
// ranks as separate hosts and talks over sockets on loopback (the bandwidth is socket bandwidth:
// this checks results, not speed). The parent never touches CUDA (a CUDA context does not
// survive fork): a probe child looks for the device, and without one every test skips.
#include <string>
#include <vector>

#include "comm/fork_ranks.h"
#include "comm/nccl_communicator.h"
#include "comm/shared_gpu_env.h"
#include "common/status_macros.h"
#include "gtest/gtest.h"
#include "kernels/cuda/device.h"
#include "tests/tp/tp_harness.h"
#include "tests/tp/tp_memory_vote.h"

namespace llmint8::model {
namespace {

using testing::TpBackend;
using testing::TpCase;

// OK when a CUDA device answers, checked in a child so this process stays CUDA-free.
absl::Status DeviceInChild() {
  return comm::ValueInChild(
             []() -> absl::StatusOr<int64_t> {
               RETURN_IF_ERROR(gpu::CheckDeviceAvailable());
               return 1;
             },
             absl::Seconds(60))
      .status();
}

class TpNcclTest : public ::testing::TestWithParam<TpCase> {
 protected:
  void SetUp() override {
    if (!comm::NcclBackendBuilt()) GTEST_SKIP() << "built without the NCCL backend";
    const absl::Status device = DeviceInChild();
    if (!device.ok()) GTEST_SKIP() << "no CUDA device: " << device;
  }
};

class TpNcclVoteTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!comm::NcclBackendBuilt()) GTEST_SKIP() << "built without the NCCL backend";
    const absl::Status device = DeviceInChild();
    if (!device.ok()) GTEST_SKIP() << "no CUDA device: " << device;
  }
};

TEST_P(TpNcclTest, Tp1Tp2Tp4AgreeOnGreedyTokensAndLogits) {
  testing::ExpectTpDegreesAgree(TpBackend{Device::kCuda, "nccl", comm::ApplySharedGpuNcclEnv},
                                GetParam());
}

// fp16: the fp16 rounding bound alone (tp_harness.h: F16RoundingBound), teacher-forced since a
// rounding may flip a near-tie. int8: + 0.1 for the different quantization of the row-parallel
// slices, the figure the CPU test (tp_forward_test.cc) derives and asserts.
INSTANTIATE_TEST_SUITE_P(Precisions, TpNcclTest,
                         ::testing::Values(TpCase{Precision::kF16, 0.0, true, true},
                                           TpCase{Precision::kInt8, 0.1, true, true}),
                         [](const auto& info) {
                           return std::string(PrecisionName(info.param.precision));
                         });

// Ranks with different memory limits agree on every step (tests/tp/tp_memory_vote.h): the
// CUDA backend's vote, a device float all-reduced over NCCL.
TEST_F(TpNcclVoteTest, RanksWithDifferentLimitsAgreeOnEveryStep) {
  testing::ExpectMemoryVoteAgrees(TpBackend{Device::kCuda, "nccl", comm::ApplySharedGpuNcclEnv},
                                  Precision::kInt8);
}

// A decode kept after a refused step (tp_forward_test.cc's twin): the ranks still vote alike.
TEST_F(TpNcclVoteTest, AKeptDecodeAfterARefusedStepVotesOnBothRanks) {
  testing::ExpectKeptDecodeVoteAgrees(TpBackend{Device::kCuda, "nccl", comm::ApplySharedGpuNcclEnv},
                                      Precision::kInt8);
}

}  // namespace
}  // namespace llmint8::model
