#include "coordinator/json_string_pattern.h"

#include <memory>
#include <string>

#include "coordinator/guided_regex.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace llmint8::coordinator {
namespace {

using ::testing::HasSubstr;

// Whether `json_text` (a JSON string's text between its quotes) is a whole match of the
// JSON string pattern of `pattern`.
bool Takes(const std::string& pattern, std::string_view json_text) {
  absl::StatusOr<std::string> written = JsonStringPattern(pattern);
  EXPECT_TRUE(written.ok()) << pattern << ": " << written.status();
  if (!written.ok()) return false;
  auto re = CompiledRegex::Compile(*written);
  EXPECT_TRUE(re.ok()) << *written << ": " << re.status();
  if (!re.ok()) return false;
  std::unique_ptr<OutputConstraint> c = (*re)->NewConstraint(*re);
  return c->Advance(json_text) && c->CanEnd();
}

TEST(JsonStringPatternTest, EachCharacterInTheFormJsonWritesIt) {
  EXPECT_TRUE(Takes("a.b", "axb"));
  EXPECT_TRUE(Takes("a.b", R"(a\"b)"));
  EXPECT_TRUE(Takes("a.b", R"(a\\b)"));
  EXPECT_TRUE(Takes("a.b", R"(a\tb)"));
  EXPECT_TRUE(Takes("a.b", R"(a\u001Fb)"));
  EXPECT_TRUE(Takes("a.b", R"(a\u001fb)"));
  EXPECT_TRUE(Takes("a.b",
                    "a\xc3\xa9"
                    "b"));
  EXPECT_FALSE(Takes("a.b", "a\"b")) << "a bare quote ends the string";
  EXPECT_FALSE(Takes("a.b", R"(a\nb)")) << "'.' takes no line break";
  EXPECT_FALSE(Takes("a.b", R"(a\u000ab)"));
  EXPECT_FALSE(Takes("a.b", R"(a\/b)")) << "the optional escapes are not taken";
  EXPECT_FALSE(Takes("a.b", "a\tb")) << "a raw control character is not JSON";
  EXPECT_TRUE(Takes(R"(\\)", R"(\\)"));
  EXPECT_TRUE(Takes(R"(x"y)", R"(x\"y)"));
  EXPECT_TRUE(Takes(R"([\n\r]{2})", R"(\n\u000D)"));
}

TEST(JsonStringPatternTest, StructureIsKept) {
  EXPECT_TRUE(Takes("(ab|c){2,3}d?", "abcab"));
  EXPECT_TRUE(Takes("(ab|c){2,3}d?", "ccd"));
  EXPECT_FALSE(Takes("(ab|c){2,3}d?", "c"));
  EXPECT_FALSE(Takes("(ab|c){2,3}d?", "abababab"));
  EXPECT_TRUE(Takes("^x*$", ""));
  EXPECT_TRUE(Takes("[^,]+", "a;\xe2\x82\xac\\\""));
  EXPECT_FALSE(Takes("[^,]+", "a,b"));
}

// \D \W \S are the other ASCII characters: no multi-byte one (Unicode's digits, letters and
// spaces are among them for a validator's \d \w \s).
TEST(JsonStringPatternTest, UpperCaseClassesAreAsciiOnly) {
  EXPECT_TRUE(Takes(R"(\S)", "x"));
  EXPECT_TRUE(Takes(R"(\S)", R"(\")"));
  EXPECT_FALSE(Takes(R"(\S)", " "));
  EXPECT_FALSE(Takes(R"(\S)", "\xc2\xa0"));  // U+00A0, a space to Python's re
  EXPECT_FALSE(Takes(R"(\D)", "\xd9\xa3"));  // U+0663, a digit to Python's re
  EXPECT_FALSE(Takes(R"(\W)", "\xc3\xa9"));  // a letter to Python's re
  EXPECT_TRUE(Takes(R"(\W)", "-"));
  // 0x1C-0x1F are spaces to Python's re: not \S.
  EXPECT_FALSE(Takes(R"(\S)", R"(\u001c)"));
  EXPECT_FALSE(Takes(R"(\S)", R"(\u001F)"));
  EXPECT_TRUE(Takes(R"(\S)", R"(\u001b)"));
  EXPECT_TRUE(Takes(R"(\D)", R"(\u001c)")) << "only \\S leaves them out";
}

TEST(JsonStringPatternTest, WhatCompileRefusesIsRefused) {
  EXPECT_THAT(JsonStringPattern("(a").status().message(), HasSubstr("unclosed"));
  EXPECT_THAT(JsonStringPattern(R"((a)\1)").status().message(), HasSubstr("backreferences"));
}

// A negated class around \S (the ASCII non-spaces here) takes every multi-byte character:
// json_schema refuses such patterns (\d \w \s \D \W \S beside [^...]).
TEST(JsonStringPatternTest, ANegatedClassAroundAnUpperCaseClassTakesEveryMultiByteCharacter) {
  EXPECT_TRUE(Takes(R"([^\S])", "\xc3\xa9"));
  EXPECT_TRUE(Takes(R"([^\S])", " "));
  EXPECT_FALSE(Takes(R"([^\S])", "x"));
}

}  // namespace
}  // namespace llmint8::coordinator
