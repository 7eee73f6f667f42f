// An HTTP server on a thread of its own (cpp-httplib), for the coordinator's /metrics and its
// OpenAI-compatible API.
//
// cpp-httplib, not prometheus-cpp's own exposer: that one runs civetweb threads with a 100 KiB
// stack, less than the static TLS the CUDA libraries (cuBLASLt: 92 KiB) bring into this
// process, so its threads cannot start here; std::thread's default stack has room.
#ifndef LLMINT8_COORDINATOR_HTTP_SERVER_H_
#define LLMINT8_COORDINATOR_HTTP_SERVER_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/tls.h"

namespace httplib {
class Server;
struct Request;
struct Response;
}

namespace llmint8::coordinator {

// Why a request's body cannot be held to the server's limit, with the HTTP status to refuse it
// with, before httplib reads the body: httplib bounds a body only by its Content-Length, so
//   - any Transfer-Encoding (chunked, whatever the method, and even beside a Content-Length,
//     which httplib then ignores): 411, or 400 with a Content-Length too;
//   - a Content-Encoding other than identity (httplib inflates gzip / deflate / br past the
//     limit): 415;
//   - a POST, PUT, PATCH (or PRI) without a Content-Length (read to the connection's end): 411;
//   - a body on another method than those and DELETE (GET, HEAD, OPTIONS, ...), which httplib
//     does not read: its bytes would be taken for the next request (smuggled): 400;
//   - a Content-Length that is not a byte count (httplib would read "-1" as 2^64 - 1), or
//     two that differ: 400;
//   - a Content-Length over `max_body_bytes`: 413 (httplib would read it all to skip it).
// nullopt when the body (if any) is bounded. Install it in a pre-routing handler. A refusal
// sets `res`'s status, and closes the connection after the answer (CloseConnectionAfterResponse):
// the body is left unread, and must not be read as a next request.
struct BodyRefusal {
  int status = 0;
  std::string message;
};
std::optional<BodyRefusal> RefuseUnboundedBody(const httplib::Request& req, int64_t max_body_bytes,
                                               httplib::Response& res);

class HttpServer {
 public:
  // Listens on `listen` (host:port; port 0 picks a free one) with `threads` handler threads;
  // `routes` registers the handlers (they run on those threads). `flag` names the address in
  // errors: a malformed one (INVALID_ARGUMENT, common/host_port.h), a port that cannot be
  // bound or a server that does not start (UNAVAILABLE). With `tls` enabled it serves HTTPS
  // (common/tls.h; files checked by LoadTlsServer first), requiring client certificates when
  // tls.client_ca_file is set. A positive `keepalive` turns on TCP keepalive for its
  // connections: a client silent that long is probed (3 probes within `answer_within`), and
  // a connection whose client does not answer (its host froze or lost the network) is
  // closed, so a request waiting on it is found gone (coordinator/peer_watch.h).
  // A request may take kMaxRequestHeadBytes of request line and headers, plus the payload
  // limit `routes` sets (set_payload_max_length; none: no body), from its connection,
  // `request_within` for its head to arrive (zero: kDefaultRequestTimeout, 60 s) and its
  // body's time at kMinBodyBytesPerSecond after that (coordinator/http_connection.h). A handler
  // that throws gets a 500 with no detail (routes may set their own exception handler).
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(
      const std::string& listen, std::string_view flag, int threads,
      const std::function<void(httplib::Server&)>& routes, const TlsServerConfig& tls = {},
      absl::Duration keepalive = absl::ZeroDuration(),
      absl::Duration answer_within = absl::Seconds(10),
      absl::Duration request_within = absl::ZeroDuration());
  ~HttpServer();  // stops listening, waits for open requests and joins

  int port() const { return port_; }

 private:
  HttpServer() = default;

  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  int port_ = 0;
};

}  // namespace llmint8::coordinator

#endif  // LLMINT8_COORDINATOR_HTTP_SERVER_H_
