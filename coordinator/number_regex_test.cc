#include "coordinator/number_regex.h"

#include <cstdint>
#include <regex>
#include <string>
#include <utility>

#include "gtest/gtest.h"

namespace llmint8::coordinator {
namespace {

bool Matches(const std::string& pattern, const std::string& text) {
  return std::regex_match(text, std::regex(pattern));
}

// Every integer near and inside the range: matched exactly when inside, without leading zeros.
TEST(NumberRegexTest, UnsignedRangeMatchesExactlyTheRange) {
  for (const auto& [lo, hi] : std::initializer_list<std::pair<int64_t, int64_t>>{
           {0, 0}, {0, 9}, {7, 123}, {99, 1000}, {1234, 5678}, {10, 10}}) {
    const std::string pattern = UnsignedRange(lo, hi);
    for (int64_t n = 0; n <= hi + 150; ++n) {
      ASSERT_EQ(Matches(pattern, std::to_string(n)), n >= lo && n <= hi)
          << n << " in [" << lo << ", " << hi << "]: " << pattern;
    }
    EXPECT_FALSE(Matches(pattern, "0" + std::to_string(hi))) << pattern;
  }
}

TEST(NumberRegexTest, UnsignedFromMatchesEveryLargerIntegerUpTo16Digits) {
  const std::string pattern = UnsignedFrom(95);
  for (int64_t n = 0; n <= 1200; ++n) ASSERT_EQ(Matches(pattern, std::to_string(n)), n >= 95) << n;
  EXPECT_TRUE(Matches(pattern, "9999999999999999"));    // 16 digits
  EXPECT_FALSE(Matches(pattern, "10000000000000000"));  // 17
  EXPECT_FALSE(Matches(pattern, "0100"));
}

// [1.5, 2.25] as n / 10^6: the point comes with a fraction, trailing zeros are optional.
TEST(NumberRegexTest, ScaledRangeMatchesTheDecimalsInside) {
  const std::string pattern = "(?:" + ScaledRange(1'500'000, 2'250'000) + ")";
  for (const char* in : {"1.5", "1.50", "1.500000", "1.999999", "2", "2.0", "2.25", "2.250000"}) {
    EXPECT_TRUE(Matches(pattern, in)) << in;
  }
  for (const char* out :
       {"1.4999999", "1.499999", "2.250001", "2.26", "3", "02", "2.", ".5", "1.5e0", "1.5000000"}) {
    EXPECT_FALSE(Matches(pattern, out)) << out;
  }
  const std::string small = "(?:" + ScaledRange(0, 999) + ")";  // [0, 0.000999]
  EXPECT_TRUE(Matches(small, "0.000999"));
  EXPECT_TRUE(Matches(small, "0"));
  EXPECT_FALSE(Matches(small, "0.001"));
}

}  // namespace
}  // namespace llmint8::coordinator
