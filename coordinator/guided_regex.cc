#include "coordinator/guided_regex.h"

#include <algorithm>
#include <bitset>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "coordinator/vocabulary_scan.h"

namespace llmint8::coordinator {
namespace {

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

CharSet Digits() {
  CharSet s;
  s.AddRange('0', '9');
  return s;
}
CharSet Word() {
  CharSet s;
  s.AddRange('0', '9');
  s.AddRange('A', 'Z');
  s.AddRange('a', 'z');
  s.ascii.set('_');
  return s;
}
CharSet Space() {
  CharSet s;
  for (char c : std::string_view(" \t\n\r\f\v")) s.ascii.set(static_cast<size_t>(c));
  return s;
}
// Every character the set does not hold (its listed multi-byte ones must be none).
CharSet Complement(const CharSet& s) {
  CharSet c;
  c.ascii = ~s.ascii;
  c.all_multibyte = !s.all_multibyte;
  return c;
}

// One node of the parsed pattern.
struct Node {
  enum class Kind { kEmpty, kSet, kConcat, kAlt, kRepeat };
  Kind kind = Kind::kEmpty;
  CharSet set;                 // kSet
  std::vector<Node> children;  // kConcat, kAlt, kRepeat (one)
  int min = 0;
  int max = 0;  // kRepeat; -1: unbounded
};

Node SetNode(CharSet set) {
  Node n;
  n.kind = Node::Kind::kSet;
  n.set = std::move(set);
  return n;
}

// The UTF-8 bytes of code point `cp` (valid: not a surrogate, at most U+10FFFF).
std::string Utf8(uint32_t cp) {
  std::string out;
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return out;
}

// A character as a set: ASCII, or one listed multi-byte character.
CharSet CharOf(const std::string& utf8) {
  CharSet s;
  if (utf8.size() == 1) {
    s.ascii.set(static_cast<uint8_t>(utf8[0]));
  } else {
    s.multibyte.push_back(utf8);
  }
  return s;
}

class Parser {
 public:
  explicit Parser(std::string_view pattern) : p_(pattern) {}

  absl::StatusOr<Node> Parse() {
    if (Peek('^')) ++pos_;
    ASSIGN_OR_RETURN(Node n, Alternation());
    if (pos_ < p_.size()) return Error("an unbalanced ')'");
    return n;
  }

 private:
  absl::Status Error(std::string_view what) const {
    return absl::InvalidArgumentError(
        absl::StrCat("guided_regex: ", std::string(what), " at byte ", pos_, " of the pattern"));
  }
  bool Peek(char c) const { return pos_ < p_.size() && p_[pos_] == c; }
  bool AtEnd() const { return pos_ >= p_.size(); }

  absl::StatusOr<Node> Alternation() {
    if (++depth_ > 200) return Error("groups nested deeper than 200");
    Node alt;
    alt.kind = Node::Kind::kAlt;
    while (true) {
      ASSIGN_OR_RETURN(Node c, Concatenation());
      alt.children.push_back(std::move(c));
      if (!Peek('|')) break;
      ++pos_;
    }
    --depth_;
    if (alt.children.size() == 1) return std::move(alt.children[0]);
    return alt;
  }

  absl::StatusOr<Node> Concatenation() {
    Node cat;
    cat.kind = Node::Kind::kConcat;
    while (!AtEnd() && !Peek('|') && !Peek(')')) {
      if (Peek('$') && pos_ + 1 == p_.size()) {  // the end anchor: the match is whole anyway
        ++pos_;
        break;
      }
      ASSIGN_OR_RETURN(Node atom, Atom());
      ASSIGN_OR_RETURN(atom, Quantified(std::move(atom)));
      cat.children.push_back(std::move(atom));
    }
    if (cat.children.empty()) return Node{};
    if (cat.children.size() == 1) return std::move(cat.children[0]);
    return cat;
  }

  // The quantifiers after an atom, if any.
  absl::StatusOr<Node> Quantified(Node atom) {
    while (!AtEnd()) {
      int min = 0;
      int max = 0;
      const size_t at = pos_;
      if (Peek('*')) {
        max = -1;
        ++pos_;
      } else if (Peek('+')) {
        min = 1;
        max = -1;
        ++pos_;
      } else if (Peek('?')) {
        max = 1;
        ++pos_;
      } else if (Peek('{')) {
        if (!Counted(min, max)) {
          pos_ = at;
          break;  // a literal '{'
        }
        if (min > kMaxGuidedRegexRepeat || max > kMaxGuidedRegexRepeat) {
          pos_ = at;
          return Error(absl::StrCat("a repetition count over ", kMaxGuidedRegexRepeat));
        }
        if (max >= 0 && max < min) {
          pos_ = at;
          return Error("a repetition {m,n} with n < m");
        }
      } else {
        break;
      }
      if (Peek('?')) ++pos_;  // lazy: the same whole matches
      if (Peek('+')) return Error("a possessive quantifier");
      Node r;
      r.kind = Node::Kind::kRepeat;
      r.min = min;
      r.max = max;
      r.children.push_back(std::move(atom));
      atom = std::move(r);
    }
    return atom;
  }

  // {m}, {m,} or {m,n} at pos_: advances past it and true, or false (then it is a literal).
  bool Counted(int& min, int& max) {
    size_t i = pos_ + 1;
    auto number = [&](int& out) {
      const size_t start = i;
      long long v = 0;
      while (i < p_.size() && p_[i] >= '0' && p_[i] <= '9' && i - start < 6) {
        v = v * 10 + (p_[i] - '0');
        ++i;
      }
      out = static_cast<int>(v);
      return i > start;
    };
    if (!number(min)) return false;
    if (i < p_.size() && p_[i] == '}') {
      max = min;
    } else if (i < p_.size() && p_[i] == ',') {
      ++i;
      if (i < p_.size() && p_[i] == '}') {
        max = -1;
      } else if (!number(max) || i >= p_.size() || p_[i] != '}') {
        return false;
      }
    } else {
      return false;
    }
    pos_ = i + 1;
    return true;
  }

  absl::StatusOr<Node> Atom() {
    const char c = p_[pos_];
    switch (c) {
      case '(': {
        ++pos_;
        if (Peek('?')) {
          const std::string_view rest = p_.substr(pos_);
          if (rest.starts_with("?:")) {
            pos_ += 2;
          } else if (rest.starts_with("?P<") || (rest.starts_with("?<") && rest.size() > 2 &&
                                                 rest[2] != '=' && rest[2] != '!')) {
            const size_t close = p_.find('>', pos_);
            if (close == std::string_view::npos) return Error("an unterminated group name");
            pos_ = close + 1;
          } else {
            return Error("a lookaround, inline flag or other (? group (not served)");
          }
        }
        ASSIGN_OR_RETURN(Node inner, Alternation());
        if (!Peek(')')) return Error("an unclosed '('");
        ++pos_;
        return inner;
      }
      case ')':
        return Error("an unbalanced ')'");
      case '[':
        return Class();
      case '.': {
        ++pos_;
        CharSet any = Complement(CharSet{});
        any.ascii.reset('\n');
        return SetNode(std::move(any));
      }
      case '\\':
        return Escape();
      case '*':
      case '+':
      case '?':
        return Error("a quantifier with nothing before it");
      case '^':
      case '$':
        return Error("an anchor inside the pattern (only ^ first and $ last are served)");
      default: {
        ASSIGN_OR_RETURN(std::string ch, Character());
        return SetNode(CharOf(ch));
      }
    }
  }

  // One UTF-8 character of the pattern at pos_.
  absl::StatusOr<std::string> Character() {
    const uint8_t b = static_cast<uint8_t>(p_[pos_]);
    const size_t len = b < 0x80 ? 1 : b >= 0xF0 ? 4 : b >= 0xE0 ? 3 : b >= 0xC0 ? 2 : 0;
    if (len == 0 || pos_ + len > p_.size()) return Error("a byte that is not UTF-8");
    std::string ch(p_.substr(pos_, len));
    pos_ += len;
    return ch;
  }

  // An escape at pos_ ('\\'): a set (\d ...) or one character.
  absl::StatusOr<CharSet> EscapeSet() {
    ++pos_;
    if (AtEnd()) return Error("a '\\' at the end");
    const char e = p_[pos_++];
    switch (e) {
      case 'd':
        return Digits();
      case 'D':
        return Complement(Digits());
      case 'w':
        return Word();
      case 'W':
        return Complement(Word());
      case 's':
        return Space();
      case 'S':
        return Complement(Space());
      case 'n':
        return CharOf("\n");
      case 't':
        return CharOf("\t");
      case 'r':
        return CharOf("\r");
      case 'f':
        return CharOf("\f");
      case 'v':
        return CharOf("\v");
      case 'x':
      case 'u': {
        const size_t digits = e == 'x' ? 2 : 4;
        if (pos_ + digits > p_.size()) return Error("a short \\x or \\u escape");
        uint32_t cp = 0;
        for (size_t i = 0; i < digits; ++i) {
          const char h = p_[pos_ + i];
          const int v = h >= '0' && h <= '9'   ? h - '0'
                        : h >= 'a' && h <= 'f' ? h - 'a' + 10
                        : h >= 'A' && h <= 'F' ? h - 'A' + 10
                                               : -1;
          if (v < 0) return Error("a \\x or \\u escape with a non-hex digit");
          cp = cp << 4 | static_cast<uint32_t>(v);
        }
        pos_ += digits;
        if (cp >= 0xD800 && cp <= 0xDFFF) return Error("a surrogate escape");
        return CharOf(Utf8(cp));
      }
      default:
        if ((e >= '0' && e <= '9') || (e >= 'a' && e <= 'z') || (e >= 'A' && e <= 'Z')) {
          --pos_;
          return Error(absl::StrCat("the escape \\", std::string(1, e),
                                    " (backreferences, word boundaries and the like are not "
                                    "served)"));
        }
        if (static_cast<uint8_t>(e) >= 0x80) {
          --pos_;
          ASSIGN_OR_RETURN(std::string ch, Character());
          return CharOf(ch);
        }
        return CharOf(std::string(1, e));  // escaped punctuation
    }
  }

  absl::StatusOr<Node> Escape() {
    ASSIGN_OR_RETURN(CharSet s, EscapeSet());
    return SetNode(std::move(s));
  }

  absl::StatusOr<Node> Class() {
    ++pos_;  // '['
    const bool negated = Peek('^');
    if (negated) ++pos_;
    CharSet set;
    bool first = true;
    while (true) {
      if (AtEnd()) return Error("an unclosed '['");
      if (Peek(']') && !first) {
        ++pos_;
        break;
      }
      first = false;
      CharSet item;
      std::string lo_char;
      if (Peek('\\')) {
        ASSIGN_OR_RETURN(item, EscapeSet());
        if (item.ascii.count() == 1 && !item.all_multibyte && item.multibyte.empty()) {
          for (size_t c = 0; c < 128; ++c) {
            if (item.ascii[c]) lo_char = std::string(1, static_cast<char>(c));
          }
        } else if (item.ascii.none() && item.multibyte.size() == 1 && !item.all_multibyte) {
          lo_char = item.multibyte[0];
        }
      } else {
        ASSIGN_OR_RETURN(lo_char, Character());
        item = CharOf(lo_char);
      }
      // A range a-b (a '-' before ']' is a literal).
      if (!lo_char.empty() && Peek('-') && pos_ + 1 < p_.size() && p_[pos_ + 1] != ']') {
        ++pos_;
        std::string hi_char;
        if (Peek('\\')) {
          ASSIGN_OR_RETURN(CharSet hi, EscapeSet());
          if (hi.ascii.count() != 1 || hi.all_multibyte || !hi.multibyte.empty()) {
            return Error("a class range that ends in a set or a non-ASCII character");
          }
          for (size_t c = 0; c < 128; ++c) {
            if (hi.ascii[c]) hi_char = std::string(1, static_cast<char>(c));
          }
        } else {
          ASSIGN_OR_RETURN(hi_char, Character());
        }
        if (lo_char.size() != 1 || hi_char.size() != 1) {
          return Error("a class range of non-ASCII characters (not served)");
        }
        if (hi_char[0] < lo_char[0]) return Error("a class range out of order");
        item = CharSet{};
        item.AddRange(lo_char[0], hi_char[0]);
      }
      set.Add(item);
    }
    if (negated) {
      if (!set.multibyte.empty()) {
        return Error("a negated class that lists non-ASCII characters (not served)");
      }
      set = Complement(set);
    }
    return SetNode(std::move(set));
  }

  std::string_view p_;
  size_t pos_ = 0;
  int depth_ = 0;
};

}  // namespace

// Thompson's construction: each fragment has a start and an end (a kSplit without ways on,
// linked later).
class RegexCompiler {
 public:
  struct Fragment {
    int start;
    int end;
  };

  absl::StatusOr<std::shared_ptr<const CompiledRegex>> Compile(const Node& root) {
    ASSIGN_OR_RETURN(Fragment f, Build(root));
    auto re = std::make_shared<CompiledRegex>();
    states_.push_back({.kind = CompiledRegex::State::Kind::kMatch});
    re->match_ = static_cast<int>(states_.size()) - 1;
    states_[static_cast<size_t>(f.end)].out = re->match_;
    re->states_ = std::move(states_);
    RETURN_IF_ERROR(Finish(f.start, *re));
    if (re->start_.empty()) {
      return absl::InvalidArgumentError("guided_regex: the pattern matches no string");
    }
    return re;
  }

 private:
  using State = CompiledRegex::State;

  absl::StatusOr<int> Add(State s) {
    if (states_.size() >= static_cast<size_t>(kMaxGuidedRegexStates)) {
      return absl::InvalidArgumentError(
          absl::StrCat("guided_regex: the pattern needs more than ", kMaxGuidedRegexStates,
                       " automaton states (fewer or smaller repetition counts)"));
    }
    states_.push_back(s);
    return static_cast<int>(states_.size()) - 1;
  }
  absl::StatusOr<int> Nop() { return Add({.kind = State::Kind::kSplit}); }
  void Link(int from_end, int to) { states_[static_cast<size_t>(from_end)].out = to; }

  // A fragment for one byte sequence of ranges.
  absl::StatusOr<Fragment> Ranges(const std::vector<std::pair<uint8_t, uint8_t>>& ranges) {
    ASSIGN_OR_RETURN(const int end, Nop());
    int next = end;
    for (size_t i = ranges.size(); i-- > 0;) {
      ASSIGN_OR_RETURN(next, Add({.kind = State::Kind::kRange,
                                  .lo = ranges[i].first,
                                  .hi = ranges[i].second,
                                  .out = next}));
    }
    return Fragment{next, end};
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

  absl::StatusOr<Fragment> Set(const CharSet& set) {
    std::vector<Fragment> alts;
    for (int c = 0; c < 128;) {  // ASCII runs as one range each
      if (!set.ascii[static_cast<size_t>(c)]) {
        ++c;
        continue;
      }
      int hi = c;
      while (hi + 1 < 128 && set.ascii[static_cast<size_t>(hi + 1)]) ++hi;
      ASSIGN_OR_RETURN(Fragment f, Ranges({{static_cast<uint8_t>(c), static_cast<uint8_t>(hi)}}));
      alts.push_back(f);
      c = hi + 1;
    }
    if (set.all_multibyte) {  // every well-formed multi-byte UTF-8 character
      using R = std::vector<std::pair<uint8_t, uint8_t>>;
      for (const R& r : {R{{0xC2, 0xDF}, {0x80, 0xBF}}, R{{0xE0, 0xE0}, {0xA0, 0xBF}, {0x80, 0xBF}},
                         R{{0xE1, 0xEC}, {0x80, 0xBF}, {0x80, 0xBF}},
                         R{{0xED, 0xED}, {0x80, 0x9F}, {0x80, 0xBF}},
                         R{{0xEE, 0xEF}, {0x80, 0xBF}, {0x80, 0xBF}},
                         R{{0xF0, 0xF0}, {0x90, 0xBF}, {0x80, 0xBF}, {0x80, 0xBF}},
                         R{{0xF1, 0xF3}, {0x80, 0xBF}, {0x80, 0xBF}, {0x80, 0xBF}},
                         R{{0xF4, 0xF4}, {0x80, 0x8F}, {0x80, 0xBF}, {0x80, 0xBF}}}) {
        ASSIGN_OR_RETURN(Fragment f, Ranges(r));
        alts.push_back(f);
      }
    } else {
      for (const std::string& ch : set.multibyte) {
        std::vector<std::pair<uint8_t, uint8_t>> r;
        for (char b : ch) r.emplace_back(static_cast<uint8_t>(b), static_cast<uint8_t>(b));
        ASSIGN_OR_RETURN(Fragment f, Ranges(r));
        alts.push_back(f);
      }
    }
    if (alts.empty()) {  // matches no character: a dead end
      ASSIGN_OR_RETURN(const int start, Nop());
      ASSIGN_OR_RETURN(const int end, Nop());
      return Fragment{start, end};  // start leads nowhere
    }
    return Either(alts);
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

  // The closures, pruned to the states from which the match can be reached.
  static absl::Status Finish(int start, CompiledRegex& re) {
    const std::vector<State>& st = re.states_;
    const size_t n = st.size();
    std::vector<int> stamp(n, -1);
    int round = 0;
    auto closure = [&](int from) {
      std::vector<int> out;
      std::vector<int> stack = {from};
      ++round;
      while (!stack.empty()) {
        const int s = stack.back();
        stack.pop_back();
        if (s < 0 || stamp[static_cast<size_t>(s)] == round) continue;
        stamp[static_cast<size_t>(s)] = round;
        const State& x = st[static_cast<size_t>(s)];
        if (x.kind == State::Kind::kSplit) {
          stack.push_back(x.out1);
          stack.push_back(x.out);
        } else {
          out.push_back(s);
        }
      }
      std::sort(out.begin(), out.end());
      return out;
    };
    std::vector<std::vector<int>> after(n);
    size_t entries = 0;
    for (size_t s = 0; s < n; ++s) {
      if (st[s].kind != State::Kind::kRange) continue;
      after[s] = closure(st[s].out);
      // Many optional parts in a row reach each other without a byte: the closures grow as
      // the square of the states.
      entries += after[s].size();
      if (entries > static_cast<size_t>(kMaxGuidedRegexClosureEntries)) {
        return absl::InvalidArgumentError(
            "guided_regex: the pattern's optional parts reach too many states of one another "
            "(fewer optional repetitions)");
      }
    }
    // Live: the match, and a range state whose byte leads to a live state.
    std::vector<bool> live(n, false);
    live[static_cast<size_t>(re.match_)] = true;
    for (bool changed = true; changed;) {
      changed = false;
      for (size_t s = 0; s < n; ++s) {
        if (live[s] || st[s].kind != State::Kind::kRange) continue;
        for (int t : after[s]) {
          if (live[static_cast<size_t>(t)]) {
            live[s] = true;
            changed = true;
            break;
          }
        }
      }
    }
    auto prune = [&](std::vector<int> v) {
      std::erase_if(v, [&](int t) { return !live[static_cast<size_t>(t)]; });
      return v;
    };
    re.after_.resize(n);
    for (size_t s = 0; s < n; ++s) {
      if (live[s] && st[s].kind == State::Kind::kRange) re.after_[s] = prune(after[s]);
    }
    re.start_ = prune(closure(start));
    return absl::OkStatus();
  }

  std::vector<State> states_;
};

namespace {

class RegexConstraint final : public OutputConstraint {
 public:
  explicit RegexConstraint(std::shared_ptr<const CompiledRegex> re)
      : re_(std::move(re)), active_(re_->start()), stamp_(re_->states().size(), 0) {}

  bool Advance(std::string_view bytes) override {
    std::vector<int> next = active_;
    if (!Feed(next, bytes)) return false;
    active_ = std::move(next);
    return true;
  }
  bool CanEnd() const override {
    return std::binary_search(active_.begin(), active_.end(), re_->match_state());
  }
  bool MustEnd() const override { return active_.size() == 1 && CanEnd(); }
  void AllowedTokens(const TokenVocabulary& vocabulary, std::vector<int32_t>& ids) const override {
    internal::ScanVocabulary(
        vocabulary,
        [this](std::string_view bytes) {
          scratch_ = active_;
          return Feed(scratch_, bytes);
        },
        ids);
  }

 private:
  // Runs `bytes` from the states `set` (sorted); false when no state is left.
  bool Feed(std::vector<int>& set, std::string_view bytes) const {
    const std::vector<CompiledRegex::State>& st = re_->states();
    for (char c : bytes) {
      const uint8_t b = static_cast<uint8_t>(c);
      ++round_;
      next_.clear();
      for (int s : set) {
        const CompiledRegex::State& x = st[static_cast<size_t>(s)];
        if (x.kind != CompiledRegex::State::Kind::kRange || b < x.lo || b > x.hi) continue;
        for (int t : re_->after(s)) {
          if (stamp_[static_cast<size_t>(t)] != round_) {
            stamp_[static_cast<size_t>(t)] = round_;
            next_.push_back(t);
          }
        }
      }
      if (next_.empty()) return false;
      std::sort(next_.begin(), next_.end());
      set.swap(next_);
    }
    return true;
  }

  std::shared_ptr<const CompiledRegex> re_;
  std::vector<int> active_;  // sorted: the kRange and kMatch states the text so far reaches
  // Scratch of Feed and of the scan (the scheduler's thread only).
  mutable std::vector<int> scratch_;
  mutable std::vector<int> next_;
  mutable std::vector<uint32_t> stamp_;
  mutable uint32_t round_ = 0;
};

}  // namespace

absl::StatusOr<std::shared_ptr<const CompiledRegex>> CompiledRegex::Compile(
    std::string_view pattern) {
  if (pattern.size() > static_cast<size_t>(kMaxGuidedRegexBytes)) {
    return absl::InvalidArgumentError(
        absl::StrCat("guided_regex is ", pattern.size(), " bytes; at most ", kMaxGuidedRegexBytes));
  }
  ASSIGN_OR_RETURN(const Node root, Parser(pattern).Parse());
  return RegexCompiler().Compile(root);
}

std::unique_ptr<OutputConstraint> CompiledRegex::NewConstraint(
    std::shared_ptr<const CompiledRegex> self) const {
  return std::make_unique<RegexConstraint>(std::move(self));
}

}  // namespace llmint8::coordinator
