// A small HTTP server for Prometheus scrapes: GET /metrics answers with a text the caller
// renders (ServiceMetrics::Text), in the Prometheus text format (coordinator/http_server.h).
#ifndef LLMINT8_COORDINATOR_METRICS_SERVER_H_
#define LLMINT8_COORDINATOR_METRICS_SERVER_H_

#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "coordinator/http_server.h"

namespace llmint8::coordinator {

class MetricsServer {
 public:
  // Listens on `listen` (host:port; port 0 picks a free one). `render` runs on the server's
  // thread for every scrape and must be thread-safe. Errors as HttpServer::Start's.
  static absl::StatusOr<std::unique_ptr<MetricsServer>> Start(const std::string& listen,
                                                              std::function<std::string()> render);

  int port() const { return http_->port(); }

 private:
  explicit MetricsServer(std::unique_ptr<HttpServer> http) : http_(std::move(http)) {}

  std::unique_ptr<HttpServer> http_;
};

}  // namespace llmint8::coordinator

#endif  // LLMINT8_COORDINATOR_METRICS_SERVER_H_
