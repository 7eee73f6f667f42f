// guided_regex (vLLM's): the generated text is one whole match of a regular expression. The
// pattern is compiled once per request to an NFA over bytes (Thompson's construction; the
// epsilon closures precomputed and pruned to the states from which a match can still be
// reached), which each sequence then runs byte by byte as its OutputConstraint.
//
// The syntax is the common core of Python's and ECMAScript's:
//   literals (UTF-8 text), '.' (any character but '\n'), classes [a-z0-9_] and [^...] (ranges
//   of ASCII characters; listed non-ASCII characters, not in a negated class), escapes \d \D
//   \w \W \s \S \n \t \r \f \v \xHH \uHHHH and an escaped punctuation character, groups (...),
//   (?:...), (?P<name>...) and (?<name>...), alternation |, and the quantifiers * + ? {m}
//   {m,} {m,n} (a lazy '?' after one is accepted: it changes nothing in a whole match). '^' at
//   the start and '$' at the end are accepted (the match is whole anyway).
// Refused, InvalidArgument naming what: backreferences, lookarounds, word boundaries, inline
// flags, ranges of non-ASCII characters, patterns over kMaxGuidedRegexBytes, repetition
// counts over kMaxGuidedRegexRepeat, NFAs over kMaxGuidedRegexStates states or
// kMaxGuidedRegexClosureEntries closure entries, and patterns that match no string.
//
// Thread-safety: a CompiledRegex is immutable, shared by the sequences of a request.
#ifndef LLMINT8_COORDINATOR_GUIDED_REGEX_H_
#define LLMINT8_COORDINATOR_GUIDED_REGEX_H_

#include <cstdint>
#include <memory>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "coordinator/output_constraint.h"

namespace llmint8::coordinator {

inline constexpr int kMaxGuidedRegexBytes = 4096;
inline constexpr int kMaxGuidedRegexRepeat = 256;
inline constexpr int kMaxGuidedRegexStates = 4096;
// The states reached without a byte after each byte, summed (memory: 4 bytes each).
inline constexpr int kMaxGuidedRegexClosureEntries = 1 << 19;

class CompiledRegex {
 public:
  static absl::StatusOr<std::shared_ptr<const CompiledRegex>> Compile(std::string_view pattern);

  // A fresh sequence's constraint: its text is one whole match.
  std::unique_ptr<OutputConstraint> NewConstraint(std::shared_ptr<const CompiledRegex> self) const;

  // ---- The NFA (for the constraint) ----
  struct State {
    enum class Kind : uint8_t { kRange, kSplit, kMatch };
    Kind kind = Kind::kSplit;
    uint8_t lo = 0;
    uint8_t hi = 0;
    int out = -1;   // kRange: after the byte; kSplit: one way on
    int out1 = -1;  // kSplit: the other way (-1: none)
  };
  const std::vector<State>& states() const { return states_; }
  // The kRange and kMatch states reached without a byte from the start, from which a match
  // can still be reached, sorted.
  const std::vector<int>& start() const { return start_; }
  // For a kRange state: those reached without a further byte after its byte (pruned likewise).
  const std::vector<int>& after(int state) const { return after_[static_cast<size_t>(state)]; }
  int match_state() const { return match_; }

 private:
  std::vector<State> states_;
  std::vector<int> start_;
  std::vector<std::vector<int>> after_;
  int match_ = -1;
  friend class RegexCompiler;
};

}  // namespace llmint8::coordinator

#endif  // LLMINT8_COORDINATOR_GUIDED_REGEX_H_
