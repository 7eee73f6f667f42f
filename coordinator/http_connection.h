// How the coordinator's HTTP servers serve a connection: cpp-httplib parses and routes each
// request, reading it through a stream that holds the request to a byte budget.
//
// cpp-httplib 0.11 (Debian 12's) checks a request line's and a header line's length only once
// it has read the whole line, and does not count header lines: a client sending one endless
// line, or headers without end, grows the server's memory until the kernel kills it. Here one
// request may take at most kMaxRequestHeadBytes (request line and headers) plus the server's
// payload limit (its body) from the connection. Past that the stream gives httplib nothing,
// so it answers 400 (or, mid request line, drops the connection) and the connection closes:
// what the client sent past the cut is not read as a next request.
//
// Time is bounded as well as bytes: each read waits at most the read timeout
// (set_read_timeout), a request's head must arrive within the request timeout
// (set_request_timeout; a TLS handshake within it too) and its body must keep a pace of
// kMinBodyBytesPerSecond after the same time again (TLS records are read from a
// non-blocking socket, so a record sent a byte at a time is held to these as well), so a
// client that trickles a byte now and then (slowloris) holds a handler thread for that long
// at most, not for hours. A read that fails or times out cuts the request: the connection
// closes after its answer. A connection stops waiting on its client within 100 ms of the
// server's stop(). Writes are bounded per call by the write timeout (each must make some
// progress): a client that reads a large answer very slowly still holds its thread while it
// reads (a streamed answer's client that stops reading is found gone).
//
// Range headers are ignored (every answer is whole): httplib 0.11 would build a reply of as
// many copies of the body as a request names ranges (thousands fit in one header line). A
// malformed one still gets httplib's 416, as a bad request line or header gets its 400 or
// 414: such a request's body is left unread, so the connection closes after the answer.
// Answers go out without Nagle's delay (TCP_NODELAY): a streamed token is one small write.
//
// httplib lets a subclass serve each accepted connection itself (process_and_close_socket);
// these do, with httplib's keep-alive rules and timeouts (set_read_timeout and the others) and,
// for HTTPS, its SSL context (certificates, client certificate checks).
//
//   auto server = std::make_unique<BoundedHttpServer>();
//   server->set_payload_max_length(max_body_bytes);  // the body's share of the budget
#ifndef LLMINT8_COORDINATOR_HTTP_CONNECTION_H_
#define LLMINT8_COORDINATOR_HTTP_CONNECTION_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>

#include "absl/time/time.h"
#include "httplib.h"

namespace llmint8::coordinator {

// The request line and headers' share of a request's budget (which the body's limit tops up:
// the two together bound what one request may take). Clients send a few hundred bytes; nginx
// takes 8 KiB per line, 32 KiB in all, by default.
inline constexpr size_t kMaxRequestHeadBytes = 64 * 1024;

// The time a request's head may take to arrive, by default; its body gets that time again,
// plus each byte's at kMinBodyBytesPerSecond as it arrives (a 4 MiB body: 124 s at that pace).
inline constexpr absl::Duration kDefaultRequestTimeout = absl::Seconds(60);
inline constexpr int64_t kMinBodyBytesPerSecond = 64 * 1024;

// From a handler (or pre-routing handler) of these servers: close the connection once `res`
// is written, and say so in it (Connection: close), e.g. after refusing a request whose body
// was left unread (read as the next request, it would be whatever the client put there).
void CloseConnectionAfterResponse(httplib::Response& res);

// The task queue for these servers (httplib::Server::new_task_queue): `threads` threads serve
// the accepted connections, and at most `max_waiting` more wait for one (connections held:
// served or waiting, counted until their thread is done with them). Past that a connection is
// refused at once on the accepting thread: HTTP gets a 503 with Retry-After and the end,
// HTTPS the end. So a flood of connections holds at most threads + max_waiting + 1 of the
// process's file descriptors, which its gRPC server shares, plus the refused ones that linger
// (at most kMaxLingering, coordinator/lingering_close.h), and no unbounded queue of work.
class BoundedTaskQueue final : public httplib::TaskQueue {
 public:
  BoundedTaskQueue(size_t threads, size_t max_waiting);
  void enqueue(std::function<void()> fn) override;
  void shutdown() override;
  size_t held() const { return held_.load(); }          // served or waiting now
  uint64_t refused() const { return refused_.load(); }  // connections refused so far

 private:
  httplib::ThreadPool pool_;
  const size_t max_held_;
  std::atomic<size_t> held_{0};
  std::atomic<uint64_t> refused_{0};
};

class BoundedHttpServer final : public httplib::Server {
 public:
  void set_request_timeout(absl::Duration timeout) { request_timeout_ = timeout; }

 private:
  bool process_and_close_socket(socket_t sock) override;

  absl::Duration request_timeout_ = kDefaultRequestTimeout;
};

// HTTPS. Writes to a client that has gone raise no SIGPIPE: constructing one sets SIGPIPE to
// be ignored in this process (OpenSSL writes with write(2)), unless a handler is installed.
class BoundedHttpsServer final : public httplib::SSLServer {
 public:
  BoundedHttpsServer(const char* cert_file, const char* key_file, const char* client_ca_file);
  void set_request_timeout(absl::Duration timeout) { request_timeout_ = timeout; }

 private:
  bool process_and_close_socket(socket_t sock) override;

  absl::Duration request_timeout_ = kDefaultRequestTimeout;
};

}  // namespace llmint8::coordinator

#endif  // LLMINT8_COORDINATOR_HTTP_CONNECTION_H_
