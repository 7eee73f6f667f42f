// Prompt lookup's drafts: the longest recurring suffix wins, its most recent occurrence's
// continuation is proposed, loops go on periodically, and nothing is proposed without a match.
#include "coordinator/prompt_lookup.h"

#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace llmint8::coordinator {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

std::vector<int32_t> Propose(const std::vector<int32_t>& tokens, PromptLookup lookup, int32_t k) {
  std::vector<int32_t> draft = {99};  // replaced
  ProposeByPromptLookup(tokens, lookup, k, draft);
  return draft;
}

TEST(PromptLookupTest, ProposesWhatFollowedTheMostRecentOccurrence) {
  // "7 8" occurs at 0 (then 1) and at 4 (then 2 3): the most recent one's continuation.
  EXPECT_THAT(Propose({7, 8, 1, 5, 7, 8, 2, 3, 9, 7, 8}, {.min_n = 2, .max_n = 4}, 3),
              ElementsAre(2, 3, 9));
  // k limits the draft.
  EXPECT_THAT(Propose({7, 8, 1, 5, 7, 8, 2, 3, 9, 7, 8}, {.min_n = 2, .max_n = 4}, 1),
              ElementsAre(2));
}

TEST(PromptLookupTest, TheLongestRecurringSuffixWins) {
  // Suffix "6 7 8" occurs at 0 (then 1 2); "7 8" alone more recently at 5 (then 4 4).
  const std::vector<int32_t> tokens = {6, 7, 8, 1, 2, 7, 8, 4, 4, 6, 7, 8};
  EXPECT_THAT(Propose(tokens, {.min_n = 2, .max_n = 3}, 2), ElementsAre(1, 2));
  EXPECT_THAT(Propose(tokens, {.min_n = 2, .max_n = 2}, 2), ElementsAre(4, 4));
}

TEST(PromptLookupTest, ALoopGoesOnPeriodically) {
  // Period 3 "1 2 3": the draft runs past the end of what is known.
  EXPECT_THAT(Propose({5, 1, 2, 3, 1, 2, 3, 1, 2}, {.min_n = 2, .max_n = 4}, 7),
              ElementsAre(3, 1, 2, 3, 1, 2, 3));
  // One token repeated.
  EXPECT_THAT(Propose({4, 4, 4}, {.min_n = 1, .max_n = 2}, 3), ElementsAre(4, 4, 4));
}

TEST(PromptLookupTest, NothingRecursNothingIsProposed) {
  EXPECT_THAT(Propose({1, 2, 3, 4, 5}, {.min_n = 1, .max_n = 4}, 4), IsEmpty());
  // The suffix of min_n recurs only as a shorter one: min_n 2, "3 4" never occurred before.
  EXPECT_THAT(Propose({4, 1, 3, 4}, {.min_n = 2, .max_n = 3}, 4), IsEmpty());
  EXPECT_THAT(Propose({4, 1, 3, 4}, {.min_n = 1, .max_n = 3}, 2), ElementsAre(1, 3));
  EXPECT_THAT(Propose({}, {.min_n = 1, .max_n = 3}, 4), IsEmpty());
  EXPECT_THAT(Propose({4}, {.min_n = 1, .max_n = 3}, 4), IsEmpty());
  EXPECT_THAT(Propose({4, 4}, {.min_n = 1, .max_n = 3}, 0), IsEmpty());
}

}  // namespace
}  // namespace llmint8::coordinator
