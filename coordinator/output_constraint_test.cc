#include "coordinator/output_constraint.h"

#include <cstdlib>
#include <random>
#include <regex>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "coordinator/tokenizer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace llmint8::coordinator {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

// Feeds `text` a byte at a time; the bytes taken before the first refused one.
size_t Taken(OutputConstraint& c, std::string_view text) {
  for (size_t i = 0; i < text.size(); ++i) {
    if (!c.Advance(text.substr(i, 1))) return i;
  }
  return text.size();
}

// Whether `text` is a whole sentence of a fresh JsonObject().
bool JsonObjectTakes(std::string_view text) {
  std::unique_ptr<OutputConstraint> c = OutputConstraint::JsonObject();
  return Taken(*c, text) == text.size() && c->CanEnd();
}

TEST(TokenSetTest, TheShorterListIsKeptAndTheMembersComeBack) {
  const TokenSet few = TokenSet::Of({1, 4}, 6);
  EXPECT_TRUE(few.allow);
  EXPECT_THAT(few.ids, ::testing::ElementsAre(1, 4));
  EXPECT_THAT(few.Members(6), ::testing::ElementsAre(1, 4));
  const TokenSet half = TokenSet::Of({0, 2, 5}, 6);
  EXPECT_TRUE(half.allow) << "ties go to the members";
  const TokenSet most = TokenSet::Of({0, 1, 2, 4, 5}, 6);
  EXPECT_FALSE(most.allow);
  EXPECT_THAT(most.ids, ::testing::ElementsAre(3));
  EXPECT_THAT(most.Members(6), ::testing::ElementsAre(0, 1, 2, 4, 5));
  const TokenSet all = TokenSet::Of({0, 1, 2}, 3);
  EXPECT_FALSE(all.allow);
  EXPECT_TRUE(all.ids.empty());
  EXPECT_THAT(all.Members(3), ::testing::ElementsAre(0, 1, 2));
  EXPECT_TRUE(TokenSet::Of({}, 3).Members(3).empty());
}

TEST(OutputConstraintTest, JsonObjectTakesObjectsByteByByte) {
  for (const char* doc : {
           R"({})",
           R"({ "a": 1})",
           R"({"a": [1, -2.5e+3, 0, 0.25, 1E9, true, false, null, "x", {}, []]})",
           R"({"nested": {"k": [[["deep"]]]}, "esc": "q\"\\\/\b\f\n\r\t\u00e9"})",
           R"({"pair": "\ud83d\ude00", "upper": "\uD83D\uDE00"})",
           "{\"utf8\": \"caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80\"}",
           "{\n  \"pretty\": [\n    1,\n    2\n  ]\n}",
       }) {
    EXPECT_TRUE(JsonObjectTakes(doc)) << doc;
    EXPECT_TRUE(nlohmann::json::accept(doc)) << doc;
  }
}

TEST(OutputConstraintTest, JsonObjectRefusesTheFirstByteThatNoObjectCanFollow) {
  struct Case {
    const char* text;
    size_t taken;  // bytes taken before the refusal
  };
  const Case cases[] = {
      {"[1]", 0},                // not an object
      {"\"x\"", 0},              // not an object
      {"{\"a\" 1}", 5},          // a colon must follow a key
      {"{1: 2}", 1},             // keys are strings
      {"{\"a\": 01}", 7},        // no leading zeros
      {"{\"a\": 1.}", 8},        // a digit after the point
      {"{\"a\": -}", 7},         // a digit after the minus
      {"{\"a\": tru}", 9},       // a literal ends whole
      {"{\"a\": nul1}", 9},      // a literal is spelt out
      {"{\"a\": [1,]}", 9},      // no value after the comma
      {"{\"a\": 1]", 7},         // the bracket closes nothing open
      {"{\"a\": \"\x01\"}", 7},  // control characters are escaped
      {"{\"a\": \"\\x\"}", 8},   // no such escape
      {"{\"a\": \"\\u12G4\"}", 11},
      {"{\"a\": \"\xC3(\"}", 8},             // a continuation byte must follow the lead
      {"{\"a\": \"\xC0\x80\"}", 7},          // overlong
      {"{\"a\": \"\xED\xA0\x80\"}", 8},      // a surrogate
      {"{\"a\": \"\xF4\x90\x80\x80\"}", 8},  // past U+10FFFF
      {"{\"a\": \"\\ud800\"}", 13},          // a high surrogate without its low half
      {"{\"a\": \"\\udc00x\"}", 12},         // a low surrogate alone
      {"{\"a\": \"\\ud800\\u0041\"}", 18},   // a high surrogate, then no low one
      {"{} ", 2},                            // nothing follows the object, whitespace neither
      {"{}{}", 2},
  };
  for (const Case& c : cases) {
    std::unique_ptr<OutputConstraint> json = OutputConstraint::JsonObject();
    EXPECT_EQ(Taken(*json, c.text), c.taken) << c.text;
    EXPECT_FALSE(nlohmann::json::accept(c.text) && std::string_view(c.text).starts_with('{') &&
                 !std::string_view(c.text).ends_with(' '))
        << c.text;
  }
}

TEST(OutputConstraintTest, JsonObjectNumbersAreFiniteDoubles) {
  for (std::string_view ok : {R"({"a":1e99})", R"({"a":-2.5E-07})", R"({"a":1e+9})"}) {
    EXPECT_TRUE(JsonObjectTakes(ok)) << ok;
  }
  for (std::string_view bad : {R"({"a":1e999})", R"({"a":1e100})", R"({"a":1E-308})"}) {
    EXPECT_FALSE(JsonObjectTakes(bad)) << bad;
  }
  // At most kMaxJsonIntegerDigits integer digits: 10^400 is no double either.
  const std::string most(kMaxJsonIntegerDigits, '9');
  EXPECT_TRUE(JsonObjectTakes(absl::StrCat(R"({"a":-)", most, ".5e99}")));
  EXPECT_FALSE(JsonObjectTakes(absl::StrCat(R"({"a":)", most, "9}")));
  EXPECT_FALSE(JsonObjectTakes(absl::StrCat(R"({"a":1)", std::string(400, '0'), ".0}")));
}

TEST(OutputConstraintTest, JsonObjectEndsAtItsClosingBraceOnly) {
  std::unique_ptr<OutputConstraint> c = OutputConstraint::JsonObject();
  ASSERT_TRUE(c->Advance("{\"a\": [1"));
  EXPECT_FALSE(c->CanEnd());
  EXPECT_FALSE(c->MustEnd());
  EXPECT_FALSE(c->Advance("]}x")) << "refused whole: nothing after the object";
  ASSERT_TRUE(c->Advance("]"));
  EXPECT_FALSE(c->CanEnd());
  ASSERT_TRUE(c->Advance("}"));
  EXPECT_TRUE(c->CanEnd());
  EXPECT_TRUE(c->MustEnd());
}

TEST(OutputConstraintTest, JsonObjectLimitsDepthAndWhitespace) {
  std::string deep = "{\"a\": ";
  for (int i = 1; i < kMaxJsonDepth; ++i) deep += "[";
  std::unique_ptr<OutputConstraint> c = OutputConstraint::JsonObject();
  ASSERT_EQ(Taken(*c, deep), deep.size());
  EXPECT_FALSE(c->Advance("[")) << "a container past the depth limit";
  EXPECT_FALSE(c->Advance("{"));
  EXPECT_TRUE(c->Advance("1"));

  std::unique_ptr<OutputConstraint> padded = OutputConstraint::JsonObject();
  EXPECT_FALSE(padded->Advance(" ")) << "the object comes first";
  EXPECT_TRUE(padded->Advance("{"));
  EXPECT_TRUE(padded->Advance(std::string(kMaxJsonWhitespaceRun, '\n')));
  EXPECT_FALSE(padded->Advance(" "));
  EXPECT_TRUE(padded->Advance("\"  spaces in a string are text  \""));
}

// Short strings over JSON's alphabet: a whole object by the constraint exactly when
// nlohmann's parser accepts it as a document that starts with '{' and has no whitespace after.
TEST(OutputConstraintTest, JsonObjectAgreesWithAJsonParserOnRandomStrings) {
  const std::string alphabet =
      "{}[]\",:01-.eEtrufalsn \\u\xC3\xA9"
      "dD8c";
  std::mt19937 rng(7);
  int objects = 0;
  for (int trial = 0; trial < 200000; ++trial) {
    std::string s = "{";
    const int length = static_cast<int>(rng() % 10);
    for (int i = 0; i < length; ++i) s += alphabet[rng() % alphabet.size()];
    // Exponents of more than 2 digits are refused (output_constraint.h).
    static const std::regex kLongExponent("[eE][+-]?[0-9]{3}");
    const bool reference =
        nlohmann::json::accept(s) && !s.ends_with(' ') && !std::regex_search(s, kLongExponent);
    ASSERT_EQ(JsonObjectTakes(s), reference) << s;
    objects += reference;
  }
  EXPECT_GT(objects, 100) << "the strings should hit whole objects often enough to matter";
}

TEST(OutputConstraintTest, ChoiceAllowsTheTokensThatBeginAChoice) {
  const TokenVocabulary vocab({"", "y", "yes", "ye", "n", "no", "not", "s", " yes", "es", "o"});
  auto made = OutputConstraint::Choice({"yes", "no", "not sure"});
  ASSERT_TRUE(made.ok()) << made.status();
  OutputConstraint& c = **made;
  std::vector<int32_t> ids;
  ASSERT_TRUE(c.AllowedTokens(vocab, ids).ok());
  EXPECT_THAT(ids, ElementsAre(1, 2, 3, 4, 5, 6));
  ASSERT_TRUE(c.Advance("n"));
  ASSERT_TRUE(c.AllowedTokens(vocab, ids).ok());
  EXPECT_THAT(ids, ElementsAre(10)) << "only \"o\" continues \"n\"";
  ASSERT_TRUE(c.Advance("o"));
  EXPECT_TRUE(c.CanEnd()) << "\"no\" is a choice";
  EXPECT_FALSE(c.MustEnd()) << "\"not sure\" goes on";
  ASSERT_TRUE(c.AllowedTokens(vocab, ids).ok());
  EXPECT_THAT(ids, IsEmpty()) << "no token is \"t\"";
  EXPECT_FALSE(c.Advance("x"));
  ASSERT_TRUE(c.Advance("t sure"));
  EXPECT_TRUE(c.MustEnd());
}

TEST(OutputConstraintTest, ChoicesOutsideTheLimitsAreRefused) {
  EXPECT_THAT(OutputConstraint::Choice({}).status().message(), HasSubstr("give 1 to"));
  EXPECT_THAT(OutputConstraint::Choice({"a", ""}).status().message(),
              HasSubstr("guided_choice 1 is 0 bytes"));
  EXPECT_FALSE(OutputConstraint::Choice(std::vector<std::string>(kMaxGuidedChoices + 1, "a")).ok());
  EXPECT_FALSE(OutputConstraint::Choice({std::string(kMaxGuidedChoiceBytes + 1, 'a')}).ok());
  EXPECT_TRUE(OutputConstraint::Choice(std::vector<std::string>(kMaxGuidedChoices, "a")).ok());
  EXPECT_THAT(
      OutputConstraint::Choice(std::vector<std::string>(kMaxGuidedChoices, std::string(65, 'a')))
          .status()
          .message(),
      HasSubstr("in all"));
}

// The bundled model's tokenizer (models/opt-sotu-cpu).
absl::StatusOr<std::unique_ptr<Tokenizer>> BundledTokenizer() {
  const char* src = std::getenv("LLMINT8_SOURCE_DIR");
  return Tokenizer::FromDirectory(std::string(src != nullptr ? src : LLMINT8_DEFAULT_SOURCE_DIR) +
                                  "/models/opt-sotu-cpu");
}

// The real vocabulary: special tokens are never allowed, and a JSON object's first token
// begins with '{'.
TEST(OutputConstraintTest, TheBundledTokenizersVocabulary) {
  auto tok = BundledTokenizer();
  ASSERT_TRUE(tok.ok()) << tok.status();
  const TokenVocabulary vocab = TokenVocabulary::FromTokenizer(**tok);
  ASSERT_EQ(vocab.bytes.size(), static_cast<size_t>((*tok)->vocab_size()));
  EXPECT_TRUE(vocab.bytes[2].empty()) << "</s> is special";
  std::vector<int32_t> ids;
  ASSERT_TRUE(OutputConstraint::JsonObject()->AllowedTokens(vocab, ids).ok());
  ASSERT_FALSE(ids.empty());
  for (int32_t id : ids) {
    const std::string& b = vocab.bytes[static_cast<size_t>(id)];
    EXPECT_EQ(b[0], '{') << b;
  }
  EXPECT_THAT(ids, ::testing::Contains((*tok)->Encode("{", false).value().at(0)));
}

// JSON mode keeps its scans by state for the vocabulary (TokenVocabulary::json_scans): a
// second sequence that reaches a state another scanned gets the same set as a scan of its
// own (a vocabulary of the same bytes built anew keeps nothing yet), in every kind of place.
TEST(OutputConstraintTest, JsonModesKeptScansAreTheScansOwnAnswer) {
  auto tok = BundledTokenizer();
  ASSERT_TRUE(tok.ok()) << tok.status();
  const TokenVocabulary shared = TokenVocabulary::FromTokenizer(**tok);
  const std::string text = R"({  "name": "The Pres\u00e9ident", "n": [1, -2.5e3, true], "x": {}})";
  for (size_t cut = 1; cut < text.size(); cut += 3) {
    const std::string prefix = text.substr(0, cut);
    std::vector<int32_t> first;
    std::vector<int32_t> second;
    std::vector<int32_t> fresh;
    for (auto* out : {&first, &second}) {
      std::unique_ptr<OutputConstraint> c = OutputConstraint::JsonObject();
      ASSERT_TRUE(c->Advance(prefix)) << prefix;
      ASSERT_TRUE(c->AllowedTokens(shared, *out).ok());
    }
    const TokenVocabulary own = TokenVocabulary::FromTokenizer(**tok);
    std::unique_ptr<OutputConstraint> c = OutputConstraint::JsonObject();
    ASSERT_TRUE(c->Advance(prefix));
    ASSERT_TRUE(c->AllowedTokens(own, fresh).ok());
    EXPECT_EQ(first, fresh) << prefix;
    EXPECT_EQ(second, fresh) << prefix;
  }
}

}  // namespace
}  // namespace llmint8::coordinator
