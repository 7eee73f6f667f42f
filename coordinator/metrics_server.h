// A small HTTP server for Prometheus scrapes: GET /metrics answers with a text the caller
// renders (ServiceMetrics::Text), in the Prometheus text format.
//
// cpp-httplib, not prometheus-cpp's own exposer: that one runs civetweb threads with a 100 KiB
// stack, less than the static TLS the CUDA libraries (cuBLASLt: 92 KiB) bring into this
// process, so its threads cannot start here; std::thread's default stack has room.
#ifndef LLMINT8_COORDINATOR_METRICS_SERVER_H_
#define LLMINT8_COORDINATOR_METRICS_SERVER_H_

#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"

namespace httplib {
class Server;
}

namespace llmint8::coordinator {

class MetricsServer {
 public:
  // Listens on `listen` (host:port; port 0 picks a free one). `render` runs on the server's
  // threads for every scrape and must be thread-safe. Errors: a malformed address
  // (INVALID_ARGUMENT, common/host_port.h), a port that cannot be bound (UNAVAILABLE).
  static absl::StatusOr<std::unique_ptr<MetricsServer>> Start(const std::string& listen,
                                                              std::function<std::string()> render);
  ~MetricsServer();  // stops listening and joins

  int port() const { return port_; }

 private:
  MetricsServer() = default;

  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  int port_ = 0;
};

}  // namespace llmint8::coordinator

#endif  // LLMINT8_COORDINATOR_METRICS_SERVER_H_
