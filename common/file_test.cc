#include "common/file.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace llmint8 {
namespace {

using ::testing::HasSubstr;

class ReadFileToStringTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char pattern[] = "/tmp/llmint8_file_test.XXXXXX";
    ASSERT_NE(::mkdtemp(pattern), nullptr);
    dir_ = pattern;
  }
  void TearDown() override { std::system(("rm -rf '" + dir_ + "'").c_str()); }

  std::string Write(const std::string& name, const std::string& bytes) {
    const std::string path = dir_ + "/" + name;
    std::ofstream(path, std::ios::binary) << bytes;
    return path;
  }

  std::string dir_;
};

TEST_F(ReadFileToStringTest, ReturnsEveryByte) {
  std::string bytes("a\0b\r\n", 5);
  for (int i = 0; i < 70000; ++i) bytes.push_back(static_cast<char>(i % 251));  // > one read
  absl::StatusOr<std::string> got = ReadFileToString(Write("data.bin", bytes));
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, bytes);
  got = ReadFileToString(Write("empty", ""));
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, "");
}

TEST_F(ReadFileToStringTest, ReadsFilesThatReportNoSize) {
  absl::StatusOr<std::string> got = ReadFileToString("/proc/self/status");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_THAT(*got, HasSubstr("Name:"));
}

TEST_F(ReadFileToStringTest, ErrorsNameThePathAndTheReason) {
  const std::string missing = dir_ + "/missing.json";
  absl::Status s = ReadFileToString(missing).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(s.message(), missing + ": cannot be read (No such file or directory)");
  s = ReadFileToString(Write("file", "x") + "/below").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound) << s;
  s = ReadFileToString(dir_).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), dir_ + ": cannot be read (not a regular file but a directory)");
}

// A FIFO (no writer: a blocking open would wait forever) and a device are refused at once.
TEST_F(ReadFileToStringTest, RefusesFifosAndDevicesWithoutWaiting) {
  const std::string fifo = dir_ + "/fifo";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  absl::Status s = ReadFileToString(fifo).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), fifo + ": cannot be read (not a regular file but a FIFO)");
  s = ReadFileToString("/dev/zero").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("not a regular file but a device or socket"));
}

// A pipe (a shell's <(...)) is read where the caller allows it, as TLS files are.
TEST_F(ReadFileToStringTest, ReadsAPipeOnlyWhenAllowed) {
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  ASSERT_EQ(::write(fds[1], "pem", 3), 3);
  ::close(fds[1]);
  const std::string path = "/proc/self/fd/" + std::to_string(fds[0]);
  EXPECT_EQ(ReadFileToString(path).status().code(), absl::StatusCode::kInvalidArgument);
  absl::StatusOr<std::string> got = ReadFileToString(path, 100, /*allow_pipe=*/true);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, "pem");
  ::close(fds[0]);
}

// Over the cap: refused from its size before any read (a sparse 1 TiB config.json must not
// be allocated), and while reading a file that reports no size.
TEST_F(ReadFileToStringTest, RefusesFilesOverTheCap) {
  const std::string path = Write("big.json", std::string(100, 'x'));
  EXPECT_TRUE(ReadFileToString(path, 100).ok());
  absl::Status s = ReadFileToString(path, 99).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(),
            path + ": cannot be read (100 bytes or more, over the 99 this file may hold)");
  const std::string sparse = dir_ + "/sparse.json";
  ASSERT_EQ(::truncate(Write("sparse.json", "").c_str(), int64_t{1} << 40), 0);
  s = ReadFileToString(sparse).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("1099511627776 bytes or more, over the 67108864"));
  s = ReadFileToString("/proc/self/status", 10).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("over the 10 this file may hold"));
}

}  // namespace
}  // namespace llmint8
