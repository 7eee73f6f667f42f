#include "coordinator/stop_matcher.h"

#include <algorithm>
#include <random>
#include <string>
#include <utility>
#include <vector>

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

// The matcher's rules written the plain way (every occurrence searched and every tail compared
// again at each piece): what the streaming matcher must release, piece by piece.
class ReferenceMatcher {
 public:
  explicit ReferenceMatcher(std::vector<std::string> stops) {
    for (std::string& s : stops) {
      if (!s.empty()) stops_.push_back(std::move(s));
    }
  }
  std::string Append(const std::string& text, bool may_stop) {
    if (stopped_) return "";
    pending_ += text;
    if (!may_stop) settled_ = pending_.size();
    size_t first = std::string::npos;
    for (const std::string& stop : stops_) {
      if (!may_stop) break;
      const size_t from = settled_ >= stop.size() ? settled_ - stop.size() + 1 : 0;
      first = std::min(first, pending_.find(stop, from));
    }
    if (first != std::string::npos) {
      stopped_ = true;
      std::string out = pending_.substr(0, first);
      pending_.clear();
      return out;
    }
    size_t hold = 0;
    for (const std::string& stop : stops_) {
      for (size_t len = std::min(stop.size() - 1, pending_.size()); len > hold; --len) {
        if (pending_.compare(pending_.size() - len, len, stop, 0, len) == 0) {
          hold = len;
          break;
        }
      }
    }
    std::string out = pending_.substr(0, pending_.size() - hold);
    pending_.erase(0, out.size());
    settled_ -= std::min(settled_, out.size());
    return out;
  }
  std::string Flush() { return stopped_ ? "" : std::exchange(pending_, std::string()); }
  bool stopped() const { return stopped_; }

 private:
  std::vector<std::string> stops_;
  std::string pending_;
  size_t settled_ = 0;
  bool stopped_ = false;
};

// Random stop strings and pieces over a 3-letter alphabet (so that stops overlap, repeat and
// share prefixes), some pieces before min_tokens: the same text released piece by piece.
TEST(StopMatcherTest, ReleasesWhatThePlainRulesRelease) {
  std::mt19937 rng(7);
  auto word = [&](int max_len) {
    std::string w(std::uniform_int_distribution<int>(0, max_len)(rng), 'a');
    for (char& c : w) c = "ab\n"[std::uniform_int_distribution<int>(0, 2)(rng)];
    return w;
  };
  int stopped = 0;
  for (int trial = 0; trial < 20000; ++trial) {
    std::vector<std::string> stops(std::uniform_int_distribution<int>(0, 4)(rng));
    for (std::string& s : stops) s = word(6);
    StopMatcher m(stops);
    ReferenceMatcher ref(stops);
    std::string log;
    const int pieces = std::uniform_int_distribution<int>(1, 12)(rng);
    for (int p = 0; p < pieces; ++p) {
      const std::string piece = word(5);
      const bool may_stop = std::uniform_int_distribution<int>(0, 3)(rng) != 0;
      log += (may_stop ? "+" : "-") + piece + "|";
      ASSERT_EQ(m.Append(piece, may_stop), ref.Append(piece, may_stop)) << log;
      ASSERT_EQ(m.stopped(), ref.stopped()) << log;
    }
    ASSERT_EQ(m.Flush(), ref.Flush()) << log;
    stopped += m.stopped();
  }
  EXPECT_GT(stopped, 2000) << "the trials exercise stops";
}

// A long stop whose every prefix nearly matches (a^255 b against a stream of a's): each
// piece costs O(stops) a byte, and the text released is the plain rules'.
TEST(StopMatcherTest, ARepetitiveLongStopHoldsBackOnlyItsPossibleStart) {
  const std::string stop = std::string(255, 'a') + "b";
  StopMatcher m({stop});
  EXPECT_EQ(m.Append("x" + std::string(300, 'a')), "x" + std::string(45, 'a'));
  EXPECT_EQ(m.Append("a"), "a");  // still 255 a's held
  EXPECT_EQ(m.Append("b"), "");
  EXPECT_TRUE(m.stopped());
}

}  // namespace
}  // namespace llmint8::coordinator
