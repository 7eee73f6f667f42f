#include "comm/fork_ranks.h"

#include <unistd.h>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace llmint8::comm {
namespace {

using ::testing::HasSubstr;

TEST(ValueInChildTest, ReturnsTheChildsValueOrError) {
  const pid_t parent = ::getpid();
  auto pid = ValueInChild([] { return absl::StatusOr<int64_t>(::getpid()); }, absl::Seconds(30));
  ASSERT_TRUE(pid.ok()) << pid.status();
  EXPECT_NE(*pid, parent);  // it ran in another process
  EXPECT_EQ(*ValueInChild([] { return absl::StatusOr<int64_t>(-7); }, absl::Seconds(30)), -7);
  // The probe's own errors come back as they are, CANCELLED included.
  for (const absl::Status& error :
       {absl::UnavailableError("no driver"), absl::CancelledError("stopped")}) {
    EXPECT_EQ(
        ValueInChild([&] { return absl::StatusOr<int64_t>(error); }, absl::Seconds(30)).status(),
        error);
  }
}

TEST(ValueInChildTest, AChildThatDiesIsUnavailable) {
  auto died = ValueInChild([]() -> absl::StatusOr<int64_t> { ::_exit(3); }, absl::Seconds(30));
  EXPECT_EQ(died.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(died.status().message(), HasSubstr("exit code 3"));
}

}  // namespace
}  // namespace llmint8::comm
