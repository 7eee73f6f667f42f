// A container's memory limit, read from cgroup files written the way v1 and v2 kernels write
// them, in a directory laid out as /sys/fs/cgroup is.
#include "worker/cgroup_memory.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "gtest/gtest.h"

namespace llmint8::worker {
namespace {

constexpr int64_t kGiB = int64_t{1} << 30;

TEST(CgroupMemoryTest, RoomIsTheLimitLessTheWorkingSet) {
  // 4 GiB limit, 3 GiB used of which 1 GiB inactive file cache: 2 GiB working set.
  EXPECT_EQ(CgroupRoomBytes("4294967296\n", "3221225472\n", "anon 1\ninactive_file 1073741824\n"),
            2 * kGiB);
  // v1 counts the subtree under total_ (and writes inactive_file for the cgroup alone first).
  EXPECT_EQ(CgroupRoomBytes("4294967296", "3221225472",
                            "inactive_file 0\ntotal_inactive_file 1073741824\n"),
            2 * kGiB);
  // Over the limit (page cache not yet reclaimed counts as working set only when active).
  EXPECT_EQ(CgroupRoomBytes("1073741824", "2147483648", ""), 0);
  EXPECT_EQ(CgroupRoomBytes("1073741824", "0", ""), kGiB);
}

TEST(CgroupMemoryTest, NoLimitOrUnreadableIsNullopt) {
  EXPECT_EQ(CgroupRoomBytes("max\n", "1000\n", ""), std::nullopt);
  EXPECT_EQ(CgroupRoomBytes("9223372036854771712\n", "1000\n", ""), std::nullopt);  // v1's none
  EXPECT_EQ(CgroupRoomBytes("lots", "1000", ""), std::nullopt);
  EXPECT_EQ(CgroupRoomBytes("1000", "-1", ""), std::nullopt);
}

class CgroupTreeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = ::testing::TempDir() + "/llmint8-cgroup-" + std::to_string(::getpid());
    std::filesystem::remove_all(root_);
  }
  void TearDown() override { std::filesystem::remove_all(root_); }
  void Write(const std::string& relative, const std::string& text) {
    const std::filesystem::path path = root_ + "/" + relative;
    std::filesystem::create_directories(path.parent_path());
    std::ofstream(path) << text;
  }
  std::string root_;
};

TEST_F(CgroupTreeTest, V2ReadsTheProcesssOwnCgroup) {
  Write("kubepods/pod1/ctr/memory.max", "2147483648\n");
  Write("kubepods/pod1/ctr/memory.current", "1073741824\n");
  Write("kubepods/pod1/ctr/memory.stat", "inactive_file 0\n");
  Write("memory.max", "max\n");  // the root: no limit
  const std::optional<CgroupMemory> m = ReadCgroupMemory("0::/kubepods/pod1/ctr\n", root_);
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->room_bytes, kGiB);
  EXPECT_EQ(m->path, root_ + "/kubepods/pod1/ctr");
}

// A pod's limit above its container's (which sets none) binds; so does v1's inherited one.
TEST_F(CgroupTreeTest, AnAncestorsLimitBinds) {
  Write("kubepods/pod1/memory.max", "1073741824\n");
  Write("kubepods/pod1/memory.current", "536870912\n");
  Write("kubepods/pod1/ctr/memory.max", "max\n");
  Write("kubepods/pod1/ctr/memory.current", "0\n");
  const std::optional<CgroupMemory> m = ReadCgroupMemory("0::/kubepods/pod1/ctr\n", root_);
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->room_bytes, kGiB / 2);
  EXPECT_EQ(m->path, root_ + "/kubepods/pod1");
  EXPECT_EQ(CgroupRoomBytes("9223372036854771712", "0", "hierarchical_memory_limit 1073741824\n"),
            kGiB);
}

TEST_F(CgroupTreeTest, APathNotMountedHereIsTheMountsRoot) {
  // A container that sees its host's path but has its own cgroup at the mount root.
  Write("memory.max", "1073741824\n");
  Write("memory.current", "0\n");
  const std::optional<CgroupMemory> m = ReadCgroupMemory("0::/elsewhere/on/the/host\n", root_);
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->room_bytes, kGiB);
  EXPECT_EQ(m->path, root_);
}

TEST_F(CgroupTreeTest, HybridHostsLimitOnTheV1MemoryController) {
  Write("memory/docker/abc/memory.limit_in_bytes", "3221225472\n");
  Write("memory/docker/abc/memory.usage_in_bytes", "1073741824\n");
  Write("memory/docker/abc/memory.stat", "total_inactive_file 0\n");
  const std::optional<CgroupMemory> m =
      ReadCgroupMemory("12:cpu,cpuacct:/docker/abc\n4:memory:/docker/abc\n0::/\n", root_);
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->room_bytes, 2 * kGiB);
}

TEST_F(CgroupTreeTest, NoLimitNoFilesOrNoCgroupLineIsNullopt) {
  Write("memory.max", "max\n");
  Write("memory.current", "5\n");
  EXPECT_EQ(ReadCgroupMemory("0::/\n", root_), std::nullopt);
  EXPECT_EQ(ReadCgroupMemory("0::/\n", root_ + "/missing"), std::nullopt);
  EXPECT_EQ(ReadCgroupMemory("garbage\n", root_), std::nullopt);
}

}  // namespace
}  // namespace llmint8::worker
