// gRPC's C++ server parses a request before any handler sees it, and answers one it cannot
// parse with INTERNAL and no message. For this API that is a client's error, nearly always a
// string field that is not UTF-8 (proto3 strings must be: GenerateRequest.text, its stop
// sequences, TokenizeRequest.text): this interceptor answers it INVALID_ARGUMENT, saying so.
//
//   builder.experimental().SetInterceptorCreators(ParseErrorInterceptors());
#ifndef LLMINT8_COORDINATOR_PARSE_ERROR_INTERCEPTOR_H_
#define LLMINT8_COORDINATOR_PARSE_ERROR_INTERCEPTOR_H_

#include <memory>
#include <vector>

#include "grpcpp/support/server_interceptor.h"

namespace llmint8::coordinator {

std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>>
ParseErrorInterceptors();

}  // namespace llmint8::coordinator

#endif  // LLMINT8_COORDINATOR_PARSE_ERROR_INTERCEPTOR_H_
