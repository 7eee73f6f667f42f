// A grpc.health.v1.Health/Check client without generated stubs (Debian ships no health.proto
// client code): a raw unary call with the request and response hand-(de)serialized.
#ifndef LLMINT8_TOOLS_HEALTH_CLIENT_H_
#define LLMINT8_TOOLS_HEALTH_CLIENT_H_

#include <memory>
#include <string_view>

#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"

namespace llmint8::tools {

// Health of `service` ("": the server): 1 SERVING, 2 NOT_SERVING, 0 UNKNOWN, -1 when the call
// failed (unreachable, timeout, a name the server does not know). The coordinator reports
// "" SERVING only while its worker group is ready and it is not draining; "liveness" while
// it runs (common/health.h).
int HealthCheck(const std::shared_ptr<grpc::Channel>& channel, absl::Duration timeout,
                std::string_view service = "");

}  // namespace llmint8::tools

#endif  // LLMINT8_TOOLS_HEALTH_CLIENT_H_
