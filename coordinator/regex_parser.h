// The parser of guided_regex's patterns (guided_regex.h has the syntax): a pattern to a tree
// of character sets, concatenations, alternations and repetitions, which the automaton
// compiler (guided_regex.cc) and the JSON string writer (JsonStringPattern) read.
#ifndef LLMINT8_COORDINATOR_REGEX_PARSER_H_
#define LLMINT8_COORDINATOR_REGEX_PARSER_H_

#include <bitset>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace llmint8::coordinator::regex_internal {

// A character class: ASCII characters, every multi-byte UTF-8 character, or some listed ones.
struct CharSet {
  std::bitset<128> ascii;
  bool all_multibyte = false;
  std::vector<std::string> multibyte;  // listed characters' UTF-8 bytes

  void AddRange(int lo, int hi) {
    for (int c = lo; c <= hi; ++c) ascii.set(static_cast<size_t>(c));
  }
  void Add(const CharSet& other) {
    ascii |= other.ascii;
    all_multibyte = all_multibyte || other.all_multibyte;
    multibyte.insert(multibyte.end(), other.multibyte.begin(), other.multibyte.end());
  }
};

// One node of the parsed pattern.
struct Node {
  enum class Kind { kEmpty, kSet, kConcat, kAlt, kRepeat };
  Kind kind = Kind::kEmpty;
  CharSet set;                 // kSet
  std::vector<Node> children;  // kConcat, kAlt, kRepeat (one)
  int min = 0;
  int max = 0;  // kRepeat; -1: unbounded
};

struct ParseOptions {
  int max_nesting = 200;  // groups (the parser and the compiler recurse this deep)
  // \D, \W and \S as the ASCII characters outside \d, \w and \s only, no multi-byte
  // character, and \S without 0x1C-0x1F (spaces to Python's re): never wider than the
  // Unicode classes validators use.
  bool ascii_complements = false;
  // A pattern the server wrote (CompiledRegex::CompileWritten): "(?!)" is a set of no
  // character, which nothing matches (a branch that cannot be taken). Clients' patterns
  // keep refusing lookarounds.
  bool written = false;
};

// The tree of `pattern`, or InvalidArgument ("guided_regex: WHAT at byte N of the pattern");
// `too_deep` (may be null) tells a failure for groups nested past options.max_nesting.
absl::StatusOr<Node> ParsePattern(std::string_view pattern, const ParseOptions& options,
                                  bool* too_deep = nullptr);

}  // namespace llmint8::coordinator::regex_internal

#endif  // LLMINT8_COORDINATOR_REGEX_PARSER_H_
