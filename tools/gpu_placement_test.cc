#include "tools/gpu_placement.h"

#include "gtest/gtest.h"

namespace llmint8::tools {
namespace {

TEST(GpuPlacementTest, OneRankPerGpuWhenThereAreEnough) {
  for (int rank = 0; rank < 4; ++rank) {
    const GpuPlacement p = PlaceRank(rank, 4, 8);
    EXPECT_EQ(p.cuda_device, rank);
    EXPECT_FALSE(p.shares_gpu);
  }
}

TEST(GpuPlacementTest, RanksWrapAroundAndShareWhenGpusAreFewer) {
  EXPECT_EQ(PlaceRank(0, 4, 1).cuda_device, 0);
  EXPECT_EQ(PlaceRank(3, 4, 1).cuda_device, 0);
  EXPECT_EQ(PlaceRank(3, 4, 2).cuda_device, 1);
  EXPECT_TRUE(PlaceRank(2, 4, 2).shares_gpu);
}

TEST(GpuPlacementTest, NoUsableGpuSaysSoWithTheReasonAndTheWayOut) {
  const absl::Status s = NoUsableGpu("cudaErrorNoDevice");
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(s.message(),
            "--device=cuda: no usable CUDA GPU on this machine (cudaErrorNoDevice); check the GPU "
            "and its driver (nvidia-smi), or run with --device=cpu");
}

TEST(GpuPlacementTest, UsableGpusPassesACountAndRefusesNoneOrAFailure) {
  EXPECT_EQ(UsableGpus(int64_t{2}).value(), 2);
  const absl::Status none = UsableGpus(int64_t{0}).status();
  EXPECT_EQ(none.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(none.message().find("(no device is visible)"), absl::string_view::npos)
      << none.message();
  const absl::Status failed =
      UsableGpus(absl::InternalError("cudaErrorInsufficientDriver")).status();
  EXPECT_EQ(failed.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(failed.message().find("cudaErrorInsufficientDriver"), absl::string_view::npos)
      << failed.message();
}

TEST(GpuPlacementTest, SharedGpuWarningOnlyWhenRanksOutnumberGpus) {
  EXPECT_EQ(SharedGpuWarning(2, 2), "");
  EXPECT_EQ(SharedGpuWarning(1, 8), "");
  EXPECT_EQ(SharedGpuWarning(4, 1),
            "4 ranks on 1 GPU(s): ranks share a GPU, each with its own NCCL_HOSTID (NCCL over "
            "sockets)");
}

}  // namespace
}  // namespace llmint8::tools
