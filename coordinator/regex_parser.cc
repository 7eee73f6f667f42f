#include "coordinator/regex_parser.h"

#include <algorithm>
#include <cstdint>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "coordinator/guided_regex.h"
#include "coordinator/utf8.h"

namespace llmint8::coordinator::regex_internal {
namespace {

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

Node SetNode(CharSet set) {
  Node n;
  n.kind = Node::Kind::kSet;
  n.set = std::move(set);
  return n;
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
  Parser(std::string_view pattern, const ParseOptions& options)
      : p_(pattern),
        max_nesting_(options.max_nesting),
        ascii_complements_(options.ascii_complements),
        written_(options.written) {}

  absl::StatusOr<Node> Parse() {
    if (Peek('^')) ++pos_;
    ASSIGN_OR_RETURN(Node n, Alternation());
    if (pos_ < p_.size()) return Error("an unbalanced ')'");
    return n;
  }
  // Whether Parse failed for groups nested deeper than max_nesting.
  bool too_deep() const { return too_deep_; }

 private:
  absl::Status Error(std::string_view what) const {
    return absl::InvalidArgumentError(
        absl::StrCat("guided_regex: ", std::string(what), " at byte ", pos_, " of the pattern"));
  }
  bool Peek(char c) const { return pos_ < p_.size() && p_[pos_] == c; }
  bool AtEnd() const { return pos_ >= p_.size(); }

  absl::StatusOr<Node> Alternation() {
    if (++depth_ > max_nesting_) {
      too_deep_ = true;
      return Error(absl::StrCat("groups nested deeper than ", max_nesting_));
    }
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
        if (p_.substr(pos_).starts_with("{,")) {
          return Error("a count {,n} (Python reads {0,n}, ECMAScript the text: give {0,n})");
        }
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
      if (Peek('*') || Peek('?') || (Peek('{') && LooksCounted())) {
        return Error("a quantifier on a quantifier (group the first: (a*)*)");
      }
      Node r;
      r.kind = Node::Kind::kRepeat;
      r.min = min;
      r.max = max;
      r.children.push_back(std::move(atom));
      atom = std::move(r);
    }
    return atom;
  }

  // Whether a count {m...} starts at pos_ (a digit after the brace).
  bool LooksCounted() const {
    return pos_ + 1 < p_.size() && p_[pos_ + 1] >= '0' && p_[pos_ + 1] <= '9';
  }

  // {m}, {m,} or {m,n} at pos_: advances past it and true, or false (then it is a literal).
  // Counts of more than 6 digits read as 999999, over any limit.
  bool Counted(int& min, int& max) {
    size_t i = pos_ + 1;
    auto number = [&](int& out) {
      const size_t start = i;
      long long v = 0;
      while (i < p_.size() && p_[i] >= '0' && p_[i] <= '9') {
        v = std::min<long long>(v * 10 + (p_[i] - '0'), 999999);
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
          } else if (written_ && rest.starts_with("?!)")) {  // the set of no character
            pos_ += 3;
            return SetNode(CharSet{});
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
    const Utf8Seq seq = ReadUtf8(p_, pos_);
    if (seq.kind != Utf8Seq::kValid) return Error("a byte that is not UTF-8");
    std::string ch(p_.substr(pos_, seq.len));
    pos_ += seq.len;
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
        return Outside(Digits());
      case 'w':
        return Word();
      case 'W':
        return Outside(Word());
      case 's':
        return Space();
      case 'S':
        return Outside(Space());
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
        std::string ch;
        AppendUtf8(cp, ch);
        return CharOf(ch);
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

  // An escape's complement (\D \W \S): every other character, or the other ASCII ones.
  // With ascii_complements, \S leaves out 0x1C-0x1F too, which Python's re counts as spaces.
  CharSet Outside(const CharSet& s) const {
    CharSet c = Complement(s);
    if (ascii_complements_) {
      c.all_multibyte = false;
      if (s.ascii[' ']) {  // \S
        for (int x = 0x1C; x <= 0x1F; ++x) c.ascii.reset(static_cast<size_t>(x));
      }
    }
    return c;
  }

  std::string_view p_;
  size_t pos_ = 0;
  int max_nesting_;
  bool ascii_complements_;
  bool written_;
  int depth_ = 0;
  bool too_deep_ = false;
};

}  // namespace

absl::StatusOr<Node> ParsePattern(std::string_view pattern, const ParseOptions& options,
                                  bool* too_deep) {
  Parser parser(pattern, options);
  absl::StatusOr<Node> root = parser.Parse();
  if (too_deep != nullptr) *too_deep = !root.ok() && parser.too_deep();
  return root;
}

}  // namespace llmint8::coordinator::regex_internal
