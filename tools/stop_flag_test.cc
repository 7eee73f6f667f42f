#include "tools/stop_flag.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace llmint8::tools {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::vector<std::string> Parse(absl::string_view text) {
  StopSequences stops;
  std::string error;
  EXPECT_TRUE(AbslParseFlag(text, &stops, &error)) << text << ": " << error;
  return stops.values;
}

std::string ParseError(absl::string_view text) {
  StopSequences stops;
  std::string error;
  EXPECT_FALSE(AbslParseFlag(text, &stops, &error)) << text;
  return error;
}

TEST(StopFlagTest, CommasSeparateAndEscapesAreRead) {
  EXPECT_THAT(Parse(""), ElementsAre());
  EXPECT_THAT(Parse("END"), ElementsAre("END"));
  EXPECT_THAT(Parse("a,bc"), ElementsAre("a", "bc"));
  EXPECT_THAT(Parse(R"(\n\n,\, and)"), ElementsAre("\n\n", ", and"));
  EXPECT_THAT(Parse(R"(a\\,b)"), ElementsAre("a\\", "b"));  // an escaped backslash, then a comma
  EXPECT_THAT(Parse(R"(\t\x41\101)"), ElementsAre("\tAA"));
  EXPECT_THAT(Parse("\n"), ElementsAre("\n"));  // a real newline ($'\n') stays one
  EXPECT_THAT(Parse("caf\xc3\xa9"), ElementsAre("caf\xc3\xa9"));
}

TEST(StopFlagTest, EmptySequencesAndUnknownEscapesAreRefused) {
  for (const char* text : {",", "a,,b", ",a", "a,"}) {
    EXPECT_THAT(ParseError(text), HasSubstr("is empty; separate stop sequences with single commas"))
        << text;
  }
  EXPECT_THAT(ParseError(R"(a,\q)"), HasSubstr("stop sequence 2 (\\q): "));
  EXPECT_THAT(ParseError(R"(a,\q)"), HasSubstr("write a backslash as \\\\ and a comma as \\,"));
}

TEST(StopFlagTest, UnparseReadsBack) {
  for (const std::vector<std::string>& values :
       {std::vector<std::string>{}, {"a"}, {"\n\n", ", and", "x\\", "\t\"'"}, {"caf\xc3\xa9"}}) {
    const std::string text = AbslUnparseFlag(StopSequences{values});
    EXPECT_EQ(Parse(text), values) << text;
  }
}

}  // namespace
}  // namespace llmint8::tools
