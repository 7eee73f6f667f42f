// A mapped file truncated under its mapping: the copy reports it, the process goes on.
#include "common/mapped_copy.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace llmint8 {
namespace {

class MappedCopyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = ::testing::TempDir() + "/llmint8-mapped-copy-" + std::to_string(::getpid());
    fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0600);
    ASSERT_GE(fd_, 0);
    const std::vector<char> data(kBytes, 'x');
    ASSERT_EQ(::write(fd_, data.data(), data.size()), static_cast<ssize_t>(kBytes));
    void* p = ::mmap(nullptr, kBytes, PROT_READ, MAP_PRIVATE, fd_, 0);
    ASSERT_NE(p, MAP_FAILED);
    mapped_ = static_cast<const char*>(p);
  }
  void TearDown() override {
    if (mapped_ != nullptr) ::munmap(const_cast<char*>(mapped_), kBytes);
    if (fd_ >= 0) ::close(fd_);
    ::unlink(path_.c_str());
  }

  static constexpr size_t kBytes = 64 * 1024;
  std::string path_;
  int fd_ = -1;
  const char* mapped_ = nullptr;
};

TEST_F(MappedCopyTest, CopiesWhatIsThere) {
  EXPECT_TRUE(CopyFromMapping(nullptr, nullptr, 0));  // nothing: an empty file has no mapping
  std::vector<char> out(kBytes);
  ASSERT_TRUE(CopyFromMapping(out.data(), mapped_, kBytes));
  EXPECT_EQ(std::string(out.begin(), out.end()), std::string(kBytes, 'x'));
}

TEST_F(MappedCopyTest, AFileTruncatedUnderItsMappingIsAFailedCopyNotACrash) {
  ASSERT_EQ(::ftruncate(fd_, 4096), 0);  // the pages past the first are gone
  std::vector<char> out(kBytes);
  EXPECT_TRUE(CopyFromMapping(out.data(), mapped_, 4096));
  EXPECT_FALSE(CopyFromMapping(out.data(), mapped_ + 8192, 4096));
  EXPECT_FALSE(CopyFromMapping(out.data(), mapped_, kBytes));
  // Again, and from other threads: each copy catches its own fault.
  std::vector<std::thread> threads;
  std::vector<int> failed(4, 0);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      std::vector<char> mine(4096);
      for (int i = 0; i < 100; ++i)
        failed[t] += !CopyFromMapping(mine.data(), mapped_ + 16384, 4096);
    });
  }
  for (std::thread& t : threads) t.join();
  for (int t = 0; t < 4; ++t) EXPECT_EQ(failed[t], 100);
  EXPECT_TRUE(CopyFromMapping(out.data(), mapped_, 4096));
}

}  // namespace
}  // namespace llmint8
