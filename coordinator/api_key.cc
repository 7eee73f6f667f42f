#include "coordinator/api_key.h"

#include <cctype>

namespace llmint8::coordinator {

namespace {

// By hand rather than absl's StripAsciiWhitespace / EqualsIgnoreCase: Debian's abseil has its
// own absl::string_view (ABSL_OPTION_USE_STD_STRING_VIEW 0), which std::string_view does not
// convert to implicitly.
bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

std::string_view Trim(std::string_view s) {
  while (!s.empty() && IsSpace(s.front())) s.remove_prefix(1);
  while (!s.empty() && IsSpace(s.back())) s.remove_suffix(1);
  return s;
}

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(a[i])) !=
        std::tolower(static_cast<unsigned char>(b[i]))) {
      return false;
    }
  }
  return true;
}

}  // namespace

ApiKey::ApiKey(std::string_view key) : key_(Trim(key)) {}

absl::Status ApiKey::Check(std::string_view authorization) const {
  if (!required()) return absl::OkStatus();
  constexpr std::string_view kBearer = "Bearer ";  // the scheme is case-insensitive (RFC 7235)
  if (!EqualsIgnoreCase(authorization.substr(0, kBearer.size()), kBearer)) {
    return absl::UnauthenticatedError(
        "this server needs an API key: send the header 'authorization: Bearer <key>'");
  }
  const std::string_view given = authorization.substr(kBearer.size());
  // Constant time in the key's content: no early exit on the first difference.
  unsigned diff = given.size() == key_.size() ? 0u : 1u;
  for (size_t i = 0; i < key_.size(); ++i) {
    diff |= static_cast<unsigned char>(key_[i]) ^
            static_cast<unsigned char>(i < given.size() ? given[i] : 0);
  }
  if (diff != 0) return absl::UnauthenticatedError("the API key is not valid");
  return absl::OkStatus();
}

}  // namespace llmint8::coordinator
