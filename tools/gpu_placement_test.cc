#include "tools/gpu_placement.h"

#include <stdlib.h>

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

TEST(GpuPlacementTest, SharedGpuEnvGivesEachRankItsOwnHostId) {
  ::unsetenv("NCCL_SOCKET_IFNAME");
  const std::vector<std::string> env0 = SharedGpuEnv(0);
  const std::vector<std::string> env1 = SharedGpuEnv(1);
  ASSERT_EQ(env0.size(), 2u);
  EXPECT_EQ(env0[0], "NCCL_HOSTID=llmint8-rank-0");
  EXPECT_EQ(env1[0], "NCCL_HOSTID=llmint8-rank-1");
  EXPECT_EQ(env0[1], "NCCL_SOCKET_IFNAME=lo");
  ::setenv("NCCL_SOCKET_IFNAME", "eth0", 1);  // the user's choice is kept
  EXPECT_EQ(SharedGpuEnv(0).size(), 1u);
  ::unsetenv("NCCL_SOCKET_IFNAME");
}

}  // namespace
}  // namespace llmint8::tools
