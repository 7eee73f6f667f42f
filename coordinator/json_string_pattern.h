// A pattern over a JSON string's text from one over its value: JSON Schema's `pattern` is
// matched against the decoded string, while guided_json follows the JSON text, where '"',
// '\\' and control characters are written escaped. Each character set of the pattern becomes
// the ways a JSON string writes its characters: printable ones as themselves, '"' as \",
// '\\' as \\, control characters as their short escape (\b \f \n \r \t) or \u00XX.
//
//   JsonStringPattern(R"(\S+@\S+)")  // \S also as \" and \\ (and the controls' escapes)
//
// \D, \W and \S are the ASCII characters outside \d, \w and \s here (no multi-byte
// character; \S not 0x1C-0x1F either, which Python's re counts as spaces): narrower than the
// Unicode classes validators use, never wider.
#ifndef LLMINT8_COORDINATOR_JSON_STRING_PATTERN_H_
#define LLMINT8_COORDINATOR_JSON_STRING_PATTERN_H_

#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace llmint8::coordinator {

// The pattern (guided_regex.h's syntax) whose whole matches are the texts between the quotes
// of the JSON strings whose values are whole matches of `pattern`, written as above (other
// escapes, such as \/ or \u00e9, are not taken: narrower than JSON). InvalidArgument where
// the parser refuses `pattern` (its syntax; CompiledRegex::Compile's size and state limits
// are the caller's to check), or for a class that matches no character.
absl::StatusOr<std::string> JsonStringPattern(std::string_view pattern);

}  // namespace llmint8::coordinator

#endif  // LLMINT8_COORDINATOR_JSON_STRING_PATTERN_H_
