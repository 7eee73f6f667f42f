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

TEST(SharedGpuNcclEnvTest, EachRankGetsItsOwnHostIdAndLoopbackUnlessSet) {
  ::unsetenv("NCCL_SOCKET_IFNAME");
  ::unsetenv("NCCL_IB_DISABLE");
  ::unsetenv("NCCL_NET");
  EXPECT_EQ(SharedGpuNcclEnv(0),
            (std::vector<std::string>{"NCCL_HOSTID=llmint8-rank-0", "NCCL_SOCKET_IFNAME=lo",
                                      "NCCL_IB_DISABLE=1", "NCCL_NET=Socket"}));
  EXPECT_EQ(SharedGpuNcclEnv(1)[0], "NCCL_HOSTID=llmint8-rank-1");
  ::setenv("NCCL_SOCKET_IFNAME", "eth0", 1);  // the user's choices are kept
  ::setenv("NCCL_IB_DISABLE", "0", 1);
  ::setenv("NCCL_NET", "IB", 1);
  EXPECT_EQ(SharedGpuNcclEnv(0), (std::vector<std::string>{"NCCL_HOSTID=llmint8-rank-0"}));
  ::unsetenv("NCCL_IB_DISABLE");
  ::unsetenv("NCCL_NET");
  ApplySharedGpuNcclEnv(4);
  EXPECT_STREQ(::getenv("NCCL_HOSTID"), "llmint8-rank-4");
  EXPECT_STREQ(::getenv("NCCL_SOCKET_IFNAME"), "eth0");
  EXPECT_STREQ(::getenv("NCCL_IB_DISABLE"), "1");
  EXPECT_STREQ(::getenv("NCCL_NET"), "Socket");
  ::unsetenv("NCCL_HOSTID");
  ::unsetenv("NCCL_NET");
  ::unsetenv("NCCL_SOCKET_IFNAME");
  ::unsetenv("NCCL_IB_DISABLE");
}

TEST(SharedGpuNcclEnvTest, ReplacesAnInheritedHostIdAndKeepsTheRest) {
  ::setenv("NCCL_SOCKET_IFNAME", "eth0", 1);  // the operator's choice: kept
  ::unsetenv("NCCL_IB_DISABLE");
  ::unsetenv("NCCL_NET");
  const std::vector<std::string> env = WithSharedGpuNcclEnv(
      {"PATH=/usr/bin", "NCCL_HOSTID=node-a", "NCCL_HOSTIDX=1", "NCCL_SOCKET_IFNAME=eth0", "junk"},
      3);
  EXPECT_THAT(env,
              ElementsAre("PATH=/usr/bin", "NCCL_HOSTIDX=1", "NCCL_SOCKET_IFNAME=eth0", "junk",
                          "NCCL_HOSTID=llmint8-rank-3", "NCCL_IB_DISABLE=1", "NCCL_NET=Socket"));
  ::unsetenv("NCCL_SOCKET_IFNAME");
  EXPECT_THAT(WithSharedGpuNcclEnv({}, 0),
              ElementsAre("NCCL_HOSTID=llmint8-rank-0", "NCCL_SOCKET_IFNAME=lo",
                          "NCCL_IB_DISABLE=1", "NCCL_NET=Socket"));
}

}  // namespace
}  // namespace llmint8::comm
