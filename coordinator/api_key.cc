#include "coordinator/api_key.h"

#include <cstdlib>

namespace llmint8::coordinator {

ApiKey ApiKey::FromEnvironment() {
  const char* key = std::getenv(kApiKeyEnv);
  return ApiKey(key != nullptr ? key : "");
}

absl::Status ApiKey::Check(std::string_view authorization) const {
  if (!required()) return absl::OkStatus();
  constexpr std::string_view kBearer = "Bearer ";
  if (authorization.substr(0, kBearer.size()) != kBearer) {
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
