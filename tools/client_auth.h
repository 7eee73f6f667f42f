// The clients of the binary (generate, loadtest) send the API key of LLMINT8_API_KEY when it
// is set, as the coordinator expects it (coordinator/api_key.h).
#ifndef LLMINT8_TOOLS_CLIENT_AUTH_H_
#define LLMINT8_TOOLS_CLIENT_AUTH_H_

#include <cstdlib>
#include <string>

#include "coordinator/api_key.h"
#include "grpcpp/client_context.h"

namespace llmint8::tools {

inline void AddApiKey(grpc::ClientContext& ctx) {
  const char* key = std::getenv(coordinator::kApiKeyEnv);
  if (key != nullptr && *key != '\0')
    ctx.AddMetadata("authorization", std::string("Bearer ") + key);
}

}  // namespace llmint8::tools

#endif  // LLMINT8_TOOLS_CLIENT_AUTH_H_
