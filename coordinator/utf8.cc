#include "coordinator/utf8.h"

namespace llmint8::coordinator {

std::optional<Utf8Lead> Utf8LeadOf(uint8_t b) {
  if (b < 0x80) return Utf8Lead{.length = 1};
  if (b >= 0xC2 && b <= 0xDF) return Utf8Lead{.length = 2};
  if (b >= 0xE0 && b <= 0xEF) {
    return Utf8Lead{.length = 3,
                    .lo = static_cast<uint8_t>(b == 0xE0 ? 0xA0 : 0x80),   // no overlong forms
                    .hi = static_cast<uint8_t>(b == 0xED ? 0x9F : 0xBF)};  // no surrogates
  }
  if (b >= 0xF0 && b <= 0xF4) {
    return Utf8Lead{.length = 4,
                    .lo = static_cast<uint8_t>(b == 0xF0 ? 0x90 : 0x80),   // no overlong forms
                    .hi = static_cast<uint8_t>(b == 0xF4 ? 0x8F : 0xBF)};  // not past U+10FFFF
  }
  return std::nullopt;
}

Utf8Seq ReadUtf8(std::string_view s, size_t i) {
  const auto b0 = static_cast<uint8_t>(s[i]);
  const std::optional<Utf8Lead> lead = Utf8LeadOf(b0);
  if (!lead.has_value()) return {Utf8Seq::kInvalid, 1};
  if (lead->length == 1) return {Utf8Seq::kValid, 1, b0};
  char32_t cp = b0 & (0x7F >> lead->length);
  for (size_t k = 1; k < static_cast<size_t>(lead->length); ++k) {
    if (i + k >= s.size()) return {Utf8Seq::kTruncated, k};
    const auto b = static_cast<uint8_t>(s[i + k]);
    if (b < (k == 1 ? lead->lo : 0x80) || b > (k == 1 ? lead->hi : 0xBF)) {
      return {Utf8Seq::kInvalid, k};
    }
    cp = (cp << 6) | (b & 0x3F);
  }
  return {Utf8Seq::kValid, static_cast<size_t>(lead->length), cp};
}

void AppendUtf8(char32_t cp, std::string& out) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

}  // namespace llmint8::coordinator
