// The clients of the binary (generate, loadtest, and workers calling the rendezvous) reach the
// coordinator over TLS when --tls_ca_file is set (with this client's certificate when
// --tls_cert_file is: common/tls.h), and send the API key of LLMINT8_API_KEY when it is set, as
// the coordinator expects it (coordinator/api_key.h).
#ifndef LLMINT8_TOOLS_CLIENT_AUTH_H_
#define LLMINT8_TOOLS_CLIENT_AUTH_H_

#include <cstdlib>
#include <memory>
#include <string>

#include "absl/flags/flag.h"
#include "common/tls.h"
#include "coordinator/api_key.h"
#include "grpcpp/client_context.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/support/channel_arguments.h"
#include "tools/flags.h"

namespace llmint8::tools {

inline void AddApiKey(grpc::ClientContext& ctx) {
  const char* key = std::getenv(coordinator::kApiKeyEnv);
  if (key != nullptr && *key != '\0')
    ctx.AddMetadata("authorization", std::string("Bearer ") + key);
}

// What a client adds to an UNAUTHENTICATED answer (the server asks for its API key): where the
// key it sends comes from. Empty for other codes.
inline std::string ApiKeyHint(grpc::StatusCode code) {
  if (code != grpc::StatusCode::UNAUTHENTICATED) return "";
  const char* key = std::getenv(coordinator::kApiKeyEnv);
  return key != nullptr && *key != '\0'
             ? " (the key in LLMINT8_API_KEY was refused)"
             : " (this command sends the key in LLMINT8_API_KEY: set it to the server's key)";
}

// INVALID_ARGUMENT naming the flag for a file that will not do.
inline absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> ClientCredentialsFromFlags() {
  return GrpcChannelCredentials({.ca_file = absl::GetFlag(FLAGS_tls_ca_file),
                                 .cert_file = absl::GetFlag(FLAGS_tls_cert_file),
                                 .key_file = absl::GetFlag(FLAGS_tls_key_file)});
}

// Where `generate` and `loadtest` call the coordinator: --coordinator, default 127.0.0.1:50051.
inline std::string CoordinatorTargetFromFlags() {
  const std::string flag = absl::GetFlag(FLAGS_coordinator);
  return flag.empty() ? "127.0.0.1:50051" : flag;
}

// How often a client pings a coordinator that sends nothing, and how long it waits for the
// answer: a host that vanished, a cut network or a frozen process sends no reset, and a
// stream only reading would wait for ever. (The coordinator takes pings every 10 s and more
// seldom: kClientPingTimeout.)
inline constexpr int kClientKeepaliveMs = 20'000;
inline constexpr int kClientKeepaliveTimeoutMs = 10'000;

// A channel to that target with the credentials above, pinging as above.
inline absl::StatusOr<std::shared_ptr<grpc::Channel>> CoordinatorChannelFromFlags() {
  absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> credentials =
      ClientCredentialsFromFlags();
  if (!credentials.ok()) return credentials.status();
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, kClientKeepaliveMs);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, kClientKeepaliveTimeoutMs);
  // Pings go on while a stream waits for tokens (gRPC stops after 2 without data otherwise).
  args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  return grpc::CreateCustomChannel(CoordinatorTargetFromFlags(), *credentials, args);
}

}  // namespace llmint8::tools

#endif  // LLMINT8_TOOLS_CLIENT_AUTH_H_
