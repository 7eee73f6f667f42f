#include "coordinator/metrics_server.h"

#include <utility>

#include "common/status_macros.h"
#include "httplib.h"

namespace llmint8::coordinator {

absl::StatusOr<std::unique_ptr<MetricsServer>> MetricsServer::Start(
    const std::string& listen, std::function<std::string()> render, std::function<bool()> serving) {
  // Scrapes and probes are rare and cheap: one thread answers them.
  auto routes = [render = std::move(render),
                 serving = std::move(serving)](httplib::Server& server) {
    server.Get("/metrics", [render](const httplib::Request&, httplib::Response& res) {
      res.set_content(render(), "text/plain; version=0.0.4; charset=utf-8");
    });
    server.Get("/health", [serving](const httplib::Request&, httplib::Response& res) {
      const bool up = serving();
      res.status = up ? 200 : 503;
      res.set_content(up ? "SERVING\n" : "NOT_SERVING\n", "text/plain");
    });
  };
  ASSIGN_OR_RETURN(std::unique_ptr<HttpServer> http,
                   HttpServer::Start(listen, "--metrics_listen", 1, routes));
  return std::unique_ptr<MetricsServer>(new MetricsServer(std::move(http)));
}

}  // namespace llmint8::coordinator
