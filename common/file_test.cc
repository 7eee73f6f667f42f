#include "common/file.h"

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
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(s.message(), dir_ + ": cannot be read (Is a directory)");
}

}  // namespace
}  // namespace llmint8
