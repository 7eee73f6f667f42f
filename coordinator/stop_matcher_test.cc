#include "coordinator/stop_matcher.h"

#include "gtest/gtest.h"

namespace llmint8::coordinator {
namespace {

TEST(StopMatcherTest, NoStopsPassesTextThrough) {
  StopMatcher m({});
  EXPECT_EQ(m.Append("abc"), "abc");
  EXPECT_EQ(m.Append(""), "");
  EXPECT_EQ(m.Flush(), "");
  EXPECT_FALSE(m.stopped());
}

TEST(StopMatcherTest, HoldsBackPossiblePrefixAcrossPieces) {
  StopMatcher m({"\n\n"});
  EXPECT_EQ(m.Append("Hello\n"), "Hello");
  EXPECT_EQ(m.Append("\nBye"), "");
  EXPECT_TRUE(m.stopped());
  EXPECT_EQ(m.Append("more"), "");
  EXPECT_EQ(m.Flush(), "");
}

TEST(StopMatcherTest, ReleasesHeldTextWhenPrefixBreaks) {
  StopMatcher m({"END"});
  EXPECT_EQ(m.Append("the EN"), "the ");
  EXPECT_EQ(m.Append("ding"), "ENding");
  EXPECT_FALSE(m.stopped());
  EXPECT_EQ(m.Append("E"), "");
  EXPECT_EQ(m.Flush(), "E");
}

TEST(StopMatcherTest, EarliestOfSeveralStopsWins) {
  StopMatcher m({"world", "lo w"});
  EXPECT_EQ(m.Append("hello world"), "hel");
  EXPECT_TRUE(m.stopped());
}

TEST(StopMatcherTest, StopInsideOnePiece) {
  StopMatcher m({"."});
  EXPECT_EQ(m.Append("a.b"), "a");
  EXPECT_TRUE(m.stopped());
}

// Text appended with may_stop false (before min_tokens) ends no stop sequence, but one that
// ends in later text may start in it; a possible start stays held back meanwhile.
TEST(StopMatcherTest, SettledTextStartsButDoesNotEndAStop) {
  StopMatcher m({" b", "aSTO"});
  EXPECT_EQ(m.Append(" a b", /*may_stop=*/false), " a b");  // " b" ends in settled text
  EXPECT_EQ(m.Append(" a", /*may_stop=*/false), " ");       // "a" may start "aSTO"
  EXPECT_FALSE(m.stopped());
  EXPECT_EQ(m.Append("STOP"), "");  // "aSTO" ends here
  EXPECT_TRUE(m.stopped());

  // A stop wholly inside the settled tail is not found later, one ending past it is.
  StopMatcher tail({"xy", "xyzw"});
  EXPECT_EQ(tail.Append("axyz", /*may_stop=*/false), "a");  // "xyz" may start "xyzw"
  EXPECT_EQ(tail.Append("q"), "xyzq");
  EXPECT_FALSE(tail.stopped());
  StopMatcher straddle({"xy", "xyzw"});
  EXPECT_EQ(straddle.Append("axyz", /*may_stop=*/false), "a");
  EXPECT_EQ(straddle.Append("w!"), "");
  EXPECT_TRUE(straddle.stopped());
  // Nothing held back at the end of settled text comes out on Flush.
  StopMatcher flushed({"xyzw"});
  EXPECT_EQ(flushed.Append("axy", /*may_stop=*/false), "a");
  EXPECT_EQ(flushed.Flush(), "xy");
}

}  // namespace
}  // namespace llmint8::coordinator
