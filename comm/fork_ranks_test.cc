#include "comm/fork_ranks.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <string>
#include <thread>

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

// Whether process `pid` still runs (not gone, not a zombie nobody reaped yet).
bool Running(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string text;
  if (!std::getline(stat, text)) return false;
  const size_t paren = text.rfind(')');
  return paren != std::string::npos && paren + 2 < text.size() && text[paren + 2] != 'Z';
}

// Ranks die with the process that forked them (eval --tp=2 stopped by a signal must not leave
// its ranks computing): a middle process forks two sleeping ranks, which send their pids, and
// is killed.
TEST(ForkRanksTest, RanksDieWithTheirParent) {
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  const pid_t middle = ::fork();
  ASSERT_GE(middle, 0);
  if (middle == 0) {
    ::close(fds[0]);
    ForkRanks(
        2,
        [&](int) {
          const pid_t self = ::getpid();
          if (::write(fds[1], &self, sizeof(self)) != sizeof(self)) ::_exit(2);
          ::sleep(60);
          return absl::OkStatus();
        },
        absl::Seconds(90));
    ::_exit(0);
  }
  ::close(fds[1]);
  pid_t ranks[2] = {0, 0};
  for (pid_t& pid : ranks) ASSERT_EQ(::read(fds[0], &pid, sizeof(pid)), sizeof(pid));
  ::close(fds[0]);
  ASSERT_TRUE(Running(ranks[0]) && Running(ranks[1]));
  ::kill(middle, SIGKILL);
  ::waitpid(middle, nullptr, 0);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while ((Running(ranks[0]) || Running(ranks[1])) && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_FALSE(Running(ranks[0])) << "rank 0 outlived its parent";
  EXPECT_FALSE(Running(ranks[1])) << "rank 1 outlived its parent";
}

}  // namespace
}  // namespace llmint8::comm
