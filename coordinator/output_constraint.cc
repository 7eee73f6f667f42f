#include "coordinator/output_constraint.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <bitset>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "coordinator/tokenizer.h"
#include "coordinator/utf8.h"
#include "coordinator/vocabulary_scan.h"

namespace llmint8::coordinator {
namespace {

// ---- guided_choice -------------------------------------------------------------------------

class ChoiceConstraint final : public OutputConstraint {
 public:
  explicit ChoiceConstraint(std::vector<std::string> choices) : choices_(std::move(choices)) {
    for (size_t i = 0; i < choices_.size(); ++i) alive_.set(i);
  }

  bool Advance(std::string_view bytes) override {
    const std::bitset<kMaxGuidedChoices> next = Continuing(bytes);
    if (next.none()) return false;
    alive_ = next;
    offset_ += bytes.size();
    return true;
  }
  bool CanEnd() const override {
    for (size_t i = 0; i < choices_.size(); ++i) {
      if (alive_[i] && choices_[i].size() == offset_) return true;
    }
    return false;
  }
  bool MustEnd() const override {
    for (size_t i = 0; i < choices_.size(); ++i) {
      if (alive_[i] && choices_[i].size() > offset_) return false;
    }
    return true;
  }
  absl::Status Allowed(const TokenVocabulary& vocabulary, TokenSet& allowed) const override {
    std::vector<int32_t> ids;
    internal::ScanVocabulary(
        vocabulary, [this](std::string_view bytes) { return Continuing(bytes).any(); }, ids);
    allowed = TokenSet::Of(std::move(ids), vocabulary.bytes.size());
    return absl::OkStatus();
  }

 private:
  // The choices still alive that the output followed by `bytes` begins.
  std::bitset<kMaxGuidedChoices> Continuing(std::string_view bytes) const {
    std::bitset<kMaxGuidedChoices> next;
    for (size_t i = 0; i < choices_.size(); ++i) {
      if (alive_[i] && choices_[i].size() >= offset_ + bytes.size() &&
          std::string_view(choices_[i]).substr(offset_, bytes.size()) == bytes) {
        next.set(i);
      }
    }
    return next;
  }

  const std::vector<std::string> choices_;
  std::bitset<kMaxGuidedChoices> alive_;  // the choices the output so far begins
  size_t offset_ = 0;                     // bytes of output so far
};

// ---- json_object ---------------------------------------------------------------------------

// A pushdown automaton for one JSON object, a byte at a time. A value type: the vocabulary scan
// copies it for each token.
class JsonState {
 public:
  // Equal states take the same bytes (unequal ones may too: bits of closed levels linger).
  bool operator==(const JsonState&) const = default;
  template <typename H>
  friend H AbslHashValue(H h, const JsonState& s) {
    return H::combine(std::move(h), s.objects_, s.depth_, s.mode_, s.number_, s.in_key_, s.escape_,
                      s.hex_left_, s.hex_value_, s.surrogate_, s.utf8_left_, s.utf8_lo_, s.utf8_hi_,
                      s.literal_pos_, s.literal_, s.whitespace_run_, s.int_digits_);
  }

  // Takes byte `b`; false when no JSON object begins with the bytes so far and b (the state is
  // then unspecified: feed a copy).
  [[gnu::always_inline]] bool Feed(uint8_t b) {
    if (mode_ == Mode::kString) {  // the most common state, first
      whitespace_run_ = 0;
      return FeedString(b);
    }
    if (mode_ == Mode::kNumber) {
      if (FeedNumber(b)) return true;
      if (!NumberMayEnd()) return false;
      EndValue();  // b ends the number: it is the next thing after the value
    }
    // The object starts the output: no whitespace before it (a model would pad with it).
    if (IsWhitespace(b) && TakesWhitespace() && mode_ != Mode::kStart) {
      if (++whitespace_run_ > kMaxJsonWhitespaceRun) return false;
      return true;
    }
    whitespace_run_ = 0;
    switch (mode_) {
      case Mode::kStart:
        if (b != '{') return false;
        return Open('{');
      case Mode::kValue:
        return StartValue(b);
      case Mode::kValueOrClose:  // after '['
        if (b == ']') return Close('[');
        return StartValue(b);
      case Mode::kKeyOrClose:  // after '{'
        if (b == '}') return Close('{');
        [[fallthrough]];
      case Mode::kKey:  // after ',' in an object
        if (b != '"') return false;
        mode_ = Mode::kString;
        in_key_ = true;
        return true;
      case Mode::kColon:
        if (b != ':') return false;
        mode_ = Mode::kValue;
        return true;
      case Mode::kCommaOrClose:
        if (b == ',') {
          mode_ = Top() == '{' ? Mode::kKey : Mode::kValue;
          return true;
        }
        if (b == '}' || b == ']') return Close(static_cast<char>(b == '}' ? '{' : '['));
        return false;
      case Mode::kLiteral:
        if (b != static_cast<uint8_t>(literal_[literal_pos_])) return false;
        if (literal_[++literal_pos_] == '\0') EndValue();
        return true;
      case Mode::kString:  // taken first, above
      case Mode::kNumber:
      case Mode::kDone:
        return false;
    }
    return false;
  }

  bool Done() const { return mode_ == Mode::kDone; }
  // Inside a string, no escape or character begun: printable ASCII but '"' and '\\' leave
  // the state as it is.
  bool InPlainString() const {
    return mode_ == Mode::kString && !escape_ && hex_left_ == 0 && utf8_left_ == 0 &&
           surrogate_ == Surrogate::kNone;
  }

 private:
  enum class Mode : uint8_t {
    kStart,         // before the object: '{'
    kValue,         // a value must start
    kValueOrClose,  // after '[': a value or ']'
    kKeyOrClose,    // after '{': a key or '}'
    kKey,           // after ',' in an object: a key
    kColon,         // after a key
    kCommaOrClose,  // after a value in a container
    kString,        // inside a string (in_key_: an object's key)
    kNumber,        // inside a number (number_)
    kLiteral,       // inside true, false or null (literal_, literal_pos_)
    kDone,          // the object is closed: nothing may follow
  };
  // Where a number is: what may come next follows from it (RFC 8259's number grammar).
  enum class Number : uint8_t {
    kMinus,         // "-": a digit
    kZero,          // a leading 0: '.', 'e', or the end
    kInt,           // integer digits: a digit, '.', 'e', or the end
    kDot,           // ".": a digit
    kFraction,      // fraction digits: a digit, 'e', or the end
    kExponent,      // "e": a sign or a digit
    kExponentSign,  // "e+": a digit
    kExponentInt,   // an exponent digit: a second one or the end
    kExponentInt2,  // two exponent digits: the end (1e999 would be no double, inf to a reader)
  };

  static bool IsWhitespace(uint8_t b) { return b == ' ' || b == '\t' || b == '\n' || b == '\r'; }
  static bool IsDigit(uint8_t b) { return b >= '0' && b <= '9'; }
  static bool IsHex(uint8_t b) {
    return IsDigit(b) || (b >= 'a' && b <= 'f') || (b >= 'A' && b <= 'F');
  }

  bool TakesWhitespace() const {
    return mode_ != Mode::kString && mode_ != Mode::kLiteral && mode_ != Mode::kDone;
  }
  // The innermost open container: '{', '[', or '\0' outside any.
  char Top() const {
    if (depth_ == 0) return '\0';
    return (objects_ >> (depth_ - 1)) & 1 ? '{' : '[';
  }

  bool Open(char container) {
    if (depth_ == kMaxJsonDepth) return false;
    const uint64_t bit = uint64_t{1} << depth_;
    objects_ = container == '{' ? objects_ | bit : objects_ & ~bit;
    ++depth_;
    mode_ = container == '{' ? Mode::kKeyOrClose : Mode::kValueOrClose;
    return true;
  }
  bool Close(char container) {
    if (Top() != container) return false;
    --depth_;
    EndValue();
    return true;
  }
  void EndValue() {
    mode_ = depth_ == 0 ? Mode::kDone : Mode::kCommaOrClose;
    int_digits_ = 0;  // equal states after a number, whatever its length (the scan cache)
  }

  bool StartValue(uint8_t b) {
    switch (b) {
      case '{':
      case '[':
        return Open(static_cast<char>(b));
      case '"':
        mode_ = Mode::kString;
        in_key_ = false;
        return true;
      case 't':
      case 'f':
      case 'n':
        literal_ = b == 't' ? "true" : b == 'f' ? "false" : "null";
        literal_pos_ = 1;
        mode_ = Mode::kLiteral;
        return true;
      case '-':
        mode_ = Mode::kNumber;
        number_ = Number::kMinus;
        return true;
      default:
        if (!IsDigit(b)) return false;
        mode_ = Mode::kNumber;
        number_ = b == '0' ? Number::kZero : Number::kInt;
        int_digits_ = 1;
        return true;
    }
  }

  bool NumberMayEnd() const {
    return number_ == Number::kZero || number_ == Number::kInt || number_ == Number::kFraction ||
           number_ == Number::kExponentInt || number_ == Number::kExponentInt2;
  }
  // Whether b continues the number (else it may end it).
  bool FeedNumber(uint8_t b) {
    const bool digit = IsDigit(b);
    const bool exponent = b == 'e' || b == 'E';
    switch (number_) {
      case Number::kMinus:
        if (!digit) return false;
        number_ = b == '0' ? Number::kZero : Number::kInt;
        int_digits_ = 1;
        return true;
      case Number::kZero:
      case Number::kInt:
        if (digit && number_ == Number::kInt) {
          if (int_digits_ == kMaxJsonIntegerDigits) return false;
          ++int_digits_;
          return true;
        }
        if (b == '.') {
          number_ = Number::kDot;
          return true;
        }
        if (exponent) {
          number_ = Number::kExponent;
          return true;
        }
        return false;
      case Number::kDot:
      case Number::kFraction:
        if (digit) {
          number_ = Number::kFraction;
          return true;
        }
        if (exponent && number_ == Number::kFraction) {
          number_ = Number::kExponent;
          return true;
        }
        return false;
      case Number::kExponent:
        if (b == '+' || b == '-') {
          number_ = Number::kExponentSign;
          return true;
        }
        [[fallthrough]];
      case Number::kExponentSign:
      case Number::kExponentInt:
        if (!digit) return false;
        number_ = number_ == Number::kExponentInt ? Number::kExponentInt2 : Number::kExponentInt;
        return true;
      case Number::kExponentInt2:
        return false;
    }
    return false;
  }

  static uint8_t HexValue(uint8_t b) { return b <= '9' ? b - '0' : (b | 0x20) - 'a' + 10; }
  // A \uXXXX escape is whole: a high surrogate needs its low half next, as \uXXXX; a low one
  // comes only there (JSON parsers refuse lone surrogates).
  bool EndEscape() {
    const bool high = hex_value_ >= 0xD800 && hex_value_ <= 0xDBFF;
    const bool low = hex_value_ >= 0xDC00 && hex_value_ <= 0xDFFF;
    if (surrogate_ == Surrogate::kLow) {
      surrogate_ = Surrogate::kNone;
      return low;
    }
    if (low) return false;
    if (high) surrogate_ = Surrogate::kBackslash;
    return true;
  }

  [[gnu::always_inline]] bool FeedString(uint8_t b) {
    if (utf8_left_ > 0) {  // a continuation byte of a multi-byte character
      if (b < utf8_lo_ || b > utf8_hi_) return false;
      --utf8_left_;
      utf8_lo_ = 0x80;
      utf8_hi_ = 0xBF;
      return true;
    }
    if (hex_left_ > 0) {  // \uXXXX
      if (!IsHex(b)) return false;
      hex_value_ = static_cast<uint16_t>(hex_value_ << 4 | HexValue(b));
      if (--hex_left_ == 0) return EndEscape();
      return true;
    }
    if (surrogate_ == Surrogate::kBackslash) {  // a high surrogate's low half must follow
      if (b != '\\') return false;
      surrogate_ = Surrogate::kU;
      return true;
    }
    if (surrogate_ == Surrogate::kU) {
      if (b != 'u') return false;
      surrogate_ = Surrogate::kLow;
      hex_left_ = 4;
      hex_value_ = 0;
      return true;
    }
    if (escape_) {
      escape_ = false;
      switch (b) {
        case '"':
        case '\\':
        case '/':
        case 'b':
        case 'f':
        case 'n':
        case 'r':
        case 't':
          return true;
        case 'u':
          hex_left_ = 4;
          hex_value_ = 0;
          return true;
        default:
          return false;
      }
    }
    if (b == '"') {
      if (in_key_) {
        mode_ = Mode::kColon;
      } else {
        EndValue();
      }
      return true;
    }
    if (b == '\\') {
      escape_ = true;
      return true;
    }
    if (b < 0x20) return false;  // control characters are escaped in JSON
    if (b < 0x80) return true;
    // The lead byte of a UTF-8 character: its continuation bytes follow.
    const std::optional<Utf8Lead> lead = Utf8LeadOf(b);
    if (!lead.has_value()) return false;
    utf8_left_ = static_cast<uint8_t>(lead->length - 1);
    utf8_lo_ = lead->lo;
    utf8_hi_ = lead->hi;
    return true;
  }

  // Bit i: whether the container open at depth i is an object (else an array). Small, as the
  // state is copied for every token of the vocabulary.
  uint64_t objects_ = 0;
  static_assert(kMaxJsonDepth <= 64, "one bit per level of objects_");
  uint8_t depth_ = 0;
  Mode mode_ = Mode::kStart;
  Number number_ = Number::kInt;
  uint8_t int_digits_ = 0;  // the number's integer digits so far (<= kMaxJsonIntegerDigits)
  bool in_key_ = false;
  bool escape_ = false;
  uint8_t hex_left_ = 0;
  uint16_t hex_value_ = 0;  // of the \uXXXX escape so far
  // After a high surrogate's escape: its low half's "\", then "u", then its digits.
  enum class Surrogate : uint8_t { kNone, kBackslash, kU, kLow };
  Surrogate surrogate_ = Surrogate::kNone;
  uint8_t utf8_left_ = 0;
  uint8_t utf8_lo_ = 0x80;
  uint8_t utf8_hi_ = 0xBF;
  uint8_t literal_pos_ = 0;
  const char* literal_ = "";
  uint16_t whitespace_run_ = 0;
};

}  // namespace

namespace internal {

struct JsonScans {
  absl::Mutex mu;
  absl::flat_hash_map<JsonState, TokenSet> by_state ABSL_GUARDED_BY(mu);
};

// Whether `vocabulary` keeps a scan from `state`, then in `allowed`.
bool FindJsonScan(const TokenVocabulary& vocabulary, const JsonState& state, TokenSet& allowed) {
  if (vocabulary.json_scans == nullptr) return false;
  absl::MutexLock lock(&vocabulary.json_scans->mu);
  const auto it = vocabulary.json_scans->by_state.find(state);
  if (it == vocabulary.json_scans->by_state.end()) return false;
  allowed = it->second;
  return true;
}

void KeepJsonScan(const TokenVocabulary& vocabulary, const JsonState& state,
                  const TokenSet& allowed) {
  if (vocabulary.json_scans == nullptr) return;
  absl::MutexLock lock(&vocabulary.json_scans->mu);
  auto& kept = vocabulary.json_scans->by_state;
  if (kept.size() >= static_cast<size_t>(kMaxJsonScansKept)) kept.clear();
  kept.emplace(state, allowed);
}

}  // namespace internal

namespace {

class JsonObjectConstraint final : public OutputConstraint {
 public:
  bool Advance(std::string_view bytes) override {
    JsonState next = state_;
    if (!Feed(next, bytes)) return false;
    state_ = next;
    return true;
  }
  bool CanEnd() const override { return state_.Done(); }
  bool MustEnd() const override { return state_.Done(); }
  absl::Status Allowed(const TokenVocabulary& vocabulary, TokenSet& allowed) const override {
    // Inside a string the state stays the same from token to token: the last set is kept.
    if (last_vocabulary_ == vocabulary.id && last_state_ == state_) {
      allowed = last_;
      return absl::OkStatus();
    }
    if (!internal::FindJsonScan(vocabulary, state_, allowed)) {
      Scan(vocabulary, allowed);
      internal::KeepJsonScan(vocabulary, state_, allowed);
    }
    last_vocabulary_ = vocabulary.id;
    last_state_ = state_;
    last_ = allowed;
    return absl::OkStatus();
  }

  // Printable ASCII but '"' and '\\': what a string takes as it is.
  static bool IsPlainText(std::string_view bytes) {
    for (char c : bytes) {
      if (c < 0x20 || c > 0x7E || c == '"' || c == '\\') return false;
    }
    return true;
  }

 private:
  void Scan(const TokenVocabulary& vocabulary, TokenSet& allowed) const {
    if (state_.InPlainString()) {
      // Inside a string, where most tokens are plain text: those are taken as they are, and
      // the set is written as the others.
      allowed.allow = false;
      allowed.ids.clear();
      for (size_t id = 0; id < vocabulary.heads.size(); ++id) {
        const TokenVocabulary::Head head = vocabulary.heads[id];
        if (head.plain) continue;
        JsonState next = state_;
        if (head.size == 0 || !Feed(next, vocabulary.bytes[id])) {
          allowed.ids.push_back(static_cast<int32_t>(id));
        }
      }
      return;
    }
    std::vector<int32_t> ids;
    internal::ScanVocabulary(
        vocabulary,
        [this](std::string_view bytes) {
          JsonState next = state_;
          return Feed(next, bytes);
        },
        ids);
    allowed = TokenSet::Of(std::move(ids), vocabulary.bytes.size());
  }

  static bool Feed(JsonState& state, std::string_view bytes) {
    for (char c : bytes) {
      if (!state.Feed(static_cast<uint8_t>(c))) return false;
    }
    return true;
  }

  JsonState state_;
  // Allowed's last answer: for this vocabulary (TokenVocabulary::id; 0: none yet) and state.
  mutable uint64_t last_vocabulary_ = 0;
  mutable JsonState last_state_;
  mutable TokenSet last_;
};

}  // namespace

TokenVocabulary::TokenVocabulary(std::vector<std::string> token_bytes)
    : bytes(std::move(token_bytes)),
      heads(bytes.size()),
      json_scans(std::make_shared<internal::JsonScans>()) {
  static std::atomic<uint64_t> next_id{1};
  id = next_id.fetch_add(1, std::memory_order_relaxed);
  for (size_t t = 0; t < bytes.size(); ++t) {
    const std::string& b = bytes[t];
    Head& h = heads[t];
    h.first = b.empty() ? 0 : static_cast<uint8_t>(b[0]);
    h.second = b.size() < 2 ? 0 : static_cast<uint8_t>(b[1]);
    h.size = static_cast<uint8_t>(std::min<size_t>(b.size(), 255));
    h.plain = !b.empty() && JsonObjectConstraint::IsPlainText(b);
  }
}

TokenVocabulary TokenVocabulary::FromTokenizer(const Tokenizer& tokenizer) {
  std::vector<std::string> bytes(static_cast<size_t>(tokenizer.vocab_size()));
  for (int32_t id = 0; id < tokenizer.vocab_size(); ++id) {
    if (!tokenizer.HasId(id) || tokenizer.IsSpecial(id)) continue;
    const int32_t ids[] = {id};
    absl::StatusOr<std::string> b = tokenizer.DecodeBytes(ids);
    if (b.ok()) bytes[static_cast<size_t>(id)] = *std::move(b);
  }
  return TokenVocabulary(std::move(bytes));
}

namespace {

// The ids of [0, size) that `ids` (increasing) does not hold.
std::vector<int32_t> Others(const std::vector<int32_t>& ids, size_t size) {
  std::vector<int32_t> others;
  others.reserve(size > ids.size() ? size - ids.size() : 0);
  auto next = ids.begin();
  for (size_t id = 0; id < size; ++id) {
    if (next != ids.end() && *next == static_cast<int32_t>(id)) {
      ++next;
    } else {
      others.push_back(static_cast<int32_t>(id));
    }
  }
  return others;
}

}  // namespace

TokenSet TokenSet::Of(std::vector<int32_t> members, size_t size) {
  if (members.size() <= size / 2) return TokenSet{.allow = true, .ids = std::move(members)};
  return TokenSet{.allow = false, .ids = Others(members, size)};
}

std::vector<int32_t> TokenSet::Members(size_t size) const {
  return allow ? ids : Others(ids, size);
}

absl::Status OutputConstraint::AllowedTokens(const TokenVocabulary& vocabulary,
                                             std::vector<int32_t>& ids) const {
  TokenSet allowed;
  if (absl::Status s = Allowed(vocabulary, allowed); !s.ok()) return s;
  ids = allowed.Members(vocabulary.bytes.size());
  return absl::OkStatus();
}

absl::Status CheckGuidedChoices(const std::vector<std::string>& choices) {
  if (choices.empty() || choices.size() > static_cast<size_t>(kMaxGuidedChoices)) {
    return absl::InvalidArgumentError(absl::StrCat("guided_choice lists ", choices.size(),
                                                   " choices; give 1 to ", kMaxGuidedChoices));
  }
  size_t total = 0;
  for (size_t i = 0; i < choices.size(); ++i) {
    if (choices[i].empty() || choices[i].size() > static_cast<size_t>(kMaxGuidedChoiceBytes)) {
      return absl::InvalidArgumentError(absl::StrCat("guided_choice ", i, " is ", choices[i].size(),
                                                     " bytes; give 1 to ", kMaxGuidedChoiceBytes));
    }
    total += choices[i].size();
  }
  if (total > static_cast<size_t>(kMaxGuidedChoicesTotalBytes)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "guided_choice holds ", total, " bytes in all; at most ", kMaxGuidedChoicesTotalBytes));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<OutputConstraint>> OutputConstraint::Choice(
    std::vector<std::string> choices) {
  if (absl::Status valid = CheckGuidedChoices(choices); !valid.ok()) return valid;
  return std::make_unique<ChoiceConstraint>(std::move(choices));
}

std::unique_ptr<OutputConstraint> OutputConstraint::JsonObject() {
  return std::make_unique<JsonObjectConstraint>();
}

}  // namespace llmint8::coordinator
