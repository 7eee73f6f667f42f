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

}  // namespace
}  // namespace llmint8::coordinator
