// Optional shared-secret authentication of the public APIs: with a key configured (the
// LLMINT8_API_KEY environment variable of the coordinator / serve, e.g. from a Kubernetes
// Secret), every call of the gRPC Generation service and of the HTTP /v1/ routes must carry
// "authorization: Bearer <key>" (gRPC metadata or HTTP header); others get UNAUTHENTICATED
// (HTTP 401). Health checks, reflection, /metrics and the internal services stay open: the
// Rendezvous the workers form groups through listens on the same port as Generation, so
// restrict who can reach the coordinator's port to clients and workers (the NetworkPolicy of
// deploy/ guards the workers' ports). The key travels in clear text over plaintext gRPC and
// HTTP: serve TLS (--tls_cert_file, common/tls.h; --tls_client_ca_file also authenticates the
// workers and clients by certificate) or terminate it in front of the coordinator (an ingress
// or a proxy) when it crosses an untrusted network.
//
// Thread-safe (immutable).
#ifndef LLMINT8_COORDINATOR_API_KEY_H_
#define LLMINT8_COORDINATOR_API_KEY_H_

#include <string>
#include <string_view>

#include "absl/status/status.h"

namespace llmint8::coordinator {

inline constexpr char kApiKeyEnv[] = "LLMINT8_API_KEY";

class ApiKey {
 public:
  // Surrounding whitespace is dropped (a Secret made from a file ends with a newline); empty:
  // no authentication.
  explicit ApiKey(std::string_view key);

  bool required() const { return !key_.empty(); }
  // `authorization`: the header / metadata value as sent (empty when absent). OK when no key is
  // required or it is "Bearer <key>" (compared in constant time), else UNAUTHENTICATED.
  absl::Status Check(std::string_view authorization) const;

 private:
  std::string key_;
};

}  // namespace llmint8::coordinator

#endif  // LLMINT8_COORDINATOR_API_KEY_H_
