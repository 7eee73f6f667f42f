#include <stdlib.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "comm/comm_options.h"
#include "comm/file_rendezvous.h"
#include "comm/in_memory_rendezvous.h"
#include "comm/local_communicator.h"
#include "gtest/gtest.h"

namespace llmint8::comm {
namespace {

// A fresh directory under TEST_TMPDIR or /tmp.
std::string MakeTempDir() {
  const char* base = std::getenv("TEST_TMPDIR");
  std::string templ = std::string(base != nullptr ? base : "/tmp") + "/llmint8_rdzv_XXXXXX";
  char* dir = ::mkdtemp(templ.data());
  EXPECT_NE(dir, nullptr);
  return templ;
}

class RendezvousTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (GetParam() == "file") {
      dir_ = MakeTempDir();
      rdzv_ = std::make_unique<FileRendezvous>(dir_);
    } else {
      rdzv_ = std::make_unique<InMemoryRendezvous>();
    }
  }
  void TearDown() override {
    std::error_code ec;
    if (!dir_.empty()) std::filesystem::remove_all(dir_, ec);
  }
  std::string dir_;
  std::unique_ptr<Rendezvous> rdzv_;
};

TEST_P(RendezvousTest, SetThenGetReturnsBytesIncludingNul) {
  const std::string value("a\0b/\xff", 5);
  ASSERT_TRUE(rdzv_->Set("group/0", value).ok());
  absl::StatusOr<std::string> got = rdzv_->Get("group/0", absl::Seconds(1));
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, value);
}

TEST_P(RendezvousTest, SetReplacesValue) {
  ASSERT_TRUE(rdzv_->Set("k", "one").ok());
  ASSERT_TRUE(rdzv_->Set("k", "two").ok());
  EXPECT_EQ(*rdzv_->Get("k", absl::Seconds(1)), "two");
}

TEST_P(RendezvousTest, GetOfMissingKeyTimesOutWithDeadlineExceeded) {
  absl::StatusOr<std::string> got = rdzv_->Get("never", absl::Milliseconds(50));
  EXPECT_EQ(got.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_NE(got.status().message().find("never"), std::string::npos) << got.status();
}

TEST_P(RendezvousTest, GetWaitsForALaterSet) {
  std::thread writer([this] {
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
    ASSERT_TRUE(rdzv_->Set("late", "here").ok());
  });
  absl::StatusOr<std::string> got = rdzv_->Get("late", absl::Seconds(10));
  writer.join();
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, "here");
}

TEST_P(RendezvousTest, KeysThatDifferOnlyInEscapedCharactersStayDistinct) {
  ASSERT_TRUE(rdzv_->Set("a/b", "slash").ok());
  ASSERT_TRUE(rdzv_->Set("a%2Fb", "percent").ok());
  ASSERT_TRUE(rdzv_->Set("..", "dots").ok());
  EXPECT_EQ(*rdzv_->Get("a/b", absl::Seconds(1)), "slash");
  EXPECT_EQ(*rdzv_->Get("a%2Fb", absl::Seconds(1)), "percent");
  EXPECT_EQ(*rdzv_->Get("..", absl::Seconds(1)), "dots");
}

TEST_P(RendezvousTest, ConcurrentAddsCountEveryIncrement) {
  constexpr int kThreads = 4;
  constexpr int kAddsPerThread = 50;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([this] {
      for (int i = 0; i < kAddsPerThread; ++i) ASSERT_TRUE(rdzv_->Add("counter", 1).ok());
    });
  }
  for (std::thread& t : threads) t.join();
  absl::StatusOr<int64_t> total = rdzv_->Add("counter", 0);
  ASSERT_TRUE(total.ok()) << total.status();
  EXPECT_EQ(*total, kThreads * kAddsPerThread);
  EXPECT_EQ(*rdzv_->Add("counter", -5), kThreads * kAddsPerThread - 5);
}

TEST_P(RendezvousTest, PrefixedViewScopesKeys) {
  PrefixedRendezvous epoch1(*rdzv_, "epoch/1/");
  PrefixedRendezvous epoch2(*rdzv_, "epoch/2/");
  ASSERT_TRUE(epoch1.Set("0", "old address").ok());
  EXPECT_EQ(epoch2.Get("0", absl::Milliseconds(20)).status().code(),
            absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(*rdzv_->Get("epoch/1/0", absl::Seconds(1)), "old address");
}

// The coordinator's store takes what peers send: no counter overflows (OutOfRange, the counter
// unchanged), and keys and values together stay under kMaxBytes (a replaced value counts once).
TEST(InMemoryRendezvousTest, CountersDoNotOverflowAndTheStoreIsBounded) {
  InMemoryRendezvous store;
  ASSERT_EQ(*store.Add("n", INT64_MAX), INT64_MAX);
  EXPECT_EQ(store.Add("n", 1).status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(*store.Add("n", -1), INT64_MAX - 1);
  const std::string half(InMemoryRendezvous::kMaxBytes / 2, 'x');
  ASSERT_TRUE(store.Set("a", half).ok());
  ASSERT_TRUE(store.Set("a", half).ok());  // replaced, not added
  EXPECT_EQ(store.Set("b", half).code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(store.Set("b", "small").ok());
  // Counters count too.
  EXPECT_EQ(store.Add(std::string(InMemoryRendezvous::kMaxBytes / 2, 'k'), 1).status().code(),
            absl::StatusCode::kResourceExhausted);
}

// A coordinator that re-forms its group all day keeps one group's keys: the older groups' values
// and counters go, and so does the room they took.
TEST(InMemoryRendezvousTest, KeepOnlyPrefixedDropsTheOtherKeysAndFreesTheirRoom) {
  InMemoryRendezvous store;
  const std::string big(InMemoryRendezvous::kMaxBytes / 2, 'x');
  ASSERT_TRUE(store.Set("epoch/7/gloo/0", big).ok());
  ASSERT_TRUE(store.Add("epoch/7/nccl/ready", 2).ok());
  ASSERT_TRUE(store.Set("epoch/8/gloo/0", "address").ok());
  ASSERT_TRUE(store.Add("epoch/8/nccl/ready", 1).ok());
  EXPECT_EQ(store.Set("epoch/8/gloo/1", big).code(), absl::StatusCode::kResourceExhausted);

  store.KeepOnlyPrefixed("epoch/8/");
  EXPECT_EQ(store.Get("epoch/7/gloo/0", absl::ZeroDuration()).status().code(),
            absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(*store.Add("epoch/7/nccl/ready", 0), 0);  // a fresh counter
  EXPECT_EQ(*store.Get("epoch/8/gloo/0", absl::ZeroDuration()), "address");
  EXPECT_EQ(*store.Add("epoch/8/nccl/ready", 0), 1);
  EXPECT_TRUE(store.Set("epoch/8/gloo/1", big).ok());  // the room is back
}

INSTANTIATE_TEST_SUITE_P(Stores, RendezvousTest, ::testing::Values("file", "memory"),
                         [](const auto& info) { return info.param; });

TEST(FileRendezvousTest, MissingDirectoryIsAnErrorNamingIt) {
  FileRendezvous rdzv("/nonexistent/llmint8_rdzv");
  absl::Status s = rdzv.Set("k", "v");
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(s.message().find("/nonexistent/llmint8_rdzv"), std::string::npos) << s;
}

TEST(CommOptionsTest, RejectsInconsistentGroups) {
  InMemoryRendezvous rdzv;
  CommOptions ok;
  ok.rank = 1;
  ok.world_size = 2;
  ok.rendezvous = &rdzv;
  EXPECT_TRUE(ValidateCommOptions(ok).ok());

  CommOptions bad_rank = ok;
  bad_rank.rank = 2;
  EXPECT_EQ(ValidateCommOptions(bad_rank).code(), absl::StatusCode::kInvalidArgument);
  CommOptions no_rdzv = ok;
  no_rdzv.rendezvous = nullptr;
  EXPECT_EQ(ValidateCommOptions(no_rdzv).code(), absl::StatusCode::kInvalidArgument);
  CommOptions infinite = ok;
  infinite.timeout = absl::InfiniteDuration();
  EXPECT_EQ(ValidateCommOptions(infinite).code(), absl::StatusCode::kInvalidArgument);
  CommOptions empty = ok;
  empty.world_size = 0;
  empty.rank = 0;
  EXPECT_EQ(ValidateCommOptions(empty).code(), absl::StatusCode::kInvalidArgument);
}

TEST(LocalCommunicatorTest, CollectivesAreIdentity) {
  LocalCommunicator comm;
  std::vector<float> data = {1.5f, -2.0f};
  ASSERT_TRUE(comm.AllReduceSum(std::span<float>(data)).ok());
  EXPECT_EQ(data, (std::vector<float>{1.5f, -2.0f}));
  std::vector<float> out(2);
  ASSERT_TRUE(comm.AllGather(std::span<const float>(data), std::span<float>(out)).ok());
  EXPECT_EQ(out, data);
  std::vector<uint8_t> bytes = {7, 8};
  EXPECT_TRUE(comm.Broadcast(std::span<uint8_t>(bytes), 0).ok());
  EXPECT_EQ(comm.Broadcast(std::span<uint8_t>(bytes), 1).code(),
            absl::StatusCode::kInvalidArgument);
  std::vector<float> too_small(1);
  EXPECT_EQ(comm.AllGather(std::span<const float>(data), std::span<float>(too_small)).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(comm.Barrier().ok());
}

}  // namespace
}  // namespace llmint8::comm
