// A small plain-HTTP server for Prometheus scrapes: GET /metrics answers with a text the caller
// renders (ServiceMetrics::Text), in the Prometheus text format (coordinator/http_server.h);
// GET /health answers 200 while the coordinator serves (its group is ready and it is not
// draining), else 503: the Generation service's grpc.health.v1 status on the gRPC port, for
// readiness probes that cannot speak gRPC over TLS (the kubelet's cannot) when that port
// serves TLS. Not for liveness: a lost worker turns it 503 without anything to restart.
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
  // Listens on `listen` (host:port; port 0 picks a free one). `render` and `serving` run on
  // the server's thread for every request and must be thread-safe. Errors as
  // HttpServer::Start's.
  static absl::StatusOr<std::unique_ptr<MetricsServer>> Start(const std::string& listen,
                                                              std::function<std::string()> render,
                                                              std::function<bool()> serving);

  int port() const { return http_->port(); }

 private:
  explicit MetricsServer(std::unique_ptr<HttpServer> http) : http_(std::move(http)) {}

  std::unique_ptr<HttpServer> http_;
};

}  // namespace llmint8::coordinator

#endif  // LLMINT8_COORDINATOR_METRICS_SERVER_H_
