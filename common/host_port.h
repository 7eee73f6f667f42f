// "host:port" listen addresses of the command-line flags (--listen, --metrics_listen).
#ifndef LLMINT8_COMMON_HOST_PORT_H_
#define LLMINT8_COMMON_HOST_PORT_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace llmint8 {

struct HostPort {
  std::string host;  // as given, without the brackets of "[::1]:9090"; may be empty (":9090")
  int port = 0;      // 0..65535; 0 asks the system for a free port
};

// Splits at the last ':'. InvalidArgument naming `flag` (e.g. "--listen") when there is no ':'
// or the port is not an integer in [0, 65535].
absl::StatusOr<HostPort> ParseHostPort(absl::string_view address, absl::string_view flag);

}  // namespace llmint8

#endif  // LLMINT8_COMMON_HOST_PORT_H_
