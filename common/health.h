// What the servers' grpc.health.v1 (gRPC C++'s default health service) answers, per service
// name, so that a Kubernetes liveness probe and a readiness probe can ask the same port:
//
//   ""          readiness: the coordinator while its worker group serves and it is not
//               draining; a worker while it is not draining. Stock tools ask this one.
//   readiness   the same, under the names the server lists (the coordinator's
//               "llmint8.v1.Generation").
//   "liveness"  SERVING from start until the server shuts down, whatever the group does: a
//               liveness probe must not restart a coordinator that waits for its workers or a
//               process that drains.
//
// gRPC's default service knows only "" unless a name is set, so every name is set here once
// at start (unknown names answer NOT_FOUND). Server::Shutdown turns them all NOT_SERVING.
#ifndef LLMINT8_COMMON_HEALTH_H_
#define LLMINT8_COMMON_HEALTH_H_

#include <grpcpp/grpcpp.h>

#include <initializer_list>
#include <string_view>

namespace llmint8 {

inline constexpr std::string_view kLivenessHealthService = "liveness";

// Sets "" and each of `readiness_services` to `ready`, and "liveness" to SERVING. Call it once
// at start and at every change of readiness. Thread-safe (the health service locks).
void SetHealth(grpc::Server& server, bool ready,
               std::initializer_list<std::string_view> readiness_services = {});

}  // namespace llmint8

#endif  // LLMINT8_COMMON_HEALTH_H_
