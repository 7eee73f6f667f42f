// UTF-8 by Unicode's table of well-formed byte sequences: reading, writing, and the lead byte's
// rule, for the tokenizer and for guided decoding's byte-level languages.
#ifndef LLMINT8_COORDINATOR_UTF8_H_
#define LLMINT8_COORDINATOR_UTF8_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace llmint8::coordinator {

// What a lead byte asks of the bytes after it: the sequence's length (1 for ASCII) and the
// range of its second byte (the later ones are 0x80-0xBF); the ranges rule out overlong forms,
// surrogates and code points past U+10FFFF.
struct Utf8Lead {
  int length = 1;
  uint8_t lo = 0x80;
  uint8_t hi = 0xBF;

  friend bool operator==(const Utf8Lead&, const Utf8Lead&) = default;
};
// nullopt for a byte no well-formed sequence starts with (a continuation byte, 0xC0, 0xC1,
// 0xF5-0xFF).
std::optional<Utf8Lead> Utf8LeadOf(uint8_t b);

struct Utf8Seq {
  enum Kind { kValid, kInvalid, kTruncated } kind;
  size_t len;       // bytes: the sequence (kValid), the maximal invalid subpart (kInvalid), or
                    // the valid prefix that runs into the end of the input (kTruncated)
  char32_t cp = 0;  // kValid only
};
// Classifies the sequence starting at s[i] (i < s.size()).
Utf8Seq ReadUtf8(std::string_view s, size_t i);

// Appends code point `cp` (at most U+10FFFF, not a surrogate) as UTF-8.
void AppendUtf8(char32_t cp, std::string& out);

}  // namespace llmint8::coordinator

#endif  // LLMINT8_COORDINATOR_UTF8_H_
