// The one place where absl::Status and grpc::Status convert (codes map one to one).
#ifndef LLMINT8_COMMON_GRPC_STATUS_H_
#define LLMINT8_COMMON_GRPC_STATUS_H_

#include <string_view>

#include "absl/status/status.h"
#include "grpcpp/support/status.h"

namespace llmint8 {

grpc::Status ToGrpcStatus(const absl::Status& status);
// `context` (e.g. "Step on worker 1 (127.0.0.1:50052)") is prepended to the message.
absl::Status FromGrpcStatus(const grpc::Status& status, std::string_view context = {});

}  // namespace llmint8

#endif  // LLMINT8_COMMON_GRPC_STATUS_H_
