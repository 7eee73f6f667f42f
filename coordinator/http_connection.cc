#include "coordinator/http_connection.h"

#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstring>
#include <functional>
#include <limits>
#include <string>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/numbers.h"
#include "absl/time/clock.h"
#include "coordinator/lingering_close.h"

namespace llmint8::coordinator {
namespace {

// What the server's settings allow one connection.
struct Limits {
  size_t request_bytes;  // head and body of one request
  absl::Duration request_time;  // for one request's head (and the handshake); its body gets more
  int read_ms;           // for each read
  int write_ms;          // for each write
  int keep_alive_ms;     // for the next request to begin
  size_t max_requests;   // on one connection
};

// At least 1 ms: a zero SO_RCVTIMEO would mean no timeout at all.
int Milliseconds(time_t sec, time_t usec) {
  const int64_t ms = static_cast<int64_t>(sec) * 1000 + static_cast<int64_t>(usec) / 1000;
  return static_cast<int>(std::clamp<int64_t>(ms, 1, INT_MAX));
}

// Set by CloseConnectionAfterResponse on the thread that serves the request.
thread_local bool t_close_after_response = false;
// Set once httplib has parsed a request's head and goes on to route it (SetUpRequest): a
// request it answered before (a bad request line, Range or header: 400, 414, 416) has left
// its body unread.
thread_local bool t_routed = false;
class BudgetStream;
// The stream of the request this thread serves (SetUpRequest gives its body time).
thread_local BudgetStream* t_stream = nullptr;
// Set by BoundedTaskQueue while the accepting thread runs a connection it had no room for.
thread_local bool t_no_room = false;

Limits LimitsOf(size_t payload_max, absl::Duration request_time, time_t read_sec, time_t read_usec,
                time_t write_sec, time_t write_usec, time_t keep_alive_sec,
                size_t keep_alive_max_count) {
  const size_t room = std::numeric_limits<size_t>::max() - kMaxRequestHeadBytes;
  return Limits{kMaxRequestHeadBytes + std::min(payload_max, room),
                std::max(request_time, absl::Milliseconds(1)),
                Milliseconds(read_sec, read_usec),
                Milliseconds(write_sec, write_usec),
                Milliseconds(keep_alive_sec, 0),
                std::max<size_t>(keep_alive_max_count, 1)};
}

// Whether `fd` has one of `events` within `timeout_ms` (or hung up, or failed: the next call
// on it then says how).
bool Await(int fd, short events, int timeout_ms) {
  pollfd p{fd, events, 0};
  for (;;) {
    const int ready = ::poll(&p, 1, timeout_ms);
    if (ready < 0 && errno == EINTR) continue;
    return ready > 0;
  }
}

// A connection there was no room for: a 503 that says when to come back, and the end. It
// lingers until the client's end or kLingerFor (lingering_close.h: closed at once, the answer
// could be lost to a reset), on another thread: this one accepts.
void RefuseForNoRoom(int fd) {
  static constexpr char kBusy[] =
      "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nConnection: close\r\n"
      "Content-Type: text/plain\r\nContent-Length: 40\r\n\r\n"
      "too many connections; try again shortly\n";
  static_assert(sizeof("too many connections; try again shortly\n") - 1 == 40);
  (void)::send(fd, kBusy, sizeof(kBusy) - 1, MSG_DONTWAIT | MSG_NOSIGNAL);
  LingerAndClose(fd);
}

// Whether `fd` has one of `events` before `deadline`, looking every 100 ms whether the server
// is still listening (false at once when it stops).
bool AwaitUntil(int fd, short events, absl::Time deadline, const std::atomic<socket_t>& listening) {
  for (;;) {
    if (listening == INVALID_SOCKET) return false;
    const int64_t left_ms = absl::ToInt64Milliseconds(deadline - absl::Now());
    if (left_ms <= 0) return false;
    if (Await(fd, events, static_cast<int>(std::min<int64_t>(left_ms, 100)))) return true;
  }
}

// Each send and receive on `fd` gives up after its timeout (a TLS handshake's too), and small
// writes go out at once (an event of a token stream).
void SetSocketOptions(int fd, const Limits& limits) {
  const int yes = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &yes, sizeof(yes));
  auto set = [fd](int option, int ms) {
    timeval tv{ms / 1000, static_cast<suseconds_t>(ms % 1000) * 1000};
    ::setsockopt(fd, SOL_SOCKET, option, &tv, sizeof(tv));
  };
  set(SO_RCVTIMEO, limits.read_ms);
  set(SO_SNDTIMEO, limits.write_ms);
}

// A connection's bytes: the socket itself, or a TLS session over it.
class Transport {
 public:
  virtual ~Transport() = default;
  // > 0 bytes, 0 at the peer's end of stream, < 0 on an error, at `until` or when the server
  // stops. The caller has seen the socket readable (writable) first.
  virtual ssize_t Receive(char* buffer, size_t size, absl::Time until) = 0;
  virtual ssize_t Send(const char* data, size_t size, absl::Time until) = 0;
  virtual bool HasDecrypted() const { return false; }  // read from the socket, not yet given
};

class SocketTransport final : public Transport {
 public:
  explicit SocketTransport(int fd) : fd_(fd) {}
  // Blocking: readable, recv returns what is there; a send is bounded by SO_SNDTIMEO.
  ssize_t Receive(char* buffer, size_t size, absl::Time) override {
    for (;;) {
      const ssize_t n = ::recv(fd_, buffer, size, 0);
      if (n < 0 && errno == EINTR) continue;
      return n;
    }
  }
  ssize_t Send(const char* data, size_t size, absl::Time) override {
    for (;;) {
      const ssize_t n = ::send(fd_, data, size, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      return n;
    }
  }

 private:
  const int fd_;
};

// After an SSL call on non-blocking `fd` failed with `error`: whether to call it again (the
// socket became ready for what it wants before `until`, and the server still listens).
// (With a non-blocking socket OpenSSL reports an interrupted call as WANT_READ/WANT_WRITE.)
// Call ERR_clear_error() before the SSL call: SSL_get_error reads the thread's error queue.
bool AwaitSsl(int error, int fd, absl::Time until, const std::atomic<socket_t>& listening) {
  const short events = error == SSL_ERROR_WANT_READ    ? POLLIN
                       : error == SSL_ERROR_WANT_WRITE ? POLLOUT
                                                       : 0;
  return events != 0 && AwaitUntil(fd, events, until, listening);
}

// Over a non-blocking socket: a record that arrives a byte at a time is waited for only until
// `until` (a blocking SSL_read would wait up to the socket's timeout for each of them).
class TlsTransport final : public Transport {
 public:
  TlsTransport(SSL* ssl, int fd, const std::atomic<socket_t>& listening)
      : ssl_(ssl), fd_(fd), listening_(listening) {}
  ssize_t Receive(char* buffer, size_t size, absl::Time until) override {
    for (;;) {
      ERR_clear_error();
      const int n = SSL_read(ssl_, buffer, static_cast<int>(std::min<size_t>(size, INT_MAX)));
      if (n > 0) return n;
      const int error = SSL_get_error(ssl_, n);
      if (error == SSL_ERROR_ZERO_RETURN) return 0;
      if (!Wait(error, until)) return -1;
    }
  }
  ssize_t Send(const char* data, size_t size, absl::Time until) override {
    for (;;) {  // a retry passes the same arguments, as SSL_write requires
      ERR_clear_error();
      const int n = SSL_write(ssl_, data, static_cast<int>(std::min<size_t>(size, INT_MAX)));
      if (n > 0) return n;
      if (!Wait(SSL_get_error(ssl_, n), until)) return -1;
    }
  }
  bool HasDecrypted() const override { return SSL_pending(ssl_) > 0; }

 private:
  bool Wait(int error, absl::Time until) const { return AwaitSsl(error, fd_, until, listening_); }

  SSL* const ssl_;
  const int fd_;
  const std::atomic<socket_t>& listening_;
};

// The address of one end of `fd` as httplib writes it: numeric host ("::ffff:10.0.0.7" for an
// IPv4 client of an IPv6 socket), port.
void EndAddress(int fd, bool peer, std::string& ip, int& port) {
  sockaddr_storage address{};
  socklen_t length = sizeof(address);
  auto* raw = reinterpret_cast<sockaddr*>(&address);
  if ((peer ? ::getpeername(fd, raw, &length) : ::getsockname(fd, raw, &length)) != 0) return;
  if (address.ss_family == AF_INET) {
    port = ntohs(reinterpret_cast<const sockaddr_in*>(&address)->sin_port);
  } else if (address.ss_family == AF_INET6) {
    port = ntohs(reinterpret_cast<const sockaddr_in6*>(&address)->sin6_port);
  } else {
    return;
  }
  std::array<char, NI_MAXHOST> host{};
  if (::getnameinfo(raw, length, host.data(), host.size(), nullptr, 0, NI_NUMERICHOST) == 0) {
    ip = host.data();
  }
}

// The connection as httplib reads and writes it, allowing each request `budget` bytes and
// limits.request_time for its head, plus its body's time (AllowBody); reads stop at once when
// the server stops listening.
class BudgetStream final : public httplib::Stream {
 public:
  BudgetStream(int fd, Transport& transport, const Limits& limits,
               const std::atomic<socket_t>& listening)
      : fd_(fd), transport_(transport), limits_(limits), listening_(listening) {}

  void StartRequest() {
    budget_ = limits_.request_bytes;
    deadline_ = absl::Now() + limits_.request_time;
    cut_ = false;
    in_body_ = false;
  }
  // The head has been read and a body of `bytes` follows: it gets the head's time again from
  // now, and each byte that arrives adds its time at kMinBodyBytesPerSecond (so a body that
  // keeps that pace is never cut, and one that trickles is cut as a slow head is).
  void AllowBody(int64_t bytes) {
    if (bytes <= 0) return;
    deadline_ = absl::Now() + limits_.request_time;
    in_body_ = true;
  }
  // This request took all it may (bytes or time), or a read of it failed: the rest of what
  // the client sent is not a request.
  bool Exhausted() const { return budget_ == 0 || cut_; }
  // Some of the current request has been read.
  bool Begun() const { return budget_ < limits_.request_bytes; }
  // Bytes received and not yet read: a next request has begun.
  bool Buffered() const { return begin_ < end_ || transport_.HasDecrypted(); }

  bool is_readable() const override {
    return Buffered() || AwaitUntil(fd_, POLLIN, ReadUntil(), listening_);
  }
  // Writable within the write timeout, and the client has not closed its end.
  bool is_writable() const override { return Await(fd_, POLLOUT, limits_.write_ms) && PeerOpen(); }

  ssize_t read(char* ptr, size_t size) override {
    if (budget_ == 0) return -1;  // this request has had all it may take
    if (begin_ == end_) {
      // Past the deadline, or a read that fails or times out, once the request has begun:
      // it is cut where it is, and whatever the client sends after is not read (as a next
      // request). Before its first byte it is the connection's end, not a cut.
      const bool begun = Begun();
      if (absl::Now() >= deadline_ || !is_readable()) {
        cut_ = begun;
        return -1;
      }
      const ssize_t n = transport_.Receive(buffer_.data(), buffer_.size(), ReadUntil());
      if (n <= 0) {
        cut_ = begun;
        return n;
      }
      if (in_body_) {
        deadline_ += absl::Seconds(static_cast<double>(n) / kMinBodyBytesPerSecond);
      }
      begin_ = 0;
      end_ = static_cast<size_t>(n);
    }
    const size_t n = std::min({size, end_ - begin_, budget_});
    std::memcpy(ptr, buffer_.data() + begin_, n);
    begin_ += n;
    budget_ -= n;
    return static_cast<ssize_t>(n);
  }

  ssize_t write(const char* ptr, size_t size) override {
    if (!Await(fd_, POLLOUT, limits_.write_ms)) return -1;
    return transport_.Send(ptr, size, absl::Now() + absl::Milliseconds(limits_.write_ms));
  }

  void get_remote_ip_and_port(std::string& ip, int& port) const override {
    EndAddress(fd_, /*peer=*/true, ip, port);
  }
  void get_local_ip_and_port(std::string& ip, int& port) const override {
    EndAddress(fd_, /*peer=*/false, ip, port);
  }
  socket_t socket() const override { return fd_; }

 private:
  // Until when one read may wait: its timeout, within the request's deadline.
  absl::Time ReadUntil() const {
    return std::min(deadline_, absl::Now() + absl::Milliseconds(limits_.read_ms));
  }

  // False once the client has closed its end (or reset the connection). Its end of stream
  // may wait behind bytes not read yet (a TLS client's close_notify alert), which a peek
  // would take for an open stream: the TCP state says it first.
  bool PeerOpen() const {
    tcp_info info{};
    socklen_t length = sizeof(info);
    if (::getsockopt(fd_, IPPROTO_TCP, TCP_INFO, &info, &length) == 0 &&
        (info.tcpi_state == TCP_CLOSE_WAIT || info.tcpi_state == TCP_CLOSE)) {
      return false;
    }
    if (!Await(fd_, POLLIN, 0)) return true;
    char byte;
    const ssize_t n = ::recv(fd_, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    return n > 0 || (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR));
  }

  const int fd_;
  Transport& transport_;
  const Limits limits_;
  const std::atomic<socket_t>& listening_;
  size_t budget_ = 0;
  absl::Time deadline_ = absl::InfiniteFuture();
  bool cut_ = false;
  bool in_body_ = false;  // AllowBody: bytes received add time
  std::array<char, 4096> buffer_{};
  size_t begin_ = 0;
  size_t end_ = 0;
};

// Whether a request begins within the keep-alive timeout (at least 10 ms, as httplib waits),
// looking every 100 ms whether the server is stopping.
bool AwaitRequest(const BudgetStream& stream, int fd, const std::atomic<socket_t>& listening,
                  int keep_alive_ms) {
  return stream.Buffered() ||
         AwaitUntil(fd, POLLIN, absl::Now() + absl::Milliseconds(std::max(keep_alive_ms, 10)),
                    listening);
}

using ProcessRequest =
    std::function<bool(httplib::Stream& stream, bool close_connection, bool& connection_closed)>;

// httplib's keep-alive loop: requests one after another until the client closes, one fails,
// the last one allowed, or the server stops. True when the last one was answered; `unread`:
// the client may have sent more than was read (a request cut off or refused unread).
bool ServeRequests(int fd, Transport& transport, const std::atomic<socket_t>& listening,
                   const Limits& limits, const ProcessRequest& process, bool& unread) {
  BudgetStream stream(fd, transport, limits, listening);
  t_stream = &stream;
  absl::Cleanup forget = [] { t_stream = nullptr; };
  bool answered = false;
  for (size_t left = limits.max_requests; left > 0 && listening != INVALID_SOCKET &&
                                          AwaitRequest(stream, fd, listening, limits.keep_alive_ms);
       --left) {
    stream.StartRequest();
    t_close_after_response = false;
    t_routed = false;
    bool closed = false;
    answered = process(stream, /*close_connection=*/left == 1, closed);
    // Not routed: httplib answered the head itself (its body unread), or the connection ended
    // before a request began (nothing to drain then).
    unread = stream.Exhausted() || t_close_after_response || (!t_routed && stream.Begun());
    if (!answered || closed || unread) break;
  }
  return answered;
}

// Closes after the answer has gone out. With `unread` (a body refused unread, a request cut
// off), bytes the client is still sending would turn the close into a reset that can reach it
// before the answer does: its side shut for writing, the connection first takes up to 1 MiB
// more for up to 250 ms.
void Close(int fd, bool unread) {
  if (!unread) {
    ::shutdown(fd, SHUT_RDWR);
    ::close(fd);
    return;
  }
  ::shutdown(fd, SHUT_WR);
  char sink[16 * 1024];
  size_t drained = 0;
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(250);
  while (drained < (size_t{1} << 20)) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        until - std::chrono::steady_clock::now());
    if (left.count() <= 0 || !Await(fd, POLLIN, static_cast<int>(left.count()))) break;
    const ssize_t n = ::recv(fd, sink, sizeof(sink), MSG_DONTWAIT);
    if (n <= 0 && !(n < 0 && (errno == EINTR || errno == EAGAIN))) break;  // the client's end
    if (n > 0) drained += static_cast<size_t>(n);
  }
  ::close(fd);
}

}  // namespace

BoundedTaskQueue::BoundedTaskQueue(size_t threads, size_t max_waiting)
    : pool_(std::max<size_t>(threads, 1)), max_held_(std::max<size_t>(threads, 1) + max_waiting) {}

void BoundedTaskQueue::enqueue(std::function<void()> fn) {
  // Connections held, not only those waiting: a burst that came before idle threads woke to
  // take the first ones is not refused.
  if (held_.load(std::memory_order_relaxed) >= max_held_) {
    ++refused_;
    t_no_room = true;
    fn();  // the server's process_and_close_socket refuses it (RefuseForNoRoom)
    t_no_room = false;
    return;
  }
  held_.fetch_add(1, std::memory_order_relaxed);
  pool_.enqueue([this, fn = std::move(fn)] {
    absl::Cleanup done = [this] { held_.fetch_sub(1, std::memory_order_relaxed); };
    fn();
  });
}

void BoundedTaskQueue::shutdown() { pool_.shutdown(); }

void CloseConnectionAfterResponse(httplib::Response& res) {
  // httplib may add a second one after the handler (when the request asked to close too, or the
  // connection's last request is this one): harmless.
  res.set_header("Connection", "close");
  t_close_after_response = true;
}

namespace {

// What each request gets before routing: no ranges (the answer is whole), and for HTTPS its
// session.
void SetUpRequest(httplib::Request& req, SSL* ssl) {
  t_routed = true;
  req.ranges.clear();
  req.ssl = ssl;
  int64_t length = 0;
  if (t_stream != nullptr && absl::SimpleAtoi(req.get_header_value("Content-Length"), &length)) {
    t_stream->AllowBody(length);
  }
}

// Makes `fd` non-blocking (for good: TlsTransport reads and writes it so) and runs SSL_accept
// within `deadline`, giving up at once when the server stops listening.
bool AcceptTls(SSL* ssl, int fd, absl::Time deadline, const std::atomic<socket_t>& listening) {
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0) return false;
  for (;;) {
    ERR_clear_error();
    const int r = SSL_accept(ssl);
    if (r == 1) return true;
    if (!AwaitSsl(SSL_get_error(ssl, r), fd, deadline, listening)) return false;
  }
}

// Sends close_notify, waiting for room to send it for up to a second (a large answer may
// still fill the socket's buffer); the peer's is not waited for.
void ShutdownTls(SSL* ssl, int fd, const std::atomic<socket_t>& listening) {
  const absl::Time until = absl::Now() + absl::Seconds(1);
  for (;;) {
    ERR_clear_error();
    const int r = SSL_shutdown(ssl);
    if (r >= 0 || !AwaitSsl(SSL_get_error(ssl, r), fd, until, listening)) return;
  }
}

}  // namespace

bool BoundedHttpServer::process_and_close_socket(socket_t sock) {
  if (t_no_room) {
    RefuseForNoRoom(sock);
    return false;
  }
  const Limits limits = LimitsOf(payload_max_length_, request_timeout_, read_timeout_sec_,
                                 read_timeout_usec_, write_timeout_sec_, write_timeout_usec_,
                                 keep_alive_timeout_sec_, keep_alive_max_count_);
  SetSocketOptions(sock, limits);
  SocketTransport transport(sock);
  bool unread = false;
  const bool answered = ServeRequests(
      sock, transport, svr_sock_, limits,
      [this](httplib::Stream& s, bool close, bool& closed) {
        return process_request(s, close, closed,
                               [](httplib::Request& r) { SetUpRequest(r, nullptr); });
      },
      unread);
  Close(sock, unread);
  return answered;
}

BoundedHttpsServer::BoundedHttpsServer(const char* cert_file, const char* key_file,
                                       const char* client_ca_file)
    : httplib::SSLServer(cert_file, key_file, client_ca_file) {
  struct sigaction current {};
  if (::sigaction(SIGPIPE, nullptr, &current) == 0 && current.sa_handler == SIG_DFL) {
    ::signal(SIGPIPE, SIG_IGN);
  }
}

bool BoundedHttpsServer::process_and_close_socket(socket_t sock) {
  if (t_no_room) {  // no TLS session to answer in: the end alone
    ::shutdown(sock, SHUT_RDWR);
    ::close(sock);
    return false;
  }
  const Limits limits = LimitsOf(payload_max_length_, request_timeout_, read_timeout_sec_,
                                 read_timeout_usec_, write_timeout_sec_, write_timeout_usec_,
                                 keep_alive_timeout_sec_, keep_alive_max_count_);
  SetSocketOptions(sock, limits);
  bool answered = false;
  bool unread = false;
  SSL* ssl = SSL_new(ssl_context());
  if (ssl != nullptr) {
    // SSL_write returns what it wrote of a large answer (httplib writes on from there), so
    // each write's timeout is for some progress, not for the whole answer.
    SSL_set_mode(ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    if (SSL_set_fd(ssl, sock) == 1 &&
        AcceptTls(ssl, sock, absl::Now() + limits.request_time, svr_sock_)) {
      TlsTransport transport(ssl, sock, svr_sock_);
      answered = ServeRequests(
          sock, transport, svr_sock_, limits,
          [this, ssl](httplib::Stream& s, bool close, bool& closed) {
            return process_request(s, close, closed,
                                   [ssl](httplib::Request& r) { SetUpRequest(r, ssl); });
          },
          unread);
      if (answered) ShutdownTls(ssl, sock, svr_sock_);
    }
    SSL_free(ssl);
  }
  Close(sock, unread);
  return answered;
}

}  // namespace llmint8::coordinator
