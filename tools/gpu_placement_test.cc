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

}  // namespace
}  // namespace llmint8::tools
