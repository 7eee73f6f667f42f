#include "coordinator/wait_queue.h"

#include <memory>
#include <vector>

#include "gtest/gtest.h"

namespace llmint8::coordinator {
namespace {

std::shared_ptr<Sequence> Seq(uint64_t id, int32_t priority = 0) {
  GenerationParams p;
  p.priority = priority;
  return std::make_shared<Sequence>(id, std::vector<int32_t>{2, 5}, p, nullptr);
}

std::vector<uint64_t> Ids(WaitQueue& queue) {
  std::vector<uint64_t> ids;
  for (const auto& seq : queue.TakeAll()) ids.push_back(seq->id());
  return ids;
}

// First come, first served: preempted ones by id, then those a lost group gave back by id,
// then the new ones as they came (the priority is not looked at).
TEST(WaitQueueTest, FirstComeFirstServed) {
  WaitQueue queue(/*by_priority=*/false);
  queue.Push(Seq(7, -5), WaitQueue::Kind::kNew);
  queue.Push(Seq(3), WaitQueue::Kind::kNew);
  queue.Push(Seq(5), WaitQueue::Kind::kPreempted);
  queue.Push(Seq(6), WaitQueue::Kind::kUnsent);
  queue.Push(Seq(2), WaitQueue::Kind::kPreempted);
  queue.Push(Seq(4), WaitQueue::Kind::kUnsent);
  EXPECT_EQ(queue.size(), 6u);
  EXPECT_EQ(queue.CountNotPreempted(), 4u);
  EXPECT_TRUE(queue.HasPreempted());
  EXPECT_EQ(Ids(queue), (std::vector<uint64_t>{2, 5, 4, 6, 7, 3}));
  EXPECT_TRUE(queue.empty());
  EXPECT_FALSE(queue.HasPreempted());
  EXPECT_EQ(queue.CountNotPreempted(), 0u);
}

// By priority: lower first, and within one priority the order above.
TEST(WaitQueueTest, ByPriority) {
  WaitQueue queue(/*by_priority=*/true);
  queue.Push(Seq(1, 2), WaitQueue::Kind::kNew);
  queue.Push(Seq(2, 0), WaitQueue::Kind::kNew);
  queue.Push(Seq(3, 2), WaitQueue::Kind::kPreempted);
  queue.Push(Seq(4, -1), WaitQueue::Kind::kNew);
  queue.Push(Seq(5, 0), WaitQueue::Kind::kNew);
  queue.Push(Seq(6, 0), WaitQueue::Kind::kUnsent);
  EXPECT_EQ(Ids(queue), (std::vector<uint64_t>{4, 6, 2, 5, 3, 1}));
}

// A draining group takes back only preempted sequences: Next(preempted_only) skips the rest.
TEST(WaitQueueTest, NextAndRemove) {
  WaitQueue queue(/*by_priority=*/true);
  EXPECT_EQ(queue.Next(false), nullptr);
  const auto high = Seq(1, -1);
  const auto low = Seq(2, 1);
  queue.Push(high, WaitQueue::Kind::kNew);
  queue.Push(low, WaitQueue::Kind::kPreempted);
  ASSERT_NE(queue.Next(false), nullptr);
  EXPECT_EQ(*queue.Next(false), high);
  ASSERT_NE(queue.Next(true), nullptr);
  EXPECT_EQ(*queue.Next(true), low);
  EXPECT_TRUE(queue.Remove(low.get()));
  EXPECT_FALSE(queue.Remove(low.get()));
  EXPECT_EQ(queue.Next(true), nullptr);
  EXPECT_FALSE(queue.HasPreempted());
  const auto removed = queue.RemoveIf([](Sequence& s) { return s.id() == 1; });
  ASSERT_EQ(removed.size(), 1u);
  EXPECT_EQ(removed[0], high);
  EXPECT_TRUE(queue.empty());
}

}  // namespace
}  // namespace llmint8::coordinator
