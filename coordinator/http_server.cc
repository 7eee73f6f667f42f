#include "coordinator/http_server.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <algorithm>
#include <chrono>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/host_port.h"
#include "common/status_macros.h"
#include "coordinator/http_connection.h"
#include "httplib.h"

namespace llmint8::coordinator {
namespace {

std::optional<BodyRefusal> BodyRefusalOf(const httplib::Request& req, int64_t max_body_bytes) {
  const bool has_length = req.has_header("Content-Length");
  if (req.has_header("Transfer-Encoding")) {
    return has_length ? BodyRefusal{400, "send a Content-Length or a Transfer-Encoding, not both"}
                      : BodyRefusal{411, "send the body with a Content-Length (not chunked)"};
  }
  if (req.has_header("Content-Encoding") &&
      !absl::EqualsIgnoreCase(req.get_header_value("Content-Encoding"), "identity")) {
    return BodyRefusal{415, "send the body uncompressed (no Content-Encoding)"};
  }
  // The methods whose body httplib reads without a length (a DELETE's only with one).
  const bool takes_body =
      req.method == "POST" || req.method == "PUT" || req.method == "PATCH" || req.method == "PRI";
  if (takes_body && !has_length) {
    return BodyRefusal{411, "send the body with a Content-Length (not chunked)"};
  }
  int64_t length = 0;
  const bool length_read =
      has_length && absl::SimpleAtoi(req.get_header_value("Content-Length"), &length);
  if (has_length && (!length_read || length < 0)) {
    return BodyRefusal{400, "the Content-Length is not a byte count"};
  }
  // Two that differ frame the body two ways (RFC 9112 6.3: refuse).
  for (size_t i = 1; i < req.get_header_value_count("Content-Length"); ++i) {
    if (req.get_header_value("Content-Length", i) != req.get_header_value("Content-Length")) {
      return BodyRefusal{400, "the request has Content-Lengths that differ"};
    }
  }
  if (length_read && length > 0 && !takes_body && req.method != "DELETE") {
    return BodyRefusal{400, absl::StrCat("a ", req.method, " takes no body")};
  }
  if (length_read && length > max_body_bytes) {
    return BodyRefusal{413, max_body_bytes == 0
                                ? std::string("this server takes no request body")
                                : absl::StrCat("the body is over ", max_body_bytes, " bytes")};
  }
  return std::nullopt;
}

}  // namespace

std::optional<BodyRefusal> RefuseUnboundedBody(const httplib::Request& req, int64_t max_body_bytes,
                                               httplib::Response& res) {
  std::optional<BodyRefusal> refusal = BodyRefusalOf(req, max_body_bytes);
  if (refusal.has_value()) {
    res.status = refusal->status;
    CloseConnectionAfterResponse(res);
  }
  return refusal;
}

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(
    const std::string& listen, std::string_view flag, int threads,
    const std::function<void(httplib::Server&)>& routes, const TlsServerConfig& tls,
    absl::Duration keepalive, absl::Duration answer_within, absl::Duration request_within) {
  const std::string flag_name(flag);
  ASSIGN_OR_RETURN(const HostPort address, ParseHostPort(listen, flag_name));
  const std::string& host = address.host;
  const int port = address.port;
  std::unique_ptr<HttpServer> s(new HttpServer());
  if (tls.enabled()) {
    // The files were checked (LoadTlsServer); httplib reads them again for its SSL context.
    auto https = std::make_unique<BoundedHttpsServer>(
        tls.cert_file.c_str(), tls.key_file.c_str(),
        tls.client_ca_file.empty() ? nullptr : tls.client_ca_file.c_str());
    if (!https->is_valid()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "HTTPS on ", flag_name, "=", listen, ": OpenSSL refused --tls_cert_file=", tls.cert_file,
          " / --tls_key_file=", tls.key_file));
    }
    if (request_within > absl::ZeroDuration()) https->set_request_timeout(request_within);
    s->server_ = std::move(https);
  } else {
    auto http = std::make_unique<BoundedHttpServer>();
    if (request_within > absl::ZeroDuration()) http->set_request_timeout(request_within);
    s->server_ = std::move(http);
  }
  // SO_REUSEADDR (a restarted coordinator rebinds at once) but not httplib's default
  // SO_REUSEPORT, which would let a second server share the port instead of failing.
  // Keepalive: accepted connections inherit the listening socket's settings (Linux).
  const int idle_s =
      static_cast<int>(std::clamp<int64_t>(absl::ToInt64Seconds(keepalive), 1, 32767));
  const int probe_s =
      static_cast<int>(std::clamp<int64_t>(absl::ToInt64Seconds(answer_within) / 3, 1, 32767));
  const bool probe = keepalive > absl::ZeroDuration();
  s->server_->set_socket_options([probe, idle_s, probe_s](socket_t sock) {
    int yes = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
    if (!probe) return;
    const int probes = 3;
    ::setsockopt(sock, SOL_SOCKET, SO_KEEPALIVE, &yes, sizeof(yes));
    ::setsockopt(sock, IPPROTO_TCP, TCP_KEEPIDLE, &idle_s, sizeof(idle_s));
    ::setsockopt(sock, IPPROTO_TCP, TCP_KEEPINTVL, &probe_s, sizeof(probe_s));
    ::setsockopt(sock, IPPROTO_TCP, TCP_KEEPCNT, &probes, sizeof(probes));
  });
  // As many connections may wait for a thread as there are threads (at least 64: a burst of
  // clients), the rest are refused (503) instead of queued without bound.
  s->server_->new_task_queue = [threads] {
    const size_t n = static_cast<size_t>(std::max(threads, 1));
    return new BoundedTaskQueue(n, std::max<size_t>(n, 64));
  };
  s->server_->set_payload_max_length(0);  // no body unless the routes take one
  // httplib's own answer to a throwing handler names the exception in a header.
  s->server_->set_exception_handler(
      [](const httplib::Request&, httplib::Response& res, std::exception_ptr) {
        res.status = 500;
        res.set_content("internal error\n", "text/plain");
      });
  routes(*s->server_);
  const int bound = port == 0 ? s->server_->bind_to_any_port(host)
                              : (s->server_->bind_to_port(host, port) ? port : -1);
  if (bound <= 0) {
    return absl::UnavailableError(
        absl::StrCat("could not serve HTTP on ", flag_name, "=", listen, "; pick another port"));
  }
  s->port_ = bound;
  httplib::Server* server = s->server_.get();
  s->thread_ = std::thread([server] { server->listen_after_bind(); });
  // Until the loop runs, stop() would not reach it (and the destructor's join would hang).
  for (int waited_ms = 0; !server->is_running(); ++waited_ms) {
    if (waited_ms == 5000) {
      // A loop that never started cannot be stopped: leave the thread and its server be
      // (leaked) rather than free what the thread may still touch.
      s->thread_.detach();
      (void)s->server_.release();
      return absl::UnavailableError(
          absl::StrCat("the HTTP server on ", flag_name, "=", listen, " did not start within 5 s"));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return s;
}

HttpServer::~HttpServer() {
  if (server_ != nullptr) server_->stop();
  if (thread_.joinable()) thread_.join();
}

}  // namespace llmint8::coordinator
