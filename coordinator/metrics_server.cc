#include "coordinator/metrics_server.h"

#include <utility>

#include "common/status_macros.h"
#include "httplib.h"

namespace llmint8::coordinator {

absl::StatusOr<std::unique_ptr<MetricsServer>> MetricsServer::Start(
    const std::string& listen, std::function<std::string()> render) {
  // Scrapes are rare and cheap: one thread answers them.
  ASSIGN_OR_RETURN(
      std::unique_ptr<HttpServer> http,
      HttpServer::Start(
          listen, "--metrics_listen", 1, [render = std::move(render)](httplib::Server& server) {
            server.Get("/metrics", [render](const httplib::Request&, httplib::Response& res) {
              res.set_content(render(), "text/plain; version=0.0.4; charset=utf-8");
            });
          }));
  return std::unique_ptr<MetricsServer>(new MetricsServer(std::move(http)));
}

}  // namespace llmint8::coordinator
