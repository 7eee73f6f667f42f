// guided_regex (vLLM's): the generated text is one whole match of a regular expression. The
// pattern is compiled once per request to an NFA over bytes (Thompson's construction, pruned to
// the states from which a match can still be reached), which its sequences follow through a
// DFA built as they go (each set of NFA states and byte computed once, in time linear in the
// NFA), as their OutputConstraint.
//
// The syntax is the common core of Python's and ECMAScript's:
//   literals (UTF-8 text), '.' (any character but '\n'), classes [a-z0-9_] and [^...] (ranges
//   of ASCII characters; listed non-ASCII characters, not in a negated class), escapes \d \D
//   \w \W \s \S \n \t \r \f \v \xHH \uHHHH and an escaped punctuation character, groups (...),
//   (?:...), (?P<name>...) and (?<name>...), alternation |, and the quantifiers * + ? {m}
//   {m,} {m,n} (a lazy '?' after one is accepted: it changes nothing in a whole match). '^' at
//   the start and '$' at the end are accepted (the match is whole anyway). \d, \w and \s are
//   ASCII's (Python's re.ASCII): [0-9], [A-Za-z0-9_] and [ \t\n\r\f\v].
// Refused, InvalidArgument naming what: backreferences, lookarounds, word boundaries, inline
// flags, ranges of non-ASCII characters, a quantifier on a quantifier, {,n} (its meaning
// differs between dialects), patterns over kMaxGuidedRegexBytes, repetition counts over
// kMaxGuidedRegexRepeat, NFAs over kMaxGuidedRegexStates states, and patterns that match no
// string.
//
// Thread-safety: see NewConstraint.
#ifndef LLMINT8_COORDINATOR_GUIDED_REGEX_H_
#define LLMINT8_COORDINATOR_GUIDED_REGEX_H_

#include <bitset>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include "absl/status/statusor.h"
#include "coordinator/output_constraint.h"

namespace llmint8::coordinator {

inline constexpr int kMaxGuidedRegexBytes = 4096;
inline constexpr int kMaxGuidedRegexRepeat = 256;
inline constexpr int kMaxGuidedRegexStates = 16384;
// The DFA the sequences of a CompiledRegex build as they go (each state a set of NFA states,
// with 256 transitions; shared by every request the CompiledRegex serves, guide_cache.h): past
// this many states or NFA states in them at the start of a scan the cache starts over (so
// 2,048 states of 1 KiB and the ids in them, 4 MiB, at most at a scan's start); past twice as
// many new ones within one scan of the vocabulary (whatever other requests left: a request's
// limits do not depend on the load), past kMaxGuidedRegexScanWork NFA states visited in one
// scan, or past kMaxGuidedRegexRequestWork for the whole request (its sequences, every token,
// across clears: RegexRequestWork; work another request did before is free, and a rescan
// after a clear another request's states set off is charged), the sequence fails
// (INVALID_ARGUMENT: simplify the pattern), and a DFA left over its limits starts over. What
// failed one request may pass a later one that finds its states built. The scans run on the
// scheduler's thread, which every request shares. On this project's 2-core machine one scan gave up
// after 124 ms at the 2^24 (output_constraint_benchmark's BM_RegexBudget, 2026-11-30); the
// request's 2^27 is 8 times that.
inline constexpr int kMaxGuidedRegexDfaStates = 2048;
inline constexpr int kMaxGuidedRegexDfaEntries = 1 << 20;
inline constexpr int64_t kMaxGuidedRegexScanWork = int64_t{1} << 24;
inline constexpr int64_t kMaxGuidedRegexRequestWork = int64_t{1} << 27;
// The allowed token ids of each DFA state's scan are kept (as the shorter list, TokenSet:
// inside a string the few tokens that may not come), as many ids as this (4 MiB) a DFA: a
// text comes back to the same states (inside a string, between list items), whose scans then
// cost a copy.
inline constexpr int kMaxGuidedRegexAllowedEntries = 1 << 20;

// Where a pattern comes from: what its errors call the guide and the text its client wrote,
// what would make that text fit the automaton (hint) and its following cheaper (scan_hint),
// how deep its groups may nest (the parser and compiler
// recurse that deep), and how many NFA states it may take.
struct RegexSource {
  const char* guide = "guided_regex";
  const char* text = "the pattern";
  const char* hint = "fewer or smaller repetition counts";
  const char* scan_hint = "fewer optional or repeated parts";
  int max_nesting = 200;
  int max_states = kMaxGuidedRegexStates;
};

// The automaton work one request's sequences have done, against kMaxGuidedRegexRequestWork:
// shared by the constraints of the request. Used on the scheduler's thread only.
struct RegexRequestWork {
  int64_t steps = 0;  // NFA states visited and DFA set entries made
};

class CompiledRegex {
 public:
  // A client's pattern (at most kMaxGuidedRegexBytes).
  static absl::StatusOr<std::shared_ptr<const CompiledRegex>> Compile(std::string_view pattern);
  // A pattern this server wrote from what a client sent (guided_json's schema, json_schema.h):
  // no byte limit of its own; its errors name `source`, and a syntax error is Internal.
  static absl::StatusOr<std::shared_ptr<const CompiledRegex>> CompileWritten(
      std::string_view pattern, RegexSource source);

  CompiledRegex();
  ~CompiledRegex();

  // A fresh sequence's constraint: its text is one whole match; its automaton work counts to
  // `work`, its request's (null: a request of its own). The constraints of one CompiledRegex
  // share its lazily built DFA, whatever their request: use them from one thread at a time
  // (the scheduler's). The rest of a CompiledRegex is immutable.
  std::unique_ptr<OutputConstraint> NewConstraint(
      std::shared_ptr<const CompiledRegex> self,
      std::shared_ptr<RegexRequestWork> work = nullptr) const;
  // Whether the empty text is its only match (nothing could be generated).
  bool MatchesOnlyTheEmptyText() const;
  // The NFA's states (at most its RegexSource's max_states).
  int nfa_states() const;
  // How many times the shared DFA has started over (its cache full), and its states now
  // (the scheduler's thread only, as the constraints).
  uint64_t dfa_restarts() const;
  size_t dfa_states() const;
  // The fewest and the most bytes of a whole match (-1 for the most: no bound).
  std::pair<int64_t, int64_t> MatchLengths() const;
  // Whether some match holds one of `bytes`.
  bool MayTake(const std::bitset<256>& bytes) const;

 private:
  struct Nfa;
  class Dfa;
  std::unique_ptr<Nfa> nfa_;
  std::string guide_ = "guided_regex";  // RegexSource's, for the errors of a scan
  std::string text_ = "the pattern";
  std::string scan_hint_ = "fewer optional or repeated parts";
  mutable std::unique_ptr<Dfa> dfa_;
  friend class RegexCompiler;
  friend class RegexConstraint;
};

}  // namespace llmint8::coordinator

#endif  // LLMINT8_COORDINATOR_GUIDED_REGEX_H_
