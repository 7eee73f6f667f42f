#include "coordinator/json_schema.h"

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "coordinator/tokenizer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace llmint8::coordinator {
namespace {

using ::testing::HasSubstr;

std::shared_ptr<const CompiledRegex> Compile(std::string_view schema) {
  absl::StatusOr<std::shared_ptr<const CompiledRegex>> re = CompileJsonSchema(schema);
  EXPECT_TRUE(re.ok()) << re.status() << "\nschema: " << schema.substr(0, 200);
  return re.ok() ? *re : nullptr;
}

// Whether `text` is a whole output the schema allows.
bool Matches(const std::shared_ptr<const CompiledRegex>& re, std::string_view text) {
  std::unique_ptr<OutputConstraint> c = re->NewConstraint(re);
  return c->Advance(text) && c->CanEnd();
}

std::string Error(std::string_view schema) {
  absl::StatusOr<std::shared_ptr<const CompiledRegex>> re = CompileJsonSchema(schema);
  EXPECT_FALSE(re.ok()) << schema.substr(0, 200);
  EXPECT_EQ(re.status().code(), absl::StatusCode::kInvalidArgument) << re.status();
  return std::string(re.status().message());
}

TEST(JsonSchemaTest, ScalarsAreTheirJsonForms) {
  auto s = Compile(R"({"type": "string"})");
  for (std::string_view ok : {R"("")", R"("a b")", R"("\"\\\/\b\f\n\r\t")", R"("\u00e9")",
                              "\"\xc3\xa9\"", "\"\xf0\x9f\x98\x80\""}) {
    EXPECT_TRUE(Matches(s, ok)) << ok;
  }
  // Surrogate escapes are refused, even in pairs: the character is written as UTF-8.
  for (std::string_view bad :
       {"", "a", R"("a)", R"("a"")", "\"\n\"", R"("\x")", R"("\ud83d")", R"("\ude00")",
        R"("\ud83d\ude00")", R"( "a")", R"("a" )", "\"\xc3\""}) {
    EXPECT_FALSE(Matches(s, bad)) << bad;
  }
  auto n = Compile(R"({"type": "number"})");
  for (std::string_view ok :
       {"0", "-0", "12", "-3.25", "1e5", "2.5E-10", "1234567890123456", "9.5e99", "1e-99"}) {
    EXPECT_TRUE(Matches(n, ok)) << ok;
  }
  // Exponents of two digits at most: 1e999 is no double (inf to a reader).
  for (std::string_view bad :
       {"01", "+1", "1.", ".5", "1e", "--1", "NaN", "12345678901234567", "1e999", "1e100"}) {
    EXPECT_FALSE(Matches(n, bad)) << bad;
  }
  auto i = Compile(R"({"type": "integer"})");
  EXPECT_TRUE(Matches(i, "-42"));
  EXPECT_FALSE(Matches(i, "4.0"));
  auto b = Compile(R"({"type": ["boolean", "null"]})");
  for (std::string_view ok : {"true", "false", "null"}) EXPECT_TRUE(Matches(b, ok)) << ok;
  EXPECT_FALSE(Matches(b, "True"));
}

// Bounded numbers: decimals of at most 9 + 6 digits, no exponent, compared exactly with the
// bounds (inclusive or exclusive, on either side of 0).
TEST(JsonSchemaTest, NumberBoundsAreExactOnDecimals) {
  auto unit = Compile(R"({"type": "number", "minimum": 0, "maximum": 1})");
  for (std::string_view ok : {"0", "1", "0.5", "1.0", "1.000000", "0.000001", "0.25", "0.0"}) {
    EXPECT_TRUE(Matches(unit, ok)) << ok;
  }
  for (std::string_view bad :
       {"1.000001", "1.1", "-0.1", "2", "1e0", "0.0000001", "01", ".5", "1.", "-0"}) {
    EXPECT_FALSE(Matches(unit, bad)) << bad;
  }
  auto above = Compile(R"({"type": "number", "exclusiveMinimum": 0.5, "maximum": 100})");
  for (std::string_view ok : {"0.500001", "0.6", "0.51", "1", "99.999999", "100", "100.00"}) {
    EXPECT_TRUE(Matches(above, ok)) << ok;
  }
  for (std::string_view bad : {"0.5", "0.50", "0.5000", "0.499999", "100.000001", "101"}) {
    EXPECT_FALSE(Matches(above, bad)) << bad;
  }
  auto negative = Compile(R"({"type": "number", "minimum": -2.5, "exclusiveMaximum": -0.5})");
  for (std::string_view ok : {"-2.5", "-2.50", "-1", "-0.500001", "-0.75", "-2.499"}) {
    EXPECT_TRUE(Matches(negative, ok)) << ok;
  }
  for (std::string_view bad : {"-0.5", "-2.500001", "-3", "0", "-0", "0.6"}) {
    EXPECT_FALSE(Matches(negative, bad)) << bad;
  }
  auto across = Compile(R"({"type": "number", "minimum": -1.25, "maximum": 3e2})");
  for (std::string_view ok : {"-1.25", "-1", "-0.000001", "0", "299.5", "300"}) {
    EXPECT_TRUE(Matches(across, ok)) << ok;
  }
  for (std::string_view bad : {"-1.250001", "-2", "300.000001", "1000"}) {
    EXPECT_FALSE(Matches(across, bad)) << bad;
  }
  auto open_above = Compile(R"({"type": "number", "exclusiveMinimum": 0})");
  for (std::string_view ok : {"0.000001", "1", "999999999.999999"}) {
    EXPECT_TRUE(Matches(open_above, ok)) << ok;
  }
  for (std::string_view bad : {"0", "0.0", "-1", "1000000000", "1e3"}) {
    EXPECT_FALSE(Matches(open_above, bad)) << bad;
  }
  // minimum 0 alone keeps every JSON form of a number >= 0 (exponents of 2 digits).
  auto non_negative = Compile(R"({"type": "number", "minimum": 0})");
  EXPECT_TRUE(Matches(non_negative, "1e99"));
  EXPECT_FALSE(Matches(non_negative, "-1e99"));
}

TEST(JsonSchemaTest, StringLengthsCountCharactersNotBytes) {
  auto s = Compile(R"({"type": "string", "minLength": 2, "maxLength": 3})");
  EXPECT_FALSE(Matches(s, R"("a")"));
  EXPECT_TRUE(Matches(s, R"("ab")"));
  EXPECT_TRUE(Matches(s, "\"\xc3\xa9\xc3\xa9\xc3\xa9\""));    // three two-byte characters
  EXPECT_TRUE(Matches(s, "\"\\n\\u00e9\xf0\x9f\x98\x80\""));  // escapes and a 4-byte one
  EXPECT_FALSE(Matches(s, R"("abcd")"));
}

// pattern is a search (anchored by ^ and $).
TEST(JsonSchemaTest, PatternsAreSearches) {
  auto code = Compile(R"({"type": "string", "pattern": "^[A-Z]{3}-\\d{4}$"})");
  EXPECT_TRUE(Matches(code, R"("ABC-1234")"));
  EXPECT_FALSE(Matches(code, R"("ABC-12345")"));
  EXPECT_FALSE(Matches(code, R"("xABC-1234")"));
  auto digits = Compile(R"({"pattern": "[0-9]{3}"})");  // a string by its keyword
  EXPECT_TRUE(Matches(digits, R"("ab123cd")"));
  EXPECT_TRUE(Matches(digits, R"("\n123\"")")) << "escapes around the match";
  EXPECT_FALSE(Matches(digits, R"("ab12")"));
  auto start = Compile(R"({"type": "string", "pattern": "^ab|cd"})");
  EXPECT_TRUE(Matches(start, R"("abzz")"));
  EXPECT_TRUE(Matches(start, R"("cdzz")"));
  EXPECT_FALSE(Matches(start, R"("zab")"));
  auto end = Compile(R"({"type": "string", "pattern": "x\\$"})");  // an escaped '$' is a '$'
  EXPECT_TRUE(Matches(end, R"("ax$b")"));
  auto empty = Compile(R"({"type": "string", "pattern": "^$"})");
  EXPECT_TRUE(Matches(empty, R"("")"));
  EXPECT_FALSE(Matches(empty, R"("a")"));
  EXPECT_THAT(Error(R"({"pattern": "(a"})"), HasSubstr("pattern: guided_regex: an unclosed"));
  // \d inside [^...] would take U+0663, which Python's \d (Unicode's digits) leaves out.
  EXPECT_THAT(Error(R"({"pattern": "^[^\\d\"\\\\\\x00-\\x1f]$"})"), HasSubstr("negated class"));
  // Beside lengths: an anchored ASCII pattern whose matches are within them.
  auto zip = Compile(R"({"type": "string", "pattern": "^[0-9]{5}(-[0-9]{4})?$",
                         "minLength": 5, "maxLength": 1000})");
  EXPECT_TRUE(Matches(zip, R"("12345")"));
  EXPECT_TRUE(Matches(zip, R"("12345-6789")"));
  EXPECT_FALSE(Matches(zip, R"("1234")"));
  EXPECT_THAT(Error(R"({"pattern": "a", "maxLength": 3})"), HasSubstr("pattern is a search"));
  EXPECT_THAT(Error(R"({"pattern": "^[a-z]+$", "maxLength": 8})"),
              HasSubstr("here they are 1 to any number of bytes"));
  EXPECT_THAT(Error(R"({"pattern": "^[0-9]{5}(-[0-9]{4})?$", "maxLength": 5})"),
              HasSubstr("5 to 10 bytes"));
  EXPECT_THAT(Error(R"({"pattern": "^.{2}$", "maxLength": 5})"), HasSubstr("beside minLength"))
      << "not ASCII, and needs escapes";
}

// A pattern whose matches may hold characters a JSON string escapes is matched against the
// string's value: '"', '\\' and control characters in their JSON escapes ('"' as \", a line
// break as \n or \u000a), others as themselves; \S \D \W are ASCII's only.
TEST(JsonSchemaTest, PatternsMatchTheValueThroughItsEscapes) {
  auto email = Compile(R"({"type": "string", "pattern": "^\\S+@\\S+\\.\\S+$"})");
  for (std::string_view ok : {R"("a@b.c")", R"("a\"q@b.c")", R"("x\\y@b.co")"}) {
    EXPECT_TRUE(Matches(email, ok)) << ok;
  }
  for (std::string_view bad : {R"("a @b.c")", R"("a@b")", R"("a\n@b.c")", R"("a\u0020@b.c")",
                               "\"\xc3\xa9@b.c\"", R"("a\/b@c.d")"}) {
    EXPECT_FALSE(Matches(email, bad)) << bad << ": \\S takes ASCII here; \\/ is not taken";
  }
  auto any = Compile(R"({"type": "string", "pattern": "^.{2}$"})");
  for (std::string_view ok :
       {R"("ab")", R"("\"\\")", R"("\t\u0001")", "\"\xc3\xa9x\"", R"("\u001Fz")"}) {
    EXPECT_TRUE(Matches(any, ok)) << ok;
  }
  for (std::string_view bad : {R"("a")", R"("abc")", R"("a\n")", R"("a\u000a")", R"("a\")"}) {
    EXPECT_FALSE(Matches(any, bad)) << bad << ": '.' takes no line break";
  }
  auto quote = Compile(R"({"pattern": "a\"b|\\\\"})");  // a"b, or a backslash
  EXPECT_TRUE(Matches(quote, R"("xa\"by")"));
  EXPECT_TRUE(Matches(quote, R"("\\")"));
  EXPECT_FALSE(Matches(quote, R"("a\\"b")"));
  auto not_comma = Compile(R"({"pattern": "^[^,]+$"})");
  EXPECT_TRUE(Matches(not_comma, "\"a\\n\xc3\xa9\\\"\""));
  EXPECT_FALSE(Matches(not_comma, R"("a,b")"));
  // [^\\S] would take every non-ASCII character, where Python's takes only Unicode's spaces.
  EXPECT_THAT(Error(R"({"pattern": "^[^\\S]$"})"), HasSubstr("negated class"));
}

TEST(JsonSchemaTest, FormatsHaveTheirForms) {
  auto date = Compile(R"({"type": "string", "format": "date"})");
  EXPECT_TRUE(Matches(date, R"("2024-02-29")"));
  EXPECT_FALSE(Matches(date, R"("2024-13-01")"));
  EXPECT_FALSE(Matches(date, R"("2024-1-01")"));
  // Dates of the calendar, as Python's datetime (and pydantic) read them.
  for (std::string_view ok : {R"("2000-02-29")", R"("1996-02-29")", R"("0400-02-29")",
                              R"("2023-04-30")", R"("2023-12-31")", R"("0001-01-01")"}) {
    EXPECT_TRUE(Matches(date, ok)) << ok;
  }
  for (std::string_view bad : {R"("2023-02-29")", R"("1900-02-29")", R"("2024-02-30")",
                               R"("2024-04-31")", R"("0000-01-01")", R"("0000-02-29")"}) {
    EXPECT_FALSE(Matches(date, bad)) << bad;
  }
  auto dt = Compile(R"({"type": "string", "format": "date-time"})");
  EXPECT_TRUE(Matches(dt, R"("2024-02-29T23:59:59.5+05:30")"));
  EXPECT_FALSE(Matches(dt, R"("2024-02-29T23:59:60Z")")) << "no leap second (Python's datetime)";
  EXPECT_TRUE(Matches(dt, R"("2024-02-29T00:00:00Z")"));
  EXPECT_FALSE(Matches(dt, R"("2024-02-29T24:00:00Z")"));
  EXPECT_FALSE(Matches(dt, R"("2024-02-29T00:00:00")"));
  auto uuid = Compile(R"({"format": "uuid"})");
  EXPECT_TRUE(Matches(uuid, R"("123e4567-e89b-12d3-a456-426614174000")"));
  EXPECT_FALSE(Matches(uuid, R"("123e4567e89b12d3a456426614174000")"));
  auto ip = Compile(R"({"type": "string", "format": "ipv4"})");
  EXPECT_TRUE(Matches(ip, R"("255.0.10.199")"));
  EXPECT_FALSE(Matches(ip, R"("256.0.0.1")"));
  EXPECT_FALSE(Matches(ip, R"("1.02.3.4")"));
}

// A format JSON Schema does not define is an annotation (its rule for unknown formats):
// pydantic's SecretStr ("password") is a string, with its length bounds and beside a pattern.
// (One of JSON Schema's own that is not served is refused: RefusedSchemasSayWhatAndWhere.)
TEST(JsonSchemaTest, AnUnknownFormatIsAnAnnotation) {
  auto secret = Compile(R"({"type": "string", "format": "password", "maxLength": 3})");
  EXPECT_TRUE(Matches(secret, R"("abc")"));
  EXPECT_FALSE(Matches(secret, R"("abcd")"));
  auto coded = Compile(R"({"type": "string", "format": "binary", "pattern": "^[0-9]+$"})");
  EXPECT_TRUE(Matches(coded, R"("42")"));
  EXPECT_FALSE(Matches(coded, R"("4a")"));
  EXPECT_THAT(Error(R"({"type": "string", "format": 7})"), HasSubstr("is not a string"));
  EXPECT_THAT(Error(R"({"type": "string", "format": "date", "pattern": "^2"})"),
              HasSubstr("pattern beside format is not served"));
}

// pydantic's EmailStr, AnyUrl / HttpUrl, IPv6Address and timedelta: email, uri (beside its
// maxLength 2083, which the form's at most 2,011 characters keep), ipv6 and duration.
TEST(JsonSchemaTest, MoreFormatsHaveTheirForms) {
  auto email = Compile(R"({"type": "string", "format": "email"})");
  for (std::string_view ok : {R"("a@b.co")", R"("first.last+tag@mail.example.org")"}) {
    EXPECT_TRUE(Matches(email, ok)) << ok;
  }
  for (std::string_view bad :
       {R"("a@b")", R"("@b.co")", R"("a..b@c.de")", R"("a@-b.de")", R"("a b@c.de")"}) {
    EXPECT_FALSE(Matches(email, bad)) << bad;
  }
  auto url = Compile(R"({"type": "string", "format": "uri", "minLength": 1, "maxLength": 2083})");
  for (std::string_view ok :
       {R"("https://example.com")", R"("http://10.0.0.1:8080/a/b?q=1&r=%20#top")",
        R"("https://a-b.example.co.uk/x_y~z/")"}) {
    EXPECT_TRUE(Matches(url, ok)) << ok;
  }
  for (std::string_view bad : {R"("example.com")", R"("ftp://a.b")", R"("https://a b")",
                               R"("https://a.b/%zz")", R"("https://a.b/x y")"}) {
    EXPECT_FALSE(Matches(url, bad)) << bad;
  }
  // What WHATWG's parsers (and pydantic's AnyUrl) refuse: a port past 65535, a numeric last
  // label that is no IPv4 address.
  EXPECT_TRUE(Matches(url, R"("http://localhost:65535")"));
  EXPECT_TRUE(Matches(url, R"("http://1.2.3.4:0/")"));
  for (std::string_view bad :
       {R"("http://a:65536")", R"("http://a:99999")", R"("http://1.2.3.300/x")",
        R"("http://999.1.1.1")", R"("http://a.b.123")"}) {
    EXPECT_FALSE(Matches(url, bad)) << bad;
  }
  auto ip = Compile(R"({"type": "string", "format": "ipv6"})");
  for (std::string_view ok : {R"("::")", R"("::1")", R"("fe80::1:2")", R"("1:2:3:4:5:6:7:8")",
                              R"("1:2:3:4:5:6:7::")", R"("::2:3:4:5:6:7:8")", R"("2001:db8::")"}) {
    EXPECT_TRUE(Matches(ip, ok)) << ok;
  }
  for (std::string_view bad : {R"("1:2:3:4:5:6:7:8:9")", R"("1::2::3")", R"("12345::")", R"(":1")",
                               R"("1:2:3:4:5:6:7:8::")", R"("g::")"}) {
    EXPECT_FALSE(Matches(ip, bad)) << bad;
  }
  auto host = Compile(R"({"type": "string", "format": "hostname"})");
  for (std::string_view ok : {R"("example.com")", R"("a-b.c1.example.org")", R"("x.y")"}) {
    EXPECT_TRUE(Matches(host, ok)) << ok;
  }
  for (std::string_view bad : {R"("localhost")", R"("-a.com")", R"("a-.com")", R"("a..b")",
                               R"("a.b.c.d.e")", R"("a_b.com")"}) {
    EXPECT_FALSE(Matches(host, bad)) << bad;
  }
  auto duration = Compile(R"({"type": "string", "format": "duration"})");
  for (std::string_view ok : {R"("P1D")", R"("PT1H30M")", R"("P1Y2M3DT4H5M6S")", R"("P2W")",
                              R"("PT0S")", R"("P1M")", R"("PT1M")"}) {
    EXPECT_TRUE(Matches(duration, ok)) << ok;
  }
  for (std::string_view bad :
       {R"("P")", R"("PT")", R"("P1DT")", R"("1D")", R"("P1H")", R"("P1Y2D")", R"("PT1H2S")"}) {
    EXPECT_FALSE(Matches(duration, bad)) << bad << " (RFC 3339's ABNF)";
  }
  // A length bound that would cut a form is refused; one that keeps every form is served.
  EXPECT_THAT(Error(R"({"type": "string", "format": "uri", "maxLength": 100})"),
              HasSubstr("format \"uri\" is 8 to 2011 characters here"));
  EXPECT_THAT(Error(R"({"type": "string", "format": "email", "maxLength": 100})"),
              HasSubstr("format \"email\" is 6 to 187 characters here"));
  EXPECT_TRUE(Matches(Compile(R"({"type": "string", "format": "email", "maxLength": 254})"),
                      R"("a.b@c.de")"));
  EXPECT_FALSE(Matches(email, absl::StrCat("\"", std::string(16, 'a'), "@b.co\"")))
      << "an atom of at most 15";
  EXPECT_THAT(Error(R"({"type": "string", "format": "duration", "maxLength": 20})"),
              HasSubstr("format \"duration\" is 3 to 62 characters here"));
  auto day = Compile(R"({"type": "string", "format": "date", "minLength": 10, "maxLength": 10})");
  EXPECT_TRUE(Matches(day, R"("2024-01-31")"));
}

// multipleOf on integers: listed within a range of at most 256 multiples, or by the last
// digits from 0 on when the step divides 1000; other cases are refused.
TEST(JsonSchemaTest, IntegerMultiplesAreExact) {
  struct Case {
    std::string schema;
    int64_t step;
    int64_t lo;
    int64_t hi;
  };
  const Case cases[] = {
      {R"({"type": "integer", "multipleOf": 5})", 5, INT64_MIN, INT64_MAX},
      {R"({"type": "integer", "multipleOf": 4, "minimum": 0})", 4, 0, INT64_MAX},
      {R"({"type": "integer", "multipleOf": 8, "minimum": 1})", 8, 1, INT64_MAX},
      {R"({"type": "integer", "multipleOf": 3, "minimum": -20, "maximum": 40})", 3, -20, 40},
      {R"({"type": "integer", "multipleOf": 100, "exclusiveMaximum": 0})", 100, INT64_MIN, -1},
      {R"({"type": "integer", "multipleOf": 1, "minimum": 3, "maximum": 5})", 1, 3, 5},
  };
  for (const Case& c : cases) {
    auto re = Compile(c.schema);
    ASSERT_NE(re, nullptr) << c.schema;
    for (int64_t x = -2100; x <= 2100; ++x) {
      const bool in = x >= c.lo && x <= c.hi && x % c.step == 0;
      EXPECT_EQ(Matches(re, absl::StrCat(x)), in) << c.schema << " " << x;
    }
    for (int64_t x : {int64_t{123456789000}, int64_t{-123456789000}, int64_t{123456789004}}) {
      const bool in = x >= c.lo && x <= c.hi && x % c.step == 0;
      EXPECT_EQ(Matches(re, absl::StrCat(x)), in) << c.schema << " " << x;
    }
  }
  EXPECT_THAT(Error(R"({"type": "integer", "multipleOf": 3})"), HasSubstr("divides 1000"));
  EXPECT_THAT(Error(R"({"type": "integer", "multipleOf": 5, "minimum": 7})"),
              HasSubstr("starts at 0"));
  EXPECT_THAT(Error(R"({"type": "integer", "multipleOf": 2, "maximum": 10000})"),
              HasSubstr("5001 integers"));
  EXPECT_THAT(Error(R"({"type": "integer", "multipleOf": 2.5})"), HasSubstr("whole number"));
  EXPECT_THAT(Error(R"({"type": "integer", "multipleOf": 7, "minimum": 1, "maximum": 6})"),
              HasSubstr("no multiple"));
}

// Every integer in a window matches exactly when it is within the bounds.
TEST(JsonSchemaTest, IntegerBoundsAreExact) {
  struct Case {
    std::string bounds;
    int64_t lo;
    int64_t hi;
  };
  const Case cases[] = {
      {R"("minimum": 0)", 0, INT64_MAX},
      {R"("minimum": 7, "maximum": 7)", 7, 7},
      {R"("minimum": 1, "maximum": 100)", 1, 100},
      {R"("minimum": -45, "maximum": 1234)", -45, 1234},
      {R"("minimum": 19, "maximum": 1001)", 19, 1001},
      {R"("exclusiveMinimum": 99, "exclusiveMaximum": 1000)", 100, 999},
      {R"("minimum": 0.5, "maximum": 9.5)", 1, 9},
      {R"("maximum": -10)", INT64_MIN, -10},
      {R"("maximum": 37)", INT64_MIN, 37},
      {R"("minimum": -300)", -300, INT64_MAX},
      {R"("minimum": 123)", 123, INT64_MAX},
      {R"("minimum": -999, "maximum": -100)", -999, -100},
  };
  for (const Case& c : cases) {
    auto re = Compile(absl::StrCat(R"({"type": "integer", )", c.bounds, "}"));
    ASSERT_NE(re, nullptr);
    for (int64_t v = -1500; v <= 1500; ++v) {
      EXPECT_EQ(Matches(re, std::to_string(v)), v >= c.lo && v <= c.hi) << c.bounds << ": " << v;
    }
    for (int64_t v : {int64_t{99999}, int64_t{123456789012345}, int64_t{-54321}}) {
      EXPECT_EQ(Matches(re, std::to_string(v)), v >= c.lo && v <= c.hi) << c.bounds << ": " << v;
    }
    EXPECT_FALSE(Matches(re, "007")) << c.bounds;
  }
}

TEST(JsonSchemaTest, ObjectsKeepTheSchemasOrderAndItsRequiredProperties) {
  auto re = Compile(R"({"type": "object", "properties": {
      "a": {"type": "integer"}, "b": {"type": "string"}, "c": {"type": "boolean"}},
      "required": ["b"]})");
  for (std::string_view ok :
       {R"({"b":"x"})", R"({"a":1,"b":"x"})", R"({"b":"x","c":true})",
        R"({ "a": 1, "b": "x", "c": false })", "{\n  \"a\": 1,\n  \"b\": \"x\"\n}"}) {
    EXPECT_TRUE(Matches(re, ok)) << ok;
  }
  for (std::string_view bad : {"{}", R"({"a":1})", R"({"b":"x","a":1})", R"({"b":"x",})",
                               R"({"b":1})", R"({"b":"x","d":1})", R"({"b":"x"} )"}) {
    EXPECT_FALSE(Matches(re, bad)) << bad;
  }
  auto optional = Compile(R"({"properties": {"a": {}, "b": {"const": 2}}})");
  for (std::string_view ok : {"{}", R"({"a":[1,{"x":null}]})", R"({"b":2})", R"({"a":"","b":2})"}) {
    EXPECT_TRUE(Matches(optional, ok)) << ok;
  }
  for (std::string_view bad : {R"({,"b":2})", R"({"b":3})", R"({"a":1,})"}) {
    EXPECT_FALSE(Matches(optional, bad)) << bad;
  }
}

// Every choice of required properties among four, every subset of them written: an object is
// taken exactly when it holds the required ones (in the schema's order), whatever their places.
TEST(JsonSchemaTest, EveryRequiredSetTakesExactlyTheSubsetsThatHoldIt) {
  for (int required = 0; required < 16; ++required) {
    std::vector<std::string> names;
    for (int i = 0; i < 4; ++i) {
      if (required & (1 << i)) names.push_back(absl::StrCat("\"p", i, "\""));
    }
    auto re = Compile(absl::StrCat(
        R"({"properties": {"p0": {"const": 0}, "p1": {"const": 1}, "p2": {"const": 2},)",
        R"( "p3": {"const": 3}}, "required": [)", absl::StrJoin(names, ", "), "]}"));
    ASSERT_NE(re, nullptr);
    for (int present = 0; present < 16; ++present) {
      std::vector<std::string> fields;
      for (int i = 0; i < 4; ++i) {
        if (present & (1 << i)) fields.push_back(absl::StrCat("\"p", i, "\": ", i));
      }
      const std::string text = absl::StrCat("{", absl::StrJoin(fields, ", "), "}");
      EXPECT_EQ(Matches(re, text), (present & required) == required)
          << "required " << required << ": " << text;
    }
    EXPECT_FALSE(Matches(re, R"({"p1": 1, "p0": 0, "p2": 2, "p3": 3})")) << "out of order";
  }
}

// Optional properties cost states in proportion to their number, not its square.
TEST(JsonSchemaTest, OptionalPropertiesCostLinearly) {
  auto states = [](int n) {
    std::string props;
    for (int i = 0; i < n; ++i) {
      absl::StrAppend(&props, i ? ", " : "", "\"p", i, R"(": {"type": "boolean"})");
    }
    auto re = CompileJsonSchema(absl::StrCat(R"({"properties": {)", props, "}}"));
    EXPECT_TRUE(re.ok()) << re.status();
    return re.ok() ? (*re)->nfa_states() : 0;
  };
  const int per_property = states(11) - states(10);
  EXPECT_GT(per_property, 0);
  EXPECT_EQ(states(21) - states(20), per_property);
}

TEST(JsonSchemaTest, WhitespaceIsASpaceOrALineBreakAndAnIndent) {
  auto re = Compile(R"({"type": "array", "items": {"type": "integer"}})");
  const std::string indent(kMaxJsonSchemaIndent, ' ');
  for (const std::string& ok :
       {std::string("[1,2]"), std::string("[ 1, 2 ]"), absl::StrCat("[\n", indent, "1,\n\t2\n]")}) {
    EXPECT_TRUE(Matches(re, ok)) << ok;
  }
  for (const std::string& bad :
       {std::string("[  1]"), std::string("[ \n1]"), std::string("[1 ,2]"), std::string("[\n\n1]"),
        std::string("[\r\n1]"), absl::StrCat("[\n ", indent, "1]"), std::string(" [1]")}) {
    EXPECT_FALSE(Matches(re, bad)) << bad;
  }
}

TEST(JsonSchemaTest, AColonTakesOneSpaceAfterItAndNoneBefore) {
  auto re = Compile(R"({"properties": {"a": {"type": "integer"}}, "required": ["a"]})");
  EXPECT_TRUE(Matches(re, R"({"a":1})"));
  EXPECT_TRUE(Matches(re, R"({"a": 1})"));
  EXPECT_TRUE(Matches(re, "{\n  \"a\": 1\n}"));
  EXPECT_FALSE(Matches(re, R"({"a" : 1})"));
  EXPECT_FALSE(Matches(re, R"({"a":  1})"));
  EXPECT_FALSE(Matches(re, "{\"a\":\n1}"));
}

TEST(JsonSchemaTest, MapsTakeAnyKeysWithTheirValuesSchema) {
  auto re = Compile(R"({"type": "object", "additionalProperties": {"type": "integer"}})");
  EXPECT_TRUE(Matches(re, "{}"));
  EXPECT_TRUE(Matches(re, R"({"x": 1, "y\n": -2})"));
  EXPECT_FALSE(Matches(re, R"({"x": "1"})"));
  auto none = Compile(R"({"type": "object", "additionalProperties": false})");
  EXPECT_TRUE(Matches(none, "{ }"));
  EXPECT_FALSE(Matches(none, R"({"x": 1})"));
}

TEST(JsonSchemaTest, ArraysCountTheirItems) {
  auto re = Compile(R"({"type": "array", "items": {"enum": ["a", "b"]}, "minItems": 1,
                        "maxItems": 3})");
  EXPECT_FALSE(Matches(re, "[]"));
  EXPECT_TRUE(Matches(re, R"(["a"])"));
  EXPECT_TRUE(Matches(re, R"(["a", "b", "a"])"));
  EXPECT_FALSE(Matches(re, R"(["a", "b", "a", "b"])"));
  EXPECT_FALSE(Matches(re, R"(["c"])"));
  auto tuple = Compile(R"({"type": "array", "prefixItems": [{"type": "integer"},
                           {"type": "string"}], "items": {"type": "boolean"}, "minItems": 1})");
  for (std::string_view ok : {"[1]", R"([1,"x"])", R"([1,"x",true,false])"}) {
    EXPECT_TRUE(Matches(tuple, ok)) << ok;
  }
  for (std::string_view bad : {"[]", R"(["x"])", "[1,true]", R"([1,"x",3])"}) {
    EXPECT_FALSE(Matches(tuple, bad)) << bad;
  }
  auto exact = Compile(R"({"prefixItems": [{"type": "integer"}, {"type": "integer"}],
                           "items": false, "minItems": 2})");
  EXPECT_TRUE(Matches(exact, "[1, 2]"));
  EXPECT_FALSE(Matches(exact, "[1]"));
  EXPECT_FALSE(Matches(exact, "[1, 2, 3]"));
}

// What pydantic writes for a model with an enum, an optional field and a nested model.
TEST(JsonSchemaTest, PydanticModelsAreServed) {
  auto re = Compile(R"({
    "$defs": {
      "Color": {"enum": ["red", "green"], "title": "Color", "type": "string"},
      "Point": {"properties": {"x": {"title": "X", "type": "integer"},
                               "y": {"title": "Y", "type": "integer"}},
                "required": ["x", "y"], "title": "Point", "type": "object"}
    },
    "properties": {
      "name": {"title": "Name", "type": "string", "maxLength": 20},
      "color": {"$ref": "#/$defs/Color"},
      "at": {"anyOf": [{"$ref": "#/$defs/Point"}, {"type": "null"}], "default": null},
      "tags": {"items": {"type": "string"}, "title": "Tags", "type": "array"}
    },
    "required": ["name", "color", "tags"],
    "title": "Thing", "type": "object"})");
  EXPECT_TRUE(Matches(re, R"({"name": "pen", "color": "red", "tags": []})"));
  EXPECT_TRUE(Matches(re, R"({"name": "pen", "color": "green", "at": {"x": 1, "y": -2},)"
                          R"( "tags": ["a", "b"]})"));
  EXPECT_TRUE(Matches(re, R"({"name": "pen", "color": "red", "at": null, "tags": []})"));
  EXPECT_FALSE(Matches(re, R"({"name": "pen", "color": "blue", "tags": []})"));
  EXPECT_FALSE(Matches(re, R"({"name": "pen", "color": "red", "at": {"x": 1}, "tags": []})"));
}

TEST(JsonSchemaTest, AFalsePropertyIsAbsentAndCountsMayBeWrittenAsFloats) {
  auto re = Compile(R"({"properties": {"a": false, "b": {"const": 1}}, "minItems": 2.0})");
  EXPECT_TRUE(Matches(re, "{}"));
  EXPECT_TRUE(Matches(re, R"({"b": 1})"));
  EXPECT_FALSE(Matches(re, R"({"a": 1})"));
  EXPECT_TRUE(Matches(Compile(R"({"properties": {"a": false}})"), "{}"));
  EXPECT_THAT(Error(R"({"properties": {"a": false}, "required": ["a"]})"),
              HasSubstr("whose schema is false"));
  EXPECT_THAT(Error(R"({"type": "array", "minItems": 2.5})"), HasSubstr("non-negative integer"));
  EXPECT_THAT(Error(R"({"type": "array", "minItems": 18446744073709551615})"),
              HasSubstr("over the 256 served"));
}

// Messages quote the client's text clipped (a status travels in gRPC's trailers), cut where a
// character starts.
TEST(JsonSchemaTest, MessagesClipTheClientsText) {
  const std::string key(60000, 'x');
  std::string message = Error(absl::StrCat(R"({")", key, R"(": 1})"));
  EXPECT_LT(message.size(), 1200u);
  EXPECT_THAT(message, HasSubstr("..."));
  std::string long_e;
  for (int i = 0; i < 40; ++i) long_e += "\xc3\xa9";
  message = Error(absl::StrCat(R"({"const": [")", long_e, R"(", 1e300]})"));
  EXPECT_EQ(FindInvalidUtf8(message), std::nullopt) << message;
}

// A long pointer behind many references is walked once; each expansion still costs its
// length, so a fan-out of them meets the work budget. (The pointer's target nests 250 deep,
// within kMaxJsonNesting with what holds it.)
TEST(JsonSchemaTest, ReferenceWalksAreKeptAndCounted) {
  std::string deep = R"({"const": 0})";
  std::string pointer = "#/$defs/x";
  for (int i = 0; i < 250; ++i) {
    deep = absl::StrCat(R"({"a":)", deep, "}");
    pointer += "/a";
  }
  std::vector<std::string> alts(30, R"({"$ref":"#/$defs/b0"})");
  const std::string fan = absl::StrCat(R"({"anyOf":[)", absl::StrJoin(alts, ","), "]}");
  const std::string schema =
      absl::StrCat(R"({"$defs":{"x":)", deep, R"(,"b0":{"$ref":")", pointer, R"("},"b1":)", fan,
                   R"(,"b2":)", absl::StrReplaceAll(fan, {{"b0", "b1"}}), R"(,"b3":)",
                   absl::StrReplaceAll(fan, {{"b0", "b2"}}), R"(},"$ref":"#/$defs/b3"})");
  EXPECT_THAT(Error(schema), HasSubstr("bytes of work"));
}

TEST(JsonSchemaTest, ReferencesArePercentDecodedPointers) {
  auto re = Compile(R"({"$defs": {"a%b": {"const": 1}, "c/d~": {"const": 2}},
                        "prefixItems": [{"$ref": "#/$defs/a%25b"}, {"$ref": "#/$defs/c~1d~0"}],
                        "items": false, "minItems": 2})");
  EXPECT_TRUE(Matches(re, "[1, 2]"));
  EXPECT_FALSE(Matches(re, "[2, 1]"));
}

// prefixItems without items: the array holds the written items, and items of any type past
// them only as many as minItems needs.
TEST(JsonSchemaTest, PrefixItemsWithoutItemsTakeWhatMinItemsNeeds) {
  auto none = Compile(R"({"prefixItems": [], "minItems": 1})");
  EXPECT_TRUE(Matches(none, "[true]"));
  EXPECT_FALSE(Matches(none, "[]"));
  auto one = Compile(R"({"prefixItems": [{"const": 1}], "minItems": 2, "maxItems": 2})");
  EXPECT_TRUE(Matches(one, R"([1, "x"])"));
  EXPECT_FALSE(Matches(one, "[1]"));
  EXPECT_FALSE(Matches(one, "[2, 1]"));
}

TEST(JsonSchemaTest, ConstAndEnumTakeAnyJsonValueOfTheType) {
  auto re = Compile(R"({"enum": [1, "a\"b", null, {"k": [true]}, 2.5]})");
  for (std::string_view ok : {"1", R"("a\"b")", "null", R"({"k":[true]})", "2.5"}) {
    EXPECT_TRUE(Matches(re, ok)) << ok;
  }
  auto ints = Compile(R"({"type": "integer", "enum": [1, "a", 2.0]})");
  EXPECT_TRUE(Matches(ints, "1"));
  EXPECT_FALSE(Matches(ints, R"("a")"));
}

// Recursive references (pydantic's self-referencing models: trees, linked lists) are
// followed kMaxJsonSchemaRecursion deep: shallower values are whole, deeper ones refused.
TEST(JsonSchemaTest, RecursiveReferencesAreFollowedFourDeep) {
  auto tree = Compile(R"({"$defs": {"Node": {"type": "object", "properties": {
                              "v": {"type": "integer"},
                              "kids": {"type": "array", "items": {"$ref": "#/$defs/Node"}}},
                            "required": ["v", "kids"], "additionalProperties": false}},
                          "$ref": "#/$defs/Node"})");
  auto nested = [](int depth) {
    std::string text = R"({"v":1,"kids":[]})";
    for (int i = 1; i < depth; ++i)
      text = absl::StrCat(R"({"v":1,"kids":[)", text, ",", text, "]}");
    return text;
  };
  for (int depth = 1; depth <= kMaxJsonSchemaRecursion; ++depth) {
    EXPECT_TRUE(Matches(tree, nested(depth))) << depth;
  }
  EXPECT_FALSE(Matches(tree, nested(kMaxJsonSchemaRecursion + 1)));
  EXPECT_FALSE(Matches(tree, R"({"v":1})")) << "kids is required";
  auto list = Compile(R"({"$defs": {"L": {"type": "object", "properties": {
                              "x": {"type": "string", "maxLength": 2},
                              "next": {"anyOf": [{"$ref": "#/$defs/L"}, {"type": "null"}]}},
                            "required": ["x", "next"]}},
                          "$ref": "#/$defs/L"})");
  EXPECT_TRUE(Matches(list, R"({"x":"a","next":{"x":"b","next":null}})"));
  // A recursion that fits the limits only one level deep (no child ever) is refused.
  std::string wide = R"({"$defs": {"N": {"type": "object", "properties": {"e": {"enum": [)";
  for (int i = 0; i < 1000; ++i)
    absl::StrAppend(&wide, i > 0 ? "," : "", "\"value-number-", 100000 + i, "\"");
  absl::StrAppend(&wide, R"(]}, "k0": {"$ref": "#/$defs/N"}}}}, "$ref": "#/$defs/N"})");
  EXPECT_THAT(CompileJsonSchema(wide).status().message(), HasSubstr("automaton states"));
  EXPECT_FALSE(Matches(list, R"({"x":"a","next":{"x":"b","next":{"x":"c","next":{"x":"d",)"
                             R"("next":{"x":"e","next":null}}}}})"))
      << "five deep";
}

TEST(JsonSchemaTest, RefusedSchemasSayWhatAndWhere) {
  EXPECT_THAT(Error("{"), HasSubstr("not a JSON text"));
  EXPECT_THAT(Error(R"({"type": "number", "multipleOf": 2})"),
              HasSubstr("#: multipleOf is served on integers only"));
  EXPECT_THAT(Error(R"({"type": "object", "minProperties": 2})"),
              HasSubstr("#: the keyword \"minProperties\" is not served"));
  EXPECT_THAT(Error(R"({"properties": {"a/b": {"not": {}}}})"),
              HasSubstr("#/properties/a~1b: the keyword \"not\""));
  // Recursion with no way out (each T holds a T) has no finite value.
  EXPECT_THAT(Error(R"({"$defs": {"T": {"properties": {"t": {"$ref": "#/$defs/T"}},
                                        "required": ["t"]}},
                        "$ref": "#/$defs/T"})"),
              HasSubstr("matches no string (a recursive $ref with no way out"));
  EXPECT_THAT(Error(R"({"$ref": "#/$defs/None"})"), HasSubstr("refers to nothing"));
  EXPECT_THAT(Error("false"), HasSubstr("matches no value"));
  EXPECT_THAT(Error(R"({"type": "strin"})"), HasSubstr("type \"strin\""));
  EXPECT_THAT(Error(R"({"properties": {}, "required": ["a"]})"), HasSubstr("properties lacks"));
  EXPECT_THAT(Error(R"({"type": "string", "maxLength": 1000})"), HasSubstr("over the 256"));
  EXPECT_THAT(Error(R"({"type": "integer", "minimum": 5, "maximum": 4})"), HasSubstr("no integer"));
  EXPECT_THAT(Error(R"({"type": "integer", "maximum": 1e16})"), HasSubstr("10^15"));
  EXPECT_THAT(Error(R"({"type": "number", "maximum": 0.1234567})"),
              HasSubstr("maximum 0.1234567 on a number has more than 6 digits after the point"));
  EXPECT_THAT(Error(R"({"type": "number", "minimum": -1e10})"), HasSubstr("+-10^9"));
  EXPECT_THAT(Error(R"({"type": "number", "minimum": 1e-100})"),
              HasSubstr("more than 6 digits after the point"));
  EXPECT_THAT(Error(R"({"type": "number", "minimum": 1, "exclusiveMaximum": 1})"),
              HasSubstr("no number"));
  EXPECT_THAT(Error(R"({"type": "string", "format": "idn-hostname"})"),
              HasSubstr("format \"idn-hostname\""));
  EXPECT_THAT(Error(R"({"type": "array", "uniqueItems": true})"), HasSubstr("uniqueItems"));
  EXPECT_THAT(Error(R"({"type": "string", "anyOf": [{}]})"), HasSubstr("\"anyOf\" beside"));
  EXPECT_THAT(Error(R"({"enum": [1], "type": "string"})"), HasSubstr("no value of const"));
  EXPECT_THAT(Error(std::string(kMaxJsonSchemaBytes + 1, ' ')), HasSubstr("at most"));
  // Keywords beside const or enum would narrow the list: refused, not ignored.
  EXPECT_THAT(Error(R"({"type": "integer", "enum": [1, 5], "minimum": 3})"),
              HasSubstr("\"minimum\" beside const or enum"));
  EXPECT_THAT(Error(R"({"const": "abcdef", "maxLength": 3})"), HasSubstr("\"maxLength\" beside"));
  EXPECT_THAT(Error(R"({"const": 12345678901234567890123})"), HasSubstr("2^53"));
  EXPECT_THAT(Error(R"({"enum": [[1, 1e300]]})"), HasSubstr("2^53"));
  EXPECT_THAT(Error(R"({"$defs": {"A": {"$id": "https://example.com/a", "type": "null"}},
                        "$ref": "#/$defs/A"})"),
              HasSubstr("$id below the root"));
  EXPECT_THAT(Error(R"({"$ref": "#/$defs/%zz"})"), HasSubstr("bad percent-escape"));
  std::string deep = "{}";
  for (int i = 0; i < kMaxJsonSchemaDepth + 1; ++i) deep = absl::StrCat(R"({"items": )", deep, "}");
  EXPECT_THAT(Error(deep), HasSubstr("nested deeper"));
  // A value nested 30,000 deep (60 KB) in an enum would be written out one call per level:
  // refused before it is parsed.
  EXPECT_THAT(
      Error(absl::StrCat(R"({"enum": [)", std::string(30000, '['), std::string(30000, ']'), "]}")),
      HasSubstr("JSON nested more than 256 deep is refused"));
}

// References used 8 times at each of several levels multiply the pattern by 8 each level:
// refused by size before the memory runs out.
TEST(JsonSchemaTest, ExponentialSchemasAreRefusedBySize) {
  std::string defs = R"("d0": {"type": "integer"})";
  for (int i = 1; i <= 10; ++i) {
    const std::string ref = absl::StrCat(R"({"$ref": "#/$defs/d)", i - 1, R"("})");
    std::vector<std::string> refs(8, ref);
    absl::StrAppend(&defs, R"(, "d)", i, R"(": {"prefixItems": [)", absl::StrJoin(refs, ", "),
                    R"(], "items": false})");
  }
  EXPECT_THAT(Error(absl::StrCat(R"({"$defs": {)", defs, R"(}, "$ref": "#/$defs/d10"})")),
              HasSubstr("bytes of work"));
  // A large enum that writes little, looked at at each of many references: the work counts
  // the values looked at.
  std::vector<std::string> values(15000, "1");
  values[0] = "null";
  std::vector<std::string> refs;
  for (int i = 0; i < 1000; ++i) refs.push_back(absl::StrCat("\"", i, R"(":{"$ref":"#/$defs/e"})"));
  EXPECT_THAT(Error(absl::StrCat(R"({"$defs": {"e": {"type": "null", "enum": [)",
                                 absl::StrJoin(values, ","), R"(]}}, "properties": {)",
                                 absl::StrJoin(refs, ","), "}}")),
              HasSubstr("bytes of work"));
}

// A pattern too large for the automaton, or nested too deep for it, is the schema's fault:
// InvalidArgument naming the schema and what to change, not a pattern the client never saw.
TEST(JsonSchemaTest, AutomatonLimitsNameTheSchema) {
  std::string props;
  for (int i = 0; i < 60; ++i) {
    absl::StrAppend(&props, i ? ", " : "", "\"p", i, R"(": {"type": "string", "maxLength": 256})");
  }
  std::string message = Error(absl::StrCat(R"({"properties": {)", props, "}}"));
  EXPECT_THAT(message, HasSubstr("json_schema: the schema needs more than 65536 automaton states"));
  EXPECT_THAT(message, HasSubstr("smaller maxLength"));
  // Arrays 16 deep of 64 items each, the last one the next array: every level within the
  // schema's limits, the pattern's groups (one more for each item) nested past
  // kJsonSchemaNesting.
  std::string deep = R"({"type": "null"})";
  for (int level = 0; level < 16; ++level) {
    std::vector<std::string> items(kMaxJsonSchemaPrefixItems - 1, R"({"type": "null"})");
    items.push_back(deep);
    deep = absl::StrCat(R"({"prefixItems": [)", absl::StrJoin(items, ","), R"(], "items": false})");
  }
  ASSERT_LE(deep.size(), static_cast<size_t>(kMaxJsonSchemaBytes));
  message = Error(deep);
  EXPECT_THAT(message, HasSubstr("json_schema: the schema nests deeper than its automaton may"));
}

}  // namespace
}  // namespace llmint8::coordinator
