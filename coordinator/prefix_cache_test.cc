// The prefix cache's choices: the longest shared prefix (at most the prompt but its last
// token, at least min_prefix), entries with kept tokens for prompts that need them, least
// recently used first out, positions counted in granules.
#include "coordinator/prefix_cache.h"

#include <numeric>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace llmint8::coordinator {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

std::vector<int32_t> Range(int32_t from, int32_t n) {
  std::vector<int32_t> v(static_cast<size_t>(n));
  std::iota(v.begin(), v.end(), from);
  return v;
}

std::vector<int32_t> Join(std::vector<int32_t> a, const std::vector<int32_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

TEST(SharedStartTest, CountsUpToTheFirstDifferenceOrTheBound) {
  const std::vector<int32_t> a = Range(0, 300);
  // A difference in and at the edges of the compared blocks, and none.
  for (int32_t at : {0, 1, 63, 64, 65, 127, 128, 200, 299}) {
    std::vector<int32_t> b = a;
    b[static_cast<size_t>(at)] = -1;
    EXPECT_EQ(SharedStart(a, b, a.size()), at) << "difference at " << at;
    EXPECT_EQ(SharedStart(b, a, 100), std::min(at, 100)) << "difference at " << at;
  }
  EXPECT_EQ(SharedStart(a, a, a.size()), 300);
  EXPECT_EQ(SharedStart(a, a, 129), 129);
  EXPECT_EQ(SharedStart(a, Range(0, 130), 1000), 130);  // the shorter one's length
  EXPECT_EQ(SharedStart(Range(0, 70), a, 1000), 70);
  EXPECT_EQ(SharedStart({}, a, 1000), 0);
}

TEST(PrefixCacheTest, FindsTheLongestSharedPrefixWithinItsBounds) {
  PrefixCache cache({.max_entries = 8, .min_prefix = 4});
  EXPECT_THAT(cache.Park(1, Range(0, 10), false), IsEmpty());
  EXPECT_THAT(cache.Park(2, Join(Range(0, 6), Range(100, 10)), false), IsEmpty());
  EXPECT_EQ(cache.size(), 2u);
  EXPECT_EQ(cache.positions(), 16 + 16);

  // 8 shared with entry 1, 6 with entry 2.
  auto m = cache.Find(Join(Range(0, 8), {50, 51}), false);
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->id, 1u);
  EXPECT_EQ(m->length, 8);
  // All of entry 2 and more: 16 shared, of a 20-token prompt.
  m = cache.Find(Join(Join(Range(0, 6), Range(100, 10)), {7, 7, 7, 7}), false);
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->id, 2u);
  EXPECT_EQ(m->length, 16);
  // The same prompt as entry 1: all but its last token.
  m = cache.Find(Range(0, 10), false);
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->length, 9);
  // Under min_prefix, or nothing shared, or too short a prompt: none.
  EXPECT_FALSE(cache.Find(Join(Range(0, 3), {99, 99, 99}), false).has_value());
  EXPECT_FALSE(cache.Find(Range(5, 10), false).has_value());
  EXPECT_FALSE(cache.Find(Range(0, 4), false).has_value());  // at most 3 positions
  EXPECT_FALSE(cache.Find({}, false).has_value());
}

TEST(PrefixCacheTest, PromptsThatNeedTokensOnlyUseEntriesThatKeptThem) {
  PrefixCache cache({.max_entries = 8, .min_prefix = 2});
  cache.Park(1, Range(0, 10), /*tokens_kept=*/false);
  cache.Park(2, Range(0, 5), /*tokens_kept=*/true);
  EXPECT_EQ(cache.Find(Range(0, 12), false)->id, 1u);
  auto m = cache.Find(Range(0, 12), true);
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->id, 2u);
  EXPECT_EQ(m->length, 5);
}

// Positions a parked sequence holds past its tokens (draft tokens not accepted) count, and
// are never copied.
TEST(PrefixCacheTest, ExtraPositionsCountButAreNotCopied) {
  PrefixCache cache({.max_entries = 4, .min_prefix = 2});
  cache.Park(1, Range(0, 14), false, /*extra=*/3);
  EXPECT_EQ(cache.positions(), 32);  // 17, rounded up to the granule of 16
  auto m = cache.Find(Range(0, 30), false);
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->length, 14);
  EXPECT_EQ(cache.EvictOldest(), 1u);
  EXPECT_EQ(cache.positions(), 0);
}

TEST(PrefixCacheTest, EvictsTheLeastRecentlyUsedAndKeepsItsCap) {
  PrefixCache cache({.max_entries = 3, .min_prefix = 2});
  cache.Park(1, Range(0, 4), false);
  cache.Park(2, Range(10, 4), false);
  cache.Park(3, Range(20, 40), false);
  EXPECT_EQ(cache.positions(), 16 + 16 + 48);
  ASSERT_TRUE(cache.Find(Range(0, 5), false).has_value());  // finding marks nothing
  cache.MarkUsed(1);                                        // 2 is the oldest now
  cache.MarkUsed(42);                                       // none: no-op
  EXPECT_THAT(cache.Park(4, Range(30, 4), false), ElementsAre(2u));
  EXPECT_TRUE(cache.Evict(3));
  EXPECT_FALSE(cache.Evict(3));
  cache.Park(3, Range(20, 40), false);  // now the newest
  EXPECT_EQ(cache.EvictOldest(), 1u);
  EXPECT_EQ(cache.EvictOldest(), 4u);
  EXPECT_EQ(cache.EvictOldest(), 3u);
  EXPECT_FALSE(cache.EvictOldest().has_value());
  cache.Park(1, Range(0, 4), false);
  cache.Park(4, Range(30, 4), false);
  cache.Park(3, Range(20, 40), false);
  cache.MarkUsed(1);  // 4 is the oldest now, then 3, then 1
  EXPECT_EQ(cache.EvictOldest(), 4u);
  EXPECT_EQ(cache.EvictOldest(), 3u);
  EXPECT_EQ(cache.EvictOldest(), 1u);
  EXPECT_FALSE(cache.EvictOldest().has_value());
  EXPECT_EQ(cache.positions(), 0);

  cache.Park(5, Range(0, 4), false);
  cache.Clear();
  EXPECT_EQ(cache.size(), 0u);
  EXPECT_EQ(cache.positions(), 0);
  // Off (no entries allowed) or nothing cached: the sequence goes straight back.
  PrefixCache off({.max_entries = 0});
  EXPECT_THAT(off.Park(9, Range(0, 40), false), ElementsAre(9u));
  EXPECT_THAT(cache.Park(8, {}, false), ElementsAre(8u));
  EXPECT_THAT(cache.Park(7, Range(0, 1), false), ElementsAre(7u));  // under min_prefix 2
  EXPECT_EQ(off.size() + cache.size(), 0u);
}

}  // namespace
}  // namespace llmint8::coordinator
