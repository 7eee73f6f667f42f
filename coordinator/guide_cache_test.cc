#include "coordinator/guide_cache.h"

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace llmint8::coordinator {
namespace {

using ::testing::HasSubstr;

constexpr char kSchema[] = R"({"type": "object", "properties": {"n": {"type": "integer"}}})";

TEST(GuideCacheTest, TheSameGuideIsCompiledOnceAndShared) {
  GuideCache cache(4);
  auto a = cache.JsonSchema(kSchema);
  ASSERT_TRUE(a.ok()) << a.status();
  auto b = cache.JsonSchema(kSchema);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(a->get(), b->get());
  auto r = cache.Regex("[0-9]+");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_NE(r->get(), a->get());
  EXPECT_EQ(cache.size(), 2u);
  EXPECT_EQ(cache.hits(), 1u);
  EXPECT_EQ(cache.misses(), 2u);
}

// A pattern and a schema of the same text are different guides: "x" in quotes is a pattern
// (the quoted x) and no schema.
TEST(GuideCacheTest, KindsAreKeptApart) {
  GuideCache cache(4);
  const std::string text = R"("x")";
  auto regex = cache.Regex(text);
  ASSERT_TRUE(regex.ok()) << regex.status();
  auto schema = cache.JsonSchema(R"({"const": "x"})");
  ASSERT_TRUE(schema.ok()) << schema.status();
  auto schema_of_text = cache.JsonSchema(text);
  EXPECT_FALSE(schema_of_text.ok()) << "a JSON string is not a schema";
  EXPECT_EQ(cache.size(), 2u);
}

TEST(GuideCacheTest, TheLeastRecentlyUsedGoesFirst) {
  GuideCache cache(2);
  auto a = cache.Regex("a+");
  auto b = cache.Regex("b+");
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_TRUE(cache.Regex("a+").ok());  // a is now the most recently used
  auto c = cache.Regex("c+");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(cache.size(), 2u);
  auto a_again = cache.Regex("a+");
  ASSERT_TRUE(a_again.ok());
  EXPECT_EQ(a_again->get(), a->get()) << "kept";
  auto b_again = cache.Regex("b+");
  ASSERT_TRUE(b_again.ok());
  EXPECT_NE(b_again->get(), b->get()) << "evicted, compiled again";
  EXPECT_EQ(cache.hits(), 2u);
  EXPECT_EQ(cache.misses(), 4u);
}

TEST(GuideCacheTest, FailuresAreNotKeptAndSayWhy) {
  GuideCache cache(4);
  for (int i = 0; i < 2; ++i) {
    auto bad = cache.Regex("(a");
    EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument) << bad.status();
    auto refused = cache.JsonSchema(R"({"type": "array", "uniqueItems": true})");
    EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument) << refused.status();
    EXPECT_THAT(refused.status().message(), HasSubstr("uniqueItems"));
  }
  EXPECT_EQ(cache.size(), 0u);
  EXPECT_EQ(cache.misses(), 4u);
}

TEST(GuideCacheTest, CapacityZeroCompilesEachTime) {
  GuideCache cache(0);
  auto a = cache.Regex("a+");
  auto b = cache.Regex("a+");
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_NE(a->get(), b->get());
  EXPECT_EQ(cache.size(), 0u);
  EXPECT_EQ(cache.hits() + cache.misses(), 0u) << "no cache, nothing looked up";
}

// Requests arriving together with the same new schema all get one compiled guide in the end
// (some compile it meanwhile and are given the kept one).
TEST(GuideCacheTest, ConcurrentLookupsShareOneGuide) {
  GuideCache cache(4);
  constexpr int kThreads = 8;
  std::vector<const CompiledRegex*> got(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      auto re = cache.JsonSchema(kSchema);
      got[static_cast<size_t>(t)] = re.ok() ? re->get() : nullptr;
    });
  }
  for (std::thread& t : threads) t.join();
  auto kept = cache.JsonSchema(kSchema);
  ASSERT_TRUE(kept.ok());
  for (const CompiledRegex* re : got) EXPECT_EQ(re, kept->get());
  EXPECT_EQ(cache.size(), 1u);
  EXPECT_EQ(cache.hits() + cache.misses(), kThreads + 1u);
}

}  // namespace
}  // namespace llmint8::coordinator
