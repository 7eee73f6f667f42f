#include "coordinator/metrics_server.h"

#include <optional>
#include <utility>

#include "common/status_macros.h"
#include "coordinator/http_server.h"
#include "httplib.h"

namespace llmint8::coordinator {

absl::StatusOr<std::unique_ptr<MetricsServer>> MetricsServer::Start(
    const std::string& listen, std::function<std::string()> render, std::function<bool()> serving) {
  // Scrapes and probes are rare and cheap: two threads answer them.
  auto routes = [render = std::move(render),
                 serving = std::move(serving)](httplib::Server& server) {
    // Its routes take no body: refuse one unread, and let an idle scraper's kept-alive
    // connection go at once, so that the next probe finds a thread.
    server.set_keep_alive_timeout(0);
    server.set_pre_routing_handler([](const httplib::Request& req, httplib::Response& res) {
      const std::optional<BodyRefusal> refused =
          RefuseUnboundedBody(req, /*max_body_bytes=*/0, res);
      if (!refused.has_value()) return httplib::Server::HandlerResponse::Unhandled;
      res.set_content(refused->message + "\n", "text/plain");
      return httplib::Server::HandlerResponse::Handled;
    });
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
                   HttpServer::Start(listen, "--metrics_listen", 2, routes));
  return std::unique_ptr<MetricsServer>(new MetricsServer(std::move(http)));
}

}  // namespace llmint8::coordinator
