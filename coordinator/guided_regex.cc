#include "coordinator/guided_regex.h"

#include <algorithm>
#include <array>
#include <bitset>
#include <deque>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/hash/hash.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "coordinator/regex_parser.h"
#include "coordinator/utf8.h"
#include "coordinator/vocabulary_scan.h"

namespace llmint8::coordinator {

using regex_internal::CharSet;
using regex_internal::Node;
using regex_internal::ParsePattern;

// The automaton: Thompson's NFA over bytes, and which states can still reach the match.
struct CompiledRegex::Nfa {
  struct State {
    enum class Kind : uint8_t { kBytes, kSplit, kMatch };
    Kind kind = Kind::kSplit;
    int bytes = -1;  // kBytes: the bytes it takes, an index into byte_sets
    int out = -1;    // kBytes: after the byte; kSplit: one way on
    int out1 = -1;   // kSplit: the other way (-1: none)
  };
  std::vector<State> states;
  std::vector<std::bitset<256>> byte_sets;  // each distinct set once
  std::vector<bool> live;                   // the match can be reached from it
  int match = -1;
  int start = -1;
  std::vector<int> start_set;  // Closure(start), sorted

  // The kBytes and kMatch states reached from `from` without a byte, live ones only, appended
  // to `out` (unsorted); `stamp`/`round` mark what this call visited. Returns the states
  // visited (the work done).
  int64_t Closure(int from, std::vector<int>& out, std::vector<uint32_t>& stamp, uint32_t round,
                  std::vector<int>& stack) const {
    int64_t visited = 0;
    stack.assign(1, from);
    while (!stack.empty()) {
      const int s = stack.back();
      stack.pop_back();
      if (s < 0 || !live[static_cast<size_t>(s)] || stamp[static_cast<size_t>(s)] == round) {
        continue;
      }
      stamp[static_cast<size_t>(s)] = round;
      ++visited;
      const State& x = states[static_cast<size_t>(s)];
      if (x.kind == State::Kind::kSplit) {
        stack.push_back(x.out1);
        stack.push_back(x.out);
      } else {
        out.push_back(s);
      }
    }
    return visited;
  }
};

// The DFA the constraints of one CompiledRegex build as they go: sets of NFA states (sorted),
// each with its 256 transitions once computed. One thread at a time.
class CompiledRegex::Dfa {
 public:
  static constexpr int kDead = -1;
  static constexpr int kUnknown = -2;

  explicit Dfa(const Nfa& nfa) : nfa_(nfa), stamp_(nfa.states.size(), 0) {}

  // `set`'s state id, made if new (its copy and hash count to `request_work`).
  int Intern(const std::vector<int>& set, int64_t& request_work) {
    const size_t hash = absl::HashOf(set);
    std::vector<int>& same_hash = by_hash_[hash];
    for (int id : same_hash) {
      if (sets_[static_cast<size_t>(id)] == set) return id;
    }
    const int id = static_cast<int>(sets_.size());
    sets_.push_back(set);
    entries_ += set.size();
    request_work += static_cast<int64_t>(set.size());
    next_.emplace_back();
    next_.back().fill(kUnknown);
    same_hash.push_back(id);
    return id;
  }
  const std::vector<int>& Set(int id) const { return sets_[static_cast<size_t>(id)]; }
  // Whether the cache holds more than it should keep: its states, or their NFA states.
  bool Full() const {
    return sets_.size() > static_cast<size_t>(kMaxGuidedRegexDfaStates) ||
           entries_ > static_cast<size_t>(kMaxGuidedRegexDfaEntries);
  }
  // Whether the cache grew by more than twice its limits since it held `states` sets of
  // `entries` NFA states in all.
  bool GrewPast(size_t states, size_t entries) const {
    return sets_.size() - states > 2 * static_cast<size_t>(kMaxGuidedRegexDfaStates) ||
           entries_ - entries > 2 * static_cast<size_t>(kMaxGuidedRegexDfaEntries);
  }
  size_t states() const { return sets_.size(); }
  size_t entries() const { return entries_; }
  uint64_t generation() const { return generation_; }
  void Clear() {
    sets_.clear();
    next_.clear();
    by_hash_.clear();
    entries_ = 0;
    allowed_.clear();
    allowed_entries_ = 0;
    ++generation_;
  }

  // The token ids of `vocabulary` allowed from state `id`, when a scan from it was kept.
  const TokenSet* Allowed(int id, const TokenVocabulary& vocabulary) const {
    if (vocabulary.id != allowed_vocabulary_ || static_cast<size_t>(id) >= allowed_.size()) {
      return nullptr;
    }
    return allowed_[static_cast<size_t>(id)].get();
  }
  // Keeps a scan's result from state `id`, while the kept ids stay within
  // kMaxGuidedRegexAllowedEntries (they go with the states when the DFA starts over).
  void KeepAllowed(int id, const TokenVocabulary& vocabulary, const TokenSet& allowed) {
    if (vocabulary.id != allowed_vocabulary_) {
      allowed_.clear();
      allowed_entries_ = 0;
      allowed_vocabulary_ = vocabulary.id;
    }
    const size_t entries = allowed.ids.size();
    if (allowed_entries_ + entries > static_cast<size_t>(kMaxGuidedRegexAllowedEntries)) return;
    if (allowed_.size() <= static_cast<size_t>(id)) allowed_.resize(static_cast<size_t>(id) + 1);
    allowed_[static_cast<size_t>(id)] = std::make_unique<const TokenSet>(allowed);
    allowed_entries_ += entries;
  }

  // The state after byte `b` from `id` (kDead: none); `scan_work` and `request_work` grow by
  // the NFA states a new transition visits (the latter also by the set entries it makes).
  int Next(int id, uint8_t b, int64_t& scan_work, int64_t& request_work) {
    int& cached = next_[static_cast<size_t>(id)][b];
    if (cached != kUnknown) return cached;
    if (++round_ == 0) {  // the stamps wrapped: start them over
      std::fill(stamp_.begin(), stamp_.end(), 0);
      round_ = 1;
    }
    std::vector<int> set;
    for (int s : sets_[static_cast<size_t>(id)]) {
      const Nfa::State& x = nfa_.states[static_cast<size_t>(s)];
      if (x.kind != Nfa::State::Kind::kBytes || !nfa_.byte_sets[static_cast<size_t>(x.bytes)][b]) {
        continue;
      }
      const int64_t w = 1 + nfa_.Closure(x.out, set, stamp_, round_, stack_);
      scan_work += w;
      request_work += w;
    }
    int to = kDead;
    if (!set.empty()) {
      std::sort(set.begin(), set.end());
      to = Intern(set, request_work);
    }
    next_[static_cast<size_t>(id)][b] = to;  // `cached` may have moved with next_
    return to;
  }

 private:
  const Nfa& nfa_;
  std::vector<std::vector<int>> sets_;
  std::vector<std::array<int, 256>> next_;
  absl::flat_hash_map<size_t, std::vector<int>> by_hash_;  // a set's hash: its states' ids
  size_t entries_ = 0;                                     // NFA states over sets_
  // By state id: the allowed token ids of a scan from it (null: none kept), for
  // allowed_vocabulary_; allowed_entries_ ids listed in all.
  std::vector<std::unique_ptr<const TokenSet>> allowed_;
  uint64_t allowed_vocabulary_ = 0;  // TokenVocabulary::id
  size_t allowed_entries_ = 0;
  uint64_t generation_ = 0;
  std::vector<uint32_t> stamp_;
  uint32_t round_ = 0;
  std::vector<int> stack_;
};

// Thompson's construction: each fragment has a start and an end whose way on is linked later
// (a kSplit without ways on, or the one kBytes state of an ASCII set, whose `out` is after its
// byte).
class RegexCompiler {
 public:
  struct Fragment {
    int start;
    int end;
  };

  explicit RegexCompiler(RegexSource source) : source_(source) {}

  absl::StatusOr<std::shared_ptr<const CompiledRegex>> Compile(const Node& root) {
    ASSIGN_OR_RETURN(Fragment f, Build(root));
    ASSIGN_OR_RETURN(const int match, Add({.kind = State::Kind::kMatch}));
    Link(f.end, match);
    auto re = std::make_shared<CompiledRegex>();
    re->nfa_ = std::make_unique<CompiledRegex::Nfa>();
    CompiledRegex::Nfa& nfa = *re->nfa_;
    nfa.states = std::move(states_);
    nfa.byte_sets = std::move(byte_sets_);
    nfa.match = match;
    nfa.start = f.start;
    MarkLive(nfa);
    std::vector<int> start;
    std::vector<uint32_t> stamp(nfa.states.size(), 0);
    std::vector<int> stack;
    nfa.Closure(nfa.start, start, stamp, 1, stack);
    if (start.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(source_.guide, ": ", source_.text, " matches no string"));
    }
    std::sort(start.begin(), start.end());
    nfa.start_set = std::move(start);
    re->dfa_ = std::make_unique<CompiledRegex::Dfa>(nfa);
    re->guide_ = source_.guide;
    re->text_ = source_.text;
    re->scan_hint_ = source_.scan_hint;
    return re;
  }

 private:
  using State = CompiledRegex::Nfa::State;

  absl::StatusOr<int> Add(State s) {
    if (states_.size() >= static_cast<size_t>(source_.max_states)) {
      return absl::InvalidArgumentError(absl::StrCat(source_.guide, ": ", source_.text,
                                                     " needs more than ", source_.max_states,
                                                     " automaton states (", source_.hint, ")"));
    }
    states_.push_back(s);
    return static_cast<int>(states_.size()) - 1;
  }
  absl::StatusOr<int> Nop() { return Add({.kind = State::Kind::kSplit}); }
  void Link(int from_end, int to) { states_[static_cast<size_t>(from_end)].out = to; }

  // A state that takes any of `bytes` to `next`.
  absl::StatusOr<int> Bytes(const std::bitset<256>& bytes, int next) {
    auto [it, added] = byte_set_ids_.try_emplace(bytes, static_cast<int>(byte_sets_.size()));
    if (added) byte_sets_.push_back(bytes);
    return Add({.kind = State::Kind::kBytes, .bytes = it->second, .out = next});
  }
  // A byte range to `next`.
  absl::StatusOr<int> Range(uint8_t lo, uint8_t hi, int next) {
    std::bitset<256> bytes;
    for (int b = lo; b <= hi; ++b) bytes.set(static_cast<size_t>(b));
    return Bytes(bytes, next);
  }

  // Alternatives joined: a chain of splits to their starts, their ends to one end.
  absl::StatusOr<Fragment> Either(const std::vector<Fragment>& alts) {
    if (alts.size() == 1) return alts[0];
    ASSIGN_OR_RETURN(const int end, Nop());
    for (const Fragment& a : alts) Link(a.end, end);
    int start = alts.back().start;
    for (size_t i = alts.size() - 1; i-- > 0;) {
      ASSIGN_OR_RETURN(start,
                       Add({.kind = State::Kind::kSplit, .out = alts[i].start, .out1 = start}));
    }
    return Fragment{start, end};
  }

  // A set: its first bytes as alternatives into one end. The continuation bytes of multi-byte
  // characters share their tails (one state per byte still to come), so '.' costs a few dozen
  // states, not a chain per character form.
  absl::StatusOr<Fragment> Set(const CharSet& set) {
    // A set of ASCII characters only is one state, linked on as the fragment's end.
    if (!set.all_multibyte && set.multibyte.empty() && set.ascii.any()) {
      ASSIGN_OR_RETURN(const int r, Bytes(AsciiBytes(set), -1));
      return Fragment{r, r};
    }
    ASSIGN_OR_RETURN(const int end, Nop());
    // First bytes by the state they lead to: one state each.
    std::vector<std::pair<int, std::bitset<256>>> firsts;
    auto first = [&](uint8_t lo, uint8_t hi, int next) {
      auto it = std::find_if(firsts.begin(), firsts.end(),
                             [&](const auto& f) { return f.first == next; });
      if (it == firsts.end()) it = firsts.insert(firsts.end(), {next, {}});
      for (int b = lo; b <= hi; ++b) it->second.set(static_cast<size_t>(b));
    };
    if (set.ascii.any()) firsts.emplace_back(end, AsciiBytes(set));
    if (set.all_multibyte) {  // every well-formed multi-byte UTF-8 character (utf8.h)
      // tails[k]: k continuation bytes (0x80-0xBF) to the end.
      std::array<int, 4> tails = {end, -1, -1, -1};
      for (size_t k = 1; k < tails.size(); ++k) {
        ASSIGN_OR_RETURN(tails[k], Range(0x80, 0xBF, tails[k - 1]));
      }
      // Runs of lead bytes with the same rule: a range of them, then the second byte's range.
      for (int b = 0x80; b < 0x100;) {
        const std::optional<Utf8Lead> lead = Utf8LeadOf(static_cast<uint8_t>(b));
        int last = b;
        while (last + 1 < 0x100 && Utf8LeadOf(static_cast<uint8_t>(last + 1)) == lead) ++last;
        if (lead.has_value()) {
          int second = tails[static_cast<size_t>(lead->length - 1)];
          if (lead->lo != 0x80 || lead->hi != 0xBF) {
            ASSIGN_OR_RETURN(
                second, Range(lead->lo, lead->hi, tails[static_cast<size_t>(lead->length - 2)]));
          }
          first(static_cast<uint8_t>(b), static_cast<uint8_t>(last), second);
        }
        b = last + 1;
      }
    } else {
      for (const std::string& ch : set.multibyte) {
        int next = end;
        for (size_t i = ch.size(); i-- > 1;) {
          const uint8_t b = static_cast<uint8_t>(ch[i]);
          ASSIGN_OR_RETURN(next, Range(b, b, next));
        }
        const uint8_t b = static_cast<uint8_t>(ch[0]);
        first(b, b, next);
      }
    }
    if (firsts.empty()) {  // matches no character: a start that leads nowhere
      ASSIGN_OR_RETURN(const int start, Nop());
      return Fragment{start, end};
    }
    std::vector<int> starts;
    for (const auto& [next, bytes] : firsts) {
      ASSIGN_OR_RETURN(const int r, Bytes(bytes, next));
      starts.push_back(r);
    }
    int start = starts.back();
    for (size_t i = starts.size() - 1; i-- > 0;) {
      ASSIGN_OR_RETURN(start, Add({.kind = State::Kind::kSplit, .out = starts[i], .out1 = start}));
    }
    return Fragment{start, end};
  }

  static std::bitset<256> AsciiBytes(const CharSet& set) {
    std::bitset<256> bytes;
    for (size_t c = 0; c < 128; ++c) bytes[c] = set.ascii[c];
    return bytes;
  }

  absl::StatusOr<Fragment> Build(const Node& n) {
    switch (n.kind) {
      case Node::Kind::kEmpty: {
        ASSIGN_OR_RETURN(const int e, Nop());
        return Fragment{e, e};
      }
      case Node::Kind::kSet:
        return Set(n.set);
      case Node::Kind::kConcat: {
        ASSIGN_OR_RETURN(Fragment all, Build(n.children[0]));
        for (size_t i = 1; i < n.children.size(); ++i) {
          ASSIGN_OR_RETURN(Fragment f, Build(n.children[i]));
          Link(all.end, f.start);
          all.end = f.end;
        }
        return all;
      }
      case Node::Kind::kAlt: {
        std::vector<Fragment> alts;
        for (const Node& c : n.children) {
          ASSIGN_OR_RETURN(Fragment f, Build(c));
          alts.push_back(f);
        }
        return Either(alts);
      }
      case Node::Kind::kRepeat: {
        ASSIGN_OR_RETURN(const int start, Nop());
        int end = start;  // the end of what is built so far
        for (int i = 0; i < n.min; ++i) {
          ASSIGN_OR_RETURN(Fragment f, Build(n.children[0]));
          Link(end, f.start);
          end = f.end;
        }
        ASSIGN_OR_RETURN(const int last, Nop());
        if (n.max < 0) {  // then any number more: a loop
          ASSIGN_OR_RETURN(Fragment f, Build(n.children[0]));
          ASSIGN_OR_RETURN(const int loop,
                           Add({.kind = State::Kind::kSplit, .out = f.start, .out1 = last}));
          Link(end, loop);
          Link(f.end, loop);
        } else {  // then up to max - min more, each optional
          for (int i = n.min; i < n.max; ++i) {
            ASSIGN_OR_RETURN(Fragment f, Build(n.children[0]));
            ASSIGN_OR_RETURN(const int choice,
                             Add({.kind = State::Kind::kSplit, .out = f.start, .out1 = last}));
            Link(end, choice);
            end = f.end;
          }
          Link(end, last);
        }
        return Fragment{start, last};
      }
    }
    return absl::InternalError("guided_regex: an unknown node");
  }

  // Live: the states from which the match can be reached, by a walk back from it (linear).
  static void MarkLive(CompiledRegex::Nfa& nfa) {
    const size_t n = nfa.states.size();
    std::vector<std::vector<int>> into(n);
    for (size_t s = 0; s < n; ++s) {
      for (int t : {nfa.states[s].out, nfa.states[s].out1}) {
        if (t >= 0) into[static_cast<size_t>(t)].push_back(static_cast<int>(s));
      }
    }
    nfa.live.assign(n, false);
    std::vector<int> stack = {nfa.match};
    nfa.live[static_cast<size_t>(nfa.match)] = true;
    while (!stack.empty()) {
      const int t = stack.back();
      stack.pop_back();
      for (int s : into[static_cast<size_t>(t)]) {
        if (!nfa.live[static_cast<size_t>(s)]) {
          nfa.live[static_cast<size_t>(s)] = true;
          stack.push_back(s);
        }
      }
    }
  }

  RegexSource source_;
  std::vector<State> states_;
  std::vector<std::bitset<256>> byte_sets_;
  std::unordered_map<std::bitset<256>, int> byte_set_ids_;
};

class RegexConstraint final : public OutputConstraint {
 public:
  RegexConstraint(std::shared_ptr<const CompiledRegex> re, std::shared_ptr<RegexRequestWork> work)
      : re_(std::move(re)), work_(std::move(work)), set_(re_->nfa_->start_set) {}

  bool Advance(std::string_view bytes) override {
    CompiledRegex::Dfa& dfa = *re_->dfa_;
    int64_t scan_work = 0;
    int id = Current();
    for (char c : bytes) {
      id = dfa.Next(id, static_cast<uint8_t>(c), scan_work, work_->steps);
      if (id == CompiledRegex::Dfa::kDead) return false;
    }
    id_ = id;
    set_ = dfa.Set(id);
    return true;
  }
  bool CanEnd() const override {
    return std::binary_search(set_.begin(), set_.end(), re_->nfa_->match);
  }
  bool MustEnd() const override { return set_.size() == 1 && CanEnd(); }
  absl::Status Allowed(const TokenVocabulary& vocabulary, TokenSet& allowed) const override {
    CompiledRegex::Dfa& dfa = *re_->dfa_;
    if (dfa.Full()) dfa.Clear();
    const int from = Current();
    if (const TokenSet* kept = dfa.Allowed(from, vocabulary); kept != nullptr) {
      allowed = *kept;  // this state was scanned before: a text keeps coming back to it
      return absl::OkStatus();
    }
    std::vector<int32_t> ids;
    int64_t work = 0;
    bool over = false;
    const size_t states = dfa.states();
    const size_t entries = dfa.entries();
    internal::ScanVocabulary(
        vocabulary,
        [&](std::string_view bytes) {
          if (over) return false;
          int id = from;
          for (char c : bytes) {
            id = dfa.Next(id, static_cast<uint8_t>(c), work, work_->steps);
            if (id == CompiledRegex::Dfa::kDead) return false;
          }
          over = work > kMaxGuidedRegexScanWork || work_->steps > kMaxGuidedRegexRequestWork ||
                 dfa.GrewPast(states, entries);
          return !over;
        },
        ids);
    if (over) {
      if (dfa.Full()) dfa.Clear();  // what this scan built is not kept for later requests
      // The pattern's fault, whatever the load: not a status a client would retry.
      return absl::InvalidArgumentError(absl::StrCat(
          re_->guide_, ": following ", re_->text_,
          " over the vocabulary needs more automaton work than a request may take (",
          kMaxGuidedRegexScanWork, " steps a token, ", kMaxGuidedRegexRequestWork, " in all, ",
          2 * kMaxGuidedRegexDfaStates, " states); simplify it (", re_->scan_hint_, ")"));
    }
    allowed = TokenSet::Of(std::move(ids), vocabulary.bytes.size());
    dfa.KeepAllowed(from, vocabulary, allowed);
    return absl::OkStatus();
  }

 private:
  // This sequence's DFA state, interned again when the DFA started over.
  int Current() const {
    CompiledRegex::Dfa& dfa = *re_->dfa_;
    if (generation_ != dfa.generation() || id_ < 0) {
      id_ = dfa.Intern(set_, work_->steps);
      generation_ = dfa.generation();
    }
    return id_;
  }

  std::shared_ptr<const CompiledRegex> re_;
  std::shared_ptr<RegexRequestWork> work_;  // this sequence's request's (never null)
  std::vector<int> set_;                    // the NFA states the text so far reaches (sorted)
  mutable uint64_t generation_ = 0;
  mutable int id_ = -1;  // set_'s DFA state in generation_ (-1: not interned yet)
};

CompiledRegex::CompiledRegex() = default;
CompiledRegex::~CompiledRegex() = default;

absl::StatusOr<std::shared_ptr<const CompiledRegex>> CompiledRegex::Compile(
    std::string_view pattern) {
  if (pattern.size() > static_cast<size_t>(kMaxGuidedRegexBytes)) {
    return absl::InvalidArgumentError(
        absl::StrCat("guided_regex is ", pattern.size(), " bytes; at most ", kMaxGuidedRegexBytes));
  }
  const RegexSource source;
  ASSIGN_OR_RETURN(const Node root, ParsePattern(pattern, {.max_nesting = source.max_nesting}));
  return RegexCompiler(source).Compile(root);
}

absl::StatusOr<std::shared_ptr<const CompiledRegex>> CompiledRegex::CompileWritten(
    std::string_view pattern, RegexSource source) {
  bool too_deep = false;
  absl::StatusOr<Node> root =
      ParsePattern(pattern, {.max_nesting = source.max_nesting, .written = true}, &too_deep);
  if (too_deep) {  // the client's text nests too deep: its error
    return absl::InvalidArgumentError(
        absl::StrCat(source.guide, ": ", source.text, " nests deeper than its automaton may (",
                     source.max_nesting, " groups; ", source.hint, ")"));
  }
  if (!root.ok()) {
    return absl::InternalError(absl::StrCat(source.guide, ": the pattern written from ",
                                            source.text,
                                            " does not parse: ", root.status().message()));
  }
  return RegexCompiler(source).Compile(*root);
}

std::unique_ptr<OutputConstraint> CompiledRegex::NewConstraint(
    std::shared_ptr<const CompiledRegex> self, std::shared_ptr<RegexRequestWork> work) const {
  if (work == nullptr) work = std::make_shared<RegexRequestWork>();
  return std::make_unique<RegexConstraint>(std::move(self), std::move(work));
}

int CompiledRegex::nfa_states() const { return static_cast<int>(nfa_->states.size()); }

uint64_t CompiledRegex::dfa_restarts() const { return dfa_->generation(); }

size_t CompiledRegex::dfa_states() const { return dfa_->states(); }

bool CompiledRegex::MayTake(const std::bitset<256>& bytes) const {
  for (size_t s = 0; s < nfa_->states.size(); ++s) {
    const Nfa::State& x = nfa_->states[s];
    if (x.kind == Nfa::State::Kind::kBytes && nfa_->live[s] &&
        (nfa_->byte_sets[static_cast<size_t>(x.bytes)] & bytes).any()) {
      return true;
    }
  }
  return false;
}

bool CompiledRegex::MatchesOnlyTheEmptyText() const {
  return nfa_->start_set.size() == 1 && nfa_->start_set[0] == nfa_->match;
}

std::pair<int64_t, int64_t> CompiledRegex::MatchLengths() const {
  const Nfa& nfa = *nfa_;
  const size_t n = nfa.states.size();
  // The live states reachable from the start, and each one's ways on with their byte cost.
  auto next = [&](size_t s, auto&& visit) {
    const Nfa::State& x = nfa.states[s];
    for (int t : {x.out, x.out1}) {
      if (t >= 0 && nfa.live[static_cast<size_t>(t)]) {
        visit(static_cast<size_t>(t), x.kind == Nfa::State::Kind::kBytes ? 1 : 0);
      }
      if (x.kind == Nfa::State::Kind::kBytes) break;  // out1 is a split's only
    }
  };
  const size_t start = static_cast<size_t>(nfa.start);
  std::vector<bool> reached(n, false);
  std::vector<int> indegree(n, 0);
  std::vector<size_t> stack = {start};
  reached[start] = true;
  while (!stack.empty()) {
    const size_t s = stack.back();
    stack.pop_back();
    next(s, [&](size_t t, int) {
      ++indegree[t];
      if (!reached[t]) {
        reached[t] = true;
        stack.push_back(t);
      }
    });
  }
  // In topological order (Kahn's): the fewest and the most bytes to each state; a state left
  // over is on a cycle (a repetition without a bound).
  constexpr int64_t kUnreached = -1;
  std::vector<int64_t> fewest(n, kUnreached);
  std::vector<int64_t> most(n, kUnreached);
  fewest[start] = most[start] = 0;
  std::vector<size_t> ready = {start};
  size_t done = 0;
  while (!ready.empty()) {
    const size_t s = ready.back();
    ready.pop_back();
    ++done;
    next(s, [&](size_t t, int cost) {
      if (fewest[t] == kUnreached || fewest[s] + cost < fewest[t]) fewest[t] = fewest[s] + cost;
      most[t] = std::max(most[t], most[s] + cost);
      if (--indegree[t] == 0) ready.push_back(t);
    });
  }
  size_t reachable = 0;
  for (size_t s = 0; s < n; ++s) reachable += reached[s];
  const size_t match = static_cast<size_t>(nfa.match);
  if (done < reachable) {  // a cycle: unbounded (the fewest then from a walk that ignores it)
    std::vector<int64_t> best(n, kUnreached);
    std::deque<size_t> queue = {start};  // 0-1 breadth first
    best[start] = 0;
    while (!queue.empty()) {
      const size_t s = queue.front();
      queue.pop_front();
      next(s, [&](size_t t, int cost) {
        if (best[t] == kUnreached || best[s] + cost < best[t]) {
          best[t] = best[s] + cost;
          cost == 0 ? queue.push_front(t) : queue.push_back(t);
        }
      });
    }
    return {best[match], -1};
  }
  return {fewest[match], most[match]};
}

}  // namespace llmint8::coordinator
