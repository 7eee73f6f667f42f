// The environment of a rank that shares its GPU: its own NCCL_HOSTID even when the parent's
// environment has one, and the operator's socket settings kept.
#include "comm/shared_gpu_env.h"

#include <stdlib.h>

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace llmint8::comm {
namespace {

using ::testing::ElementsAre;

TEST(SharedGpuEnvTest, ReplacesAnInheritedHostIdAndKeepsTheRest) {
  ::setenv("NCCL_SOCKET_IFNAME", "eth0", 1);  // the operator's choice: kept
  ::unsetenv("NCCL_IB_DISABLE");
  const std::vector<std::string> env = WithSharedGpuNcclEnv(
      {"PATH=/usr/bin", "NCCL_HOSTID=node-a", "NCCL_HOSTIDX=1", "NCCL_SOCKET_IFNAME=eth0"}, 3);
  EXPECT_THAT(env, ElementsAre("PATH=/usr/bin", "NCCL_HOSTIDX=1", "NCCL_SOCKET_IFNAME=eth0",
                               "NCCL_HOSTID=llmint8-rank-3", "NCCL_IB_DISABLE=1"));
  ::unsetenv("NCCL_SOCKET_IFNAME");
  EXPECT_THAT(
      WithSharedGpuNcclEnv({}, 0),
      ElementsAre("NCCL_HOSTID=llmint8-rank-0", "NCCL_SOCKET_IFNAME=lo", "NCCL_IB_DISABLE=1"));
}

}  // namespace
}  // namespace llmint8::comm
