#include "coordinator/guided_regex.h"

#include <random>
#include <regex>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace llmint8::coordinator {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::unique_ptr<OutputConstraint> Constraint(const std::string& pattern) {
  auto re = CompiledRegex::Compile(pattern);
  EXPECT_TRUE(re.ok()) << pattern << ": " << re.status();
  return re.ok() ? (*re)->NewConstraint(*re) : nullptr;
}

// Whether `text`, fed a byte at a time, is a whole match of `re`.
bool WholeMatch(const std::shared_ptr<const CompiledRegex>& re, const std::string& text) {
  std::unique_ptr<OutputConstraint> c = re->NewConstraint(re);
  for (char ch : text) {
    if (!c->Advance(std::string_view(&ch, 1))) return false;
  }
  return c->CanEnd();
}

// Every string of `length` bytes a and b.
std::vector<std::string> WordsOfAB(int length) {
  std::vector<std::string> words = {""};
  for (int len = 0; len < length; ++len) {
    std::vector<std::string> longer;
    for (const std::string& w : words) {
      longer.push_back(w + "a");
      longer.push_back(w + "b");
    }
    words = std::move(longer);
  }
  return words;
}

bool WholeMatch(const std::string& pattern, const std::string& text) {
  std::unique_ptr<OutputConstraint> c = Constraint(pattern);
  for (char ch : text) {
    if (!c->Advance(std::string_view(&ch, 1))) return false;
  }
  return c->CanEnd();
}

// Patterns in the common syntax, against std::regex (ECMAScript) on every string of up to 4
// bytes over an alphabet that exercises them: the constraint takes a string whole exactly when
// the reference matches it whole, and takes every prefix of a match.
TEST(GuidedRegexTest, AgreesWithStdRegexOnEveryShortString) {
  const std::vector<std::string> patterns = {
      "ab|a",
      "a*b+",
      "(ab)*",
      "a?b?c?",
      "[a-c]{2,3}",
      "[^a]b",
      "\\d+(\\.\\d{1,2})?",
      "(a|b)*c",
      "c{2}|a{1,}",
      "[\\w-]+",
      ".a.",
      "(?:a|bc){0,2}",
      "\\(a\\)",
      "[ab\\d]*9",
      "a{0}b",
      "(a*)*b",
      "^ab$",
      "[.]\\.",
      "\\s?a",
      "(?P<n>a)b",
  };
  const std::string alphabet = "abc9.(-) \n";
  std::vector<std::string> strings = {""};
  for (int len = 1; len <= 4; ++len) {
    const size_t before = strings.size();
    for (size_t i = 0; i < before; ++i) {
      if (strings[i].size() != static_cast<size_t>(len - 1)) continue;
      for (char ch : alphabet) strings.push_back(strings[i] + ch);
    }
  }
  for (const std::string& p : patterns) {
    std::string ecma = p;
    if (ecma.starts_with("(?P<n>")) ecma = "(" + ecma.substr(6);
    const std::regex reference(ecma);
    auto re = CompiledRegex::Compile(p);
    ASSERT_TRUE(re.ok()) << p << ": " << re.status();
    int matches = 0;
    for (const std::string& s : strings) {
      const bool expected = std::regex_match(s, reference);
      ASSERT_EQ(WholeMatch(*re, s), expected) << p << " on '" << s << "'";
      if (!expected) continue;
      ++matches;
      std::unique_ptr<OutputConstraint> c = (*re)->NewConstraint(*re);
      for (size_t i = 0; i < s.size(); ++i) {
        ASSERT_TRUE(c->Advance(s.substr(i, 1))) << p << ": a prefix of '" << s << "'";
      }
    }
    EXPECT_GT(matches, 0) << p;
  }
}

TEST(GuidedRegexTest, UnicodeDotAndClasses) {
  EXPECT_TRUE(WholeMatch("caf.", "caf\xC3\xA9"));
  EXPECT_FALSE(WholeMatch("caf.", "caf\xC3")) << "half a character";
  EXPECT_TRUE(WholeMatch("[é€]+", "\xC3\xA9\xE2\x82\xAC"));
  EXPECT_TRUE(WholeMatch("[^a]", "\xF0\x9F\x98\x80"));
  EXPECT_FALSE(WholeMatch("[^a]", "\xC0\x80")) << "overlong UTF-8 is no character";
  EXPECT_TRUE(WholeMatch("\\u00e9\\x41",
                         "\xC3\xA9"
                         "A"));
  EXPECT_FALSE(WholeMatch(".", "\n"));
}

TEST(GuidedRegexTest, EndsWhereNothingCanFollow) {
  std::unique_ptr<OutputConstraint> c = Constraint("(yes|no)!?");
  ASSERT_TRUE(c->Advance("no"));
  EXPECT_TRUE(c->CanEnd());
  EXPECT_FALSE(c->MustEnd()) << "'!' may follow";
  ASSERT_TRUE(c->Advance("!"));
  EXPECT_TRUE(c->MustEnd());
  EXPECT_FALSE(c->Advance("!"));

  const TokenVocabulary vocab({"", "y", "yes", "no", "n", "!", "o!", "x"});
  std::unique_ptr<OutputConstraint> d = Constraint("(yes|no)!?");
  std::vector<int32_t> ids;
  ASSERT_TRUE(d->AllowedTokens(vocab, ids).ok());
  EXPECT_THAT(ids, ElementsAre(1, 2, 3, 4));
  ASSERT_TRUE(d->Advance("n"));
  ASSERT_TRUE(d->AllowedTokens(vocab, ids).ok());
  EXPECT_THAT(ids, ElementsAre(6)) << "'o!' continues 'n'; 'o' alone is not a token here";
}

// A state's scan is kept and given again, to another sequence of the same request too, and
// only for the vocabulary it was scanned against.
TEST(GuidedRegexTest, AStatesKeptScanIsForItsOwnVocabulary) {
  auto re = CompiledRegex::Compile("(ab)+");
  ASSERT_TRUE(re.ok()) << re.status();
  const TokenVocabulary words({"a", "ab", "b", "abab", "ba"});
  const TokenVocabulary letters({"b", "a"});
  std::unique_ptr<OutputConstraint> first = (*re)->NewConstraint(*re);
  std::unique_ptr<OutputConstraint> second = (*re)->NewConstraint(*re);
  std::vector<int32_t> ids;
  ASSERT_TRUE(first->AllowedTokens(words, ids).ok());
  EXPECT_THAT(ids, ElementsAre(0, 1, 3));
  ASSERT_TRUE(second->AllowedTokens(words, ids).ok());
  EXPECT_THAT(ids, ElementsAre(0, 1, 3)) << "the kept scan";
  ASSERT_TRUE(second->AllowedTokens(letters, ids).ok());
  EXPECT_THAT(ids, ElementsAre(1)) << "another vocabulary: scanned anew";
  ASSERT_TRUE(first->Advance("ab"));
  ASSERT_TRUE(first->AllowedTokens(words, ids).ok());
  EXPECT_THAT(ids, ElementsAre(0, 1, 3)) << "back at the start's choices";
  ASSERT_TRUE(first->Advance("a"));
  ASSERT_TRUE(first->AllowedTokens(words, ids).ok());
  EXPECT_THAT(ids, ElementsAre(2, 4));
}

// Sequences of one request walk a pattern whose DFA is exponential, so that the DFA starts
// over many times: at every step each one's allowed ids (kept or scanned) equal those of a
// fresh compile advanced over the same text, for either of two vocabularies.
TEST(GuidedRegexTest, KeptScansStayRightAcrossDfaRestarts) {
  const std::string pattern = "(?:[ab]*a[ab]{13}c)+";
  auto re = CompiledRegex::Compile(pattern);
  ASSERT_TRUE(re.ok()) << re.status();
  // b...bc tokens are allowed where the 'a' lies as many bytes back as they are long: the ids
  // tell the DFA states apart.
  std::vector<std::string> ends = {"a", "b", "c"};
  for (int k = 1; k <= 13; ++k) ends.push_back(std::string(static_cast<size_t>(k), 'b') + "c");
  const TokenVocabulary bytes(ends);
  ends.insert(ends.end(), {"ab", "ba", "bb", "aab", "abc"});
  const TokenVocabulary words(ends);
  std::vector<std::unique_ptr<OutputConstraint>> seqs;
  std::vector<std::string> texts(3);
  for (int i = 0; i < 3; ++i) seqs.push_back((*re)->NewConstraint(*re));
  std::mt19937 rng(7);
  std::vector<int32_t> ids;
  std::vector<int32_t> fresh_ids;
  for (int step = 0; step < 4000; ++step) {
    const size_t s = rng() % seqs.size();
    const TokenVocabulary& vocab = step / 1000 % 2 ? words : bytes;  // kept ids live long
    ASSERT_TRUE(seqs[s]->AllowedTokens(vocab, ids).ok()) << step;
    auto fresh_re = CompiledRegex::Compile(pattern);
    std::unique_ptr<OutputConstraint> fresh = (*fresh_re)->NewConstraint(*fresh_re);
    ASSERT_TRUE(fresh->Advance(texts[s]));
    ASSERT_TRUE(fresh->AllowedTokens(vocab, fresh_ids).ok());
    ASSERT_EQ(ids, fresh_ids) << "step " << step << ", text " << texts[s];
    ASSERT_FALSE(ids.empty());
    // Mostly 'a' or 'b' (ids 0 and 1, always allowed), so that the walk meets new states.
    const int32_t id = rng() % 10 != 0 ? static_cast<int32_t>(rng() % 2) : ids[rng() % ids.size()];
    const std::string& token = vocab.bytes[static_cast<size_t>(id)];
    ASSERT_TRUE(seqs[s]->Advance(token));
    texts[s] += token;
  }
  EXPECT_GE((*re)->dfa_restarts(), 2u) << "the walk should fill the DFA's cache";
}

// Requests that share a CompiledRegex (guide_cache.h) share its DFA and kept scans, and each
// counts only the automaton work it does itself against kMaxGuidedRegexRequestWork: a request
// that has spent its budget fails on a new state and is given a kept one; a fresh request is
// not charged for what the other built.
TEST(GuidedRegexTest, RequestsSharingADfaEachCountTheirOwnWork) {
  auto re = CompiledRegex::Compile("[a-z]+(?:,[0-9]+)*");
  ASSERT_TRUE(re.ok()) << re.status();
  const TokenVocabulary vocab({"ab", ",", "12", ",3", "x", "!"});
  auto first_work = std::make_shared<RegexRequestWork>();
  std::unique_ptr<OutputConstraint> first = (*re)->NewConstraint(*re, first_work);
  std::vector<int32_t> ids;
  ASSERT_TRUE(first->AllowedTokens(vocab, ids).ok());
  EXPECT_THAT(ids, ElementsAre(0, 4));
  ASSERT_TRUE(first->Advance("ab"));
  ASSERT_TRUE(first->AllowedTokens(vocab, ids).ok());
  EXPECT_THAT(ids, ElementsAre(0, 1, 3, 4));
  EXPECT_GT(first_work->steps, 0);

  // A later request over the same states: kept scans and transitions, no work of its own.
  auto second_work = std::make_shared<RegexRequestWork>();
  std::unique_ptr<OutputConstraint> second = (*re)->NewConstraint(*re, second_work);
  ASSERT_TRUE(second->AllowedTokens(vocab, ids).ok());
  EXPECT_THAT(ids, ElementsAre(0, 4));
  ASSERT_TRUE(second->Advance("ab"));
  ASSERT_TRUE(second->AllowedTokens(vocab, ids).ok());
  EXPECT_THAT(ids, ElementsAre(0, 1, 3, 4));
  EXPECT_EQ(second_work->steps, 0);

  // The first request at its budget: kept states still answer, a new one refuses it; the
  // second request, whose budget is untouched, scans that state.
  first_work->steps = kMaxGuidedRegexRequestWork;
  ASSERT_TRUE(first->AllowedTokens(vocab, ids).ok()) << "a kept scan costs no work";
  ASSERT_TRUE(first->Advance(","));
  const absl::Status spent = first->AllowedTokens(vocab, ids);
  EXPECT_EQ(spent.code(), absl::StatusCode::kInvalidArgument) << spent;
  EXPECT_THAT(spent.message(), HasSubstr("simplify"));
  ASSERT_TRUE(second->Advance(","));
  ASSERT_TRUE(second->AllowedTokens(vocab, ids).ok());
  EXPECT_THAT(ids, ElementsAre(2)) << "after a comma: digits";
  EXPECT_GT(second_work->steps, 0);
}

// A request's scan may build as many DFA states as it could alone, whatever another request
// sharing the DFA left in it: one request walks ~2,000 states into the DFA of a pattern with
// an exponential one (not yet full: kept), and another's first scan then builds ~2,300 more
// (every 11-byte word of a and b, and 256 of 12 bytes), past twice the cache's 2,048 states
// in all, and passes.
TEST(GuidedRegexTest, AScansLimitIsItsOwnWhateverOtherRequestsBuilt) {
  auto re = CompiledRegex::Compile("[ab]*a[ab]{14}");
  ASSERT_TRUE(re.ok()) << re.status();
  std::unique_ptr<OutputConstraint> walker = (*re)->NewConstraint(*re);
  std::mt19937 rng(3);
  while ((*re)->dfa_states() < 2000) ASSERT_TRUE(walker->Advance(rng() % 2 ? "a" : "b"));
  const size_t walked = (*re)->dfa_states();
  std::vector<std::string> words = WordsOfAB(11);
  for (int i = 0; i < 256; ++i) {
    std::string w = "aaaa";
    for (int bit = 7; bit >= 0; --bit) w += (i >> bit) & 1 ? 'a' : 'b';
    words.push_back(w);
  }
  const TokenVocabulary vocab(words);
  std::unique_ptr<OutputConstraint> scanner = (*re)->NewConstraint(*re);
  std::vector<int32_t> ids;
  const absl::Status scanned = scanner->AllowedTokens(vocab, ids);
  ASSERT_TRUE(scanned.ok()) << scanned;
  EXPECT_EQ(ids.size(), words.size());
  EXPECT_GT((*re)->dfa_states(), 2u * kMaxGuidedRegexDfaStates)
      << "the walk left " << walked << " states: the scan should need the room past them";
  EXPECT_EQ((*re)->dfa_restarts(), 0u);
}

// A pattern whose DFA is exponential (the 13th byte from the end is an 'a') over a vocabulary
// of every 13-byte string of a and b: the scan gives up (INVALID_ARGUMENT) instead of
// holding the scheduler's thread; a pattern with a small DFA over the same vocabulary does not.
TEST(GuidedRegexTest, AScanThatBuildsTooManyStatesGivesUp) {
  const std::vector<std::string> words = WordsOfAB(13);
  const TokenVocabulary vocab(words);
  std::vector<int32_t> ids;
  const absl::Status blown = Constraint("[ab]*a[ab]{12}")->AllowedTokens(vocab, ids);
  EXPECT_EQ(blown.code(), absl::StatusCode::kInvalidArgument) << blown;
  EXPECT_THAT(blown.message(), HasSubstr("simplify"));
  ASSERT_TRUE(Constraint("[ab]*a[ab]{3}")->AllowedTokens(vocab, ids).ok());
  EXPECT_EQ(ids.size(), words.size()) << "every word may begin a match";
}

// Patterns that once took seconds a token, and ones the old state count refused.
TEST(GuidedRegexTest, LongOptionalRunsAndDotsCompileAndScan) {
  const TokenVocabulary vocab({"a", "ab", " x", "abc", "\xC3\xA9t\xC3\xA9", ",", "zz"});
  for (const char* p :
       {"(?:[ -~]?){200}", "(?:\\w?){200}", ".{0,100}", "[^,]{1,128}", "\\S{1,100}"}) {
    std::unique_ptr<OutputConstraint> c = Constraint(p);
    ASSERT_NE(c, nullptr) << p;
    std::vector<int32_t> ids;
    ASSERT_TRUE(c->AllowedTokens(vocab, ids).ok()) << p;
    EXPECT_FALSE(ids.empty()) << p;
  }
}

TEST(GuidedRegexTest, MatchLengthsAreTheFewestAndTheMostBytes) {
  auto lengths = [](const char* pattern) {
    auto re = CompiledRegex::Compile(pattern);
    EXPECT_TRUE(re.ok()) << pattern << ": " << re.status();
    return re.ok() ? (*re)->MatchLengths() : std::pair<int64_t, int64_t>{-2, -2};
  };
  EXPECT_EQ(lengths("abc"), (std::pair<int64_t, int64_t>{3, 3}));
  EXPECT_EQ(lengths("a{2,5}(bc|d)?"), (std::pair<int64_t, int64_t>{2, 7}));
  EXPECT_EQ(lengths("x|\\u00e9{3}"), (std::pair<int64_t, int64_t>{1, 6}))
      << "bytes, not characters";
  EXPECT_EQ(lengths("ab*c"), (std::pair<int64_t, int64_t>{2, -1}));
  EXPECT_EQ(lengths("(a|bc)+"), (std::pair<int64_t, int64_t>{1, -1}));
  EXPECT_EQ(lengths("(?:a?)*b"), (std::pair<int64_t, int64_t>{1, -1}));
}

TEST(GuidedRegexTest, WhatIsNotServedIsRefusedNamingIt) {
  struct Case {
    const char* pattern;
    const char* says;
  };
  const Case cases[] = {
      {"(a)\\1", "\\1"},
      {"a(?=b)", "lookaround"},
      {"\\bword", "\\b"},
      {"(?i)a", "(?"},
      {"[é-ü]", "non-ASCII"},
      {"a{300}", "over 256"},
      {"a{3,2}", "n < m"},
      {"(a", "unclosed"},
      {"a)", "unbalanced"},
      {"[a", "unclosed"},
      {"*a", "nothing before"},
      {"a^b", "anchor"},
      {"[^\\d\\D]", "matches no string"},
      {"(a{1,256}){1,256}", "automaton states"},
      {"a**", "quantifier on a quantifier"},
      {"a{2}{3}", "quantifier on a quantifier"},
      {"a{,3}", "{0,n}"},
      {"a{1234567}", "over 256"},
      {"\xFF", "UTF-8"},
  };
  for (const Case& c : cases) {
    auto re = CompiledRegex::Compile(c.pattern);
    ASSERT_FALSE(re.ok()) << c.pattern;
    EXPECT_EQ(re.status().code(), absl::StatusCode::kInvalidArgument) << c.pattern;
    EXPECT_THAT(re.status().message(), HasSubstr(c.says)) << c.pattern << ": " << re.status();
  }
  EXPECT_FALSE(CompiledRegex::Compile(std::string(kMaxGuidedRegexBytes + 1, 'a')).ok());
  EXPECT_TRUE(CompiledRegex::Compile("a{1,256}").ok());
  EXPECT_TRUE(CompiledRegex::Compile("a{").ok()) << "a '{' that is no count is a literal";
  EXPECT_TRUE(WholeMatch("a{", "a{"));
}

}  // namespace
}  // namespace llmint8::coordinator
