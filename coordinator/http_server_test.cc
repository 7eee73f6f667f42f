// The coordinator's HTTP servers against clients that send more than a request may hold:
// each request may take kMaxRequestHeadBytes of head plus the payload limit, no more, and
// kRequestTime to arrive.
#include "coordinator/http_server.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/testing/test_certs.h"
#include "coordinator/http_connection.h"
#include "coordinator/lingering_close.h"
#include "gtest/gtest.h"
#include "httplib.h"

namespace llmint8::coordinator {
namespace {

constexpr size_t kMaxBody = 1024;
constexpr absl::Duration kRequestTime = absl::Seconds(3);
// How often a trickling client sends a little: well within the 5 s of each read.
constexpr auto kTrickle = std::chrono::milliseconds(300);
constexpr size_t kFlood = size_t{256} << 20;  // what a flooding client tries to send

// The most bytes loopback TCP can hold between a client's send and a server's read: the
// largest send and receive buffers the kernel grows to (net.ipv4.tcp_wmem / tcp_rmem).
size_t SocketBufferBytes() {
  size_t total = 0;
  for (const char* path : {"/proc/sys/net/ipv4/tcp_wmem", "/proc/sys/net/ipv4/tcp_rmem"}) {
    std::ifstream in(path);
    size_t min = 0, fallback = 0, max = 0;
    in >> min >> fallback >> max;
    total += max > 0 ? max : size_t{8} << 20;
  }
  return total;
}

// What the last /wait request saw (set once it returns).
std::atomic<const char*>* WaitOutcome() {
  static std::atomic<const char*> outcome{nullptr};
  return &outcome;
}

std::unique_ptr<HttpServer> StartServer(const TlsServerConfig& tls = {},
                                        absl::Duration request_time = kRequestTime) {
  absl::StatusOr<std::unique_ptr<HttpServer>> server = HttpServer::Start(
      "127.0.0.1:0", "--http_listen", 2,
      [](httplib::Server& s) {
        s.set_payload_max_length(kMaxBody);
        s.set_read_timeout(1, 0);  // each read; below kRequestTime, and above kTrickle
        s.set_pre_routing_handler([](const httplib::Request& req, httplib::Response& res) {
          const std::optional<BodyRefusal> refused = RefuseUnboundedBody(req, kMaxBody, res);
          return refused.has_value() ? httplib::Server::HandlerResponse::Handled
                                     : httplib::Server::HandlerResponse::Unhandled;
        });
        s.Get("/", [](const httplib::Request&, httplib::Response& res) {
          res.set_content("ok", "text/plain");
        });
        // Waits (up to 10 s) for its client to leave, as a queued request does, writing
        // nothing: "gone" when the stream stops being writable, "stayed" otherwise.
        s.Get("/wait", [](const httplib::Request&, httplib::Response& res) {
          res.set_chunked_content_provider("text/plain", [](size_t, httplib::DataSink& sink) {
            const absl::Time end = absl::Now() + absl::Seconds(10);
            while (sink.is_writable() && absl::Now() < end) absl::SleepFor(absl::Milliseconds(10));
            *WaitOutcome() = sink.is_writable() ? "stayed" : "gone";
            sink.done();
            return true;
          });
        });
        s.Get("/throws", [](const httplib::Request&, httplib::Response&) {
          throw std::runtime_error("secret detail");
        });
        s.Get("/smuggled", [](const httplib::Request&, httplib::Response& res) {
          res.set_content("SMUGGLED", "text/plain");
        });
        s.Post("/", [](const httplib::Request& req, httplib::Response& res) {
          res.set_content(absl::StrCat(req.body.size()), "text/plain");
        });
      },
      tls, absl::ZeroDuration(), absl::Seconds(10), request_time);
  EXPECT_TRUE(server.ok()) << server.status();
  return server.ok() ? std::move(*server) : nullptr;
}

// A raw client: TCP, or TLS over it when given a context.
class RawClient {
 public:
  RawClient(int port, SSL_CTX* tls) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(static_cast<uint16_t>(port));
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0;
    if (connected_ && tls != nullptr) {
      ssl_ = SSL_new(tls);
      connected_ = SSL_set_fd(ssl_, fd_) == 1 && SSL_connect(ssl_) == 1;
    }
  }
  ~RawClient() {
    if (ssl_ != nullptr) SSL_free(ssl_);
    ::close(fd_);
  }
  bool connected() const { return connected_; }
  int fd() const { return fd_; }
  // Over TLS: sends close_notify (the socket closes with the client).
  void Shutdown() {
    if (ssl_ != nullptr) SSL_shutdown(ssl_);
  }
  // Whether the server sent something (or closed) within `ms`.
  // Over TLS, what arrives may be only the server's session tickets (TLS 1.3 sends them after
  // the handshake): those are taken in, and it waits on.
  bool Answered(int ms) const {
    const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
    for (;;) {
      if (ssl_ != nullptr && SSL_pending(ssl_) > 0) return true;
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          end - std::chrono::steady_clock::now());
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(std::max<int64_t>(left.count(), 0))) <= 0) return false;
      if (ssl_ == nullptr) return true;
      char byte;
      const int flags = ::fcntl(fd_, F_GETFL);
      ::fcntl(fd_, F_SETFL, flags | O_NONBLOCK);
      const int n = SSL_peek(ssl_, &byte, 1);
      const int error = n > 0 ? SSL_ERROR_NONE : SSL_get_error(ssl_, n);
      ::fcntl(fd_, F_SETFL, flags);
      if (error != SSL_ERROR_WANT_READ) return true;  // data, the end, or an error
    }
  }
  SSL* ssl() const { return ssl_; }

  // Sends all of `data`; false once the server has closed the connection.
  bool Send(const std::string& data) {
    for (size_t sent = 0; sent < data.size();) {
      const ssize_t n =
          ssl_ != nullptr
              ? SSL_write(ssl_, data.data() + sent, static_cast<int>(data.size() - sent))
              : ::send(fd_, data.data() + sent, data.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) return false;
      sent += static_cast<size_t>(n);
    }
    return true;
  }
  // Sends `head`, then `chunk` until the server stops taking them: the bytes sent in all.
  size_t Flood(const std::string& head, const std::string& chunk) {
    size_t sent = 0;
    if (!Send(head)) return sent;
    sent += head.size();
    while (sent < kFlood && Send(chunk)) sent += chunk.size();
    return sent;
  }
  // One response: its head and the body of its Content-Length ("" if the connection ends).
  std::string ReceiveResponse() {
    std::string out;
    size_t end = std::string::npos;
    size_t length = 0;
    while (end == std::string::npos || out.size() < end + length) {
      char buffer[4096];
      const ssize_t n = ssl_ != nullptr ? SSL_read(ssl_, buffer, sizeof(buffer))
                                        : ::recv(fd_, buffer, sizeof(buffer), 0);
      if (n <= 0) return "";
      out.append(buffer, static_cast<size_t>(n));
      if (end == std::string::npos && (end = out.find("\r\n\r\n")) != std::string::npos) {
        end += 4;
        const size_t field = out.find("Content-Length: ");
        if (field < end) length = std::stoul(out.substr(field + 16));
      }
    }
    return out;
  }

 private:
  int fd_ = -1;
  SSL* ssl_ = nullptr;
  bool connected_ = false;
};

std::string HeaderLines(size_t count) {
  std::string lines;
  for (size_t i = 0; i < count; ++i)
    lines += absl::StrCat("X-Pad-", i, ": ", std::string(4000, 'a'), "\r\n");
  return lines;
}

class HttpServerTest : public ::testing::TestWithParam<bool> {  // param: TLS
 protected:
  static void SetUpTestSuite() {
    ::signal(SIGPIPE, SIG_IGN);  // a flood's write to a closed connection fails instead
    std::string dir = ::testing::TempDir() + "/llmint8-http-server-XXXXXX";
    ASSERT_NE(mkdtemp(dir.data()), nullptr);
    dir_ = new std::string(dir);
    absl::StatusOr<testing::TestCerts> certs = testing::WriteTestCerts(dir);
    ASSERT_TRUE(certs.ok()) << certs.status();
    certs_ = new testing::TestCerts(*certs);
  }
  static void TearDownTestSuite() {
    if (dir_ != nullptr) std::filesystem::remove_all(*dir_);  // the test keys
    delete dir_;
    delete certs_;
    dir_ = nullptr;
    certs_ = nullptr;
  }

  void SetUp() override {
    TlsServerConfig tls;
    if (GetParam()) {
      tls.cert_file = certs_->server_cert;
      tls.key_file = certs_->server_key;
      client_tls_ = SSL_CTX_new(TLS_client_method());
      ASSERT_EQ(SSL_CTX_load_verify_locations(client_tls_, certs_->ca.c_str(), nullptr), 1);
      SSL_CTX_set_verify(client_tls_, SSL_VERIFY_PEER, nullptr);
    }
    server_ = StartServer(tls);
    ASSERT_NE(server_, nullptr);
  }
  void TearDown() override {
    server_.reset();
    if (client_tls_ != nullptr) SSL_CTX_free(client_tls_);
  }

  static std::string* dir_;
  static testing::TestCerts* certs_;
  std::unique_ptr<HttpServer> server_;
  SSL_CTX* client_tls_ = nullptr;
};

std::string* HttpServerTest::dir_ = nullptr;
testing::TestCerts* HttpServerTest::certs_ = nullptr;

// The bytes a flood may get in before the server closes: what one request may take, plus
// what the sockets buffer (plus a chunk in flight).
size_t FloodBound(size_t chunk) {
  return kMaxRequestHeadBytes + kMaxBody + SocketBufferBytes() + chunk;
}

// A client that never ends its request line, a header line, or its headers: the server
// stops reading within the budget, whatever else it sends.
TEST_P(HttpServerTest, EndlessRequestsAreCutOff) {
  struct Flood {
    const char* what;
    std::string head;
    std::string chunk;  // sent again and again
  };
  for (const Flood& f : {Flood{"request line", "GET /", std::string(64 << 10, 'a')},
                         Flood{"header line", "GET / HTTP/1.1\r\nHost: x\r\nX-Endless: ",
                               std::string(64 << 10, 'a')},
                         Flood{"headers", "GET / HTTP/1.1\r\nHost: x\r\n", HeaderLines(16)}}) {
    RawClient client(server_->port(), client_tls_);
    ASSERT_TRUE(client.connected()) << f.what;
    const size_t sent = client.Flood(f.head, f.chunk);
    EXPECT_LE(sent, FloodBound(f.chunk.size())) << "the server read on past its budget: " << f.what;
  }
}

TEST_P(HttpServerTest, HeadOverTheLimitGetsBadRequest) {
  RawClient client(server_->port(), client_tls_);
  ASSERT_TRUE(client.connected());
  // 20 lines of 4 KiB: over 64 KiB, each line under httplib's own 8 KiB.
  ASSERT_TRUE(client.Send("GET / HTTP/1.1\r\nHost: x\r\n" + HeaderLines(20) + "\r\n"));
  EXPECT_EQ(client.ReceiveResponse().substr(0, 12), "HTTP/1.1 400");
}

// What a client sent past the point where a request was cut off (its head over the budget)
// or left unread (a body refused by its length) is not read as a next request: the
// connection closes after the answer.
TEST_P(HttpServerTest, NothingPastACutOrRefusedRequestIsServed) {
  const std::string smuggled = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
  {
    RawClient client(server_->port(), client_tls_);
    ASSERT_TRUE(client.connected());
    // The budget ends inside this line; the rest of it, then a request, follow.
    const std::string line = "X-Long: " + std::string(kMaxRequestHeadBytes + kMaxBody, 'a');
    ASSERT_TRUE(client.Send("GET / HTTP/1.1\r\nHost: x\r\n" + line + "\r\n" + smuggled));
    EXPECT_EQ(client.ReceiveResponse().substr(0, 12), "HTTP/1.1 400");
    EXPECT_EQ(client.ReceiveResponse(), "") << "a second answer on the connection";
  }
  {
    RawClient client(server_->port(), client_tls_);
    ASSERT_TRUE(client.connected());
    ASSERT_TRUE(client.Send(absl::StrCat("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: ",
                                         smuggled.size() + kMaxBody, "\r\n\r\n", smuggled)));
    const std::string answer = client.ReceiveResponse();
    EXPECT_EQ(answer.substr(0, 12), "HTTP/1.1 413");
    // The client is told not to send more on it.
    EXPECT_NE(answer.find("\r\nConnection: close\r\n"), std::string::npos) << answer;
    EXPECT_EQ(client.ReceiveResponse(), "") << "a second answer on the connection";
  }
}

// A GET's body, which httplib does not read, is refused: its bytes would be the next request.
TEST_P(HttpServerTest, AGetWithABodyIsRefusedAndNothingAfterItServed) {
  const std::string smuggled = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
  RawClient client(server_->port(), client_tls_);
  ASSERT_TRUE(client.connected());
  ASSERT_TRUE(client.Send(absl::StrCat(
      "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: ", smuggled.size(), "\r\n\r\n", smuggled)));
  const std::string answer = client.ReceiveResponse();
  EXPECT_EQ(answer.substr(0, 12), "HTTP/1.1 400") << answer;
  EXPECT_EQ(client.ReceiveResponse(), "") << "a second answer on the connection";
}

// A handler that throws gets a 500 that says nothing of the exception (httplib's own names
// it in a header), and the server goes on.
TEST_P(HttpServerTest, AThrowingHandlerGetsA500WithoutItsDetail) {
  RawClient client(server_->port(), client_tls_);
  ASSERT_TRUE(client.connected());
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(client.Send("GET /throws HTTP/1.1\r\nHost: x\r\n\r\n"));
    const std::string answer = client.ReceiveResponse();
    EXPECT_EQ(answer.substr(0, 12), "HTTP/1.1 500") << answer;
    EXPECT_EQ(answer.find("secret"), std::string::npos) << answer;
  }
}

// A client that closes its connection while its request waits (a queued request writes
// nothing) is seen gone: over TLS its close_notify alert comes before the end of stream.
TEST_P(HttpServerTest, AClientThatLeavesWhileItsRequestWaitsIsSeenGone) {
  *WaitOutcome() = nullptr;
  {
    RawClient client(server_->port(), client_tls_);
    ASSERT_TRUE(client.connected());
    ASSERT_TRUE(client.Send("GET /wait HTTP/1.1\r\nHost: x\r\n\r\n"));
    std::this_thread::sleep_for(std::chrono::milliseconds(200));  // the handler waits
    client.Shutdown();  // close_notify over TLS; then the socket closes
  }
  const absl::Time end = absl::Now() + absl::Seconds(15);
  while (WaitOutcome()->load() == nullptr && absl::Now() < end) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  ASSERT_NE(WaitOutcome()->load(), nullptr);
  EXPECT_STREQ(WaitOutcome()->load(), "gone");
}

// A TLS record whose bytes come one at a time is held to the request's time limit too (a
// blocking read would wait up to the read timeout for each byte).
TEST_P(HttpServerTest, ATricklingTlsRecordIsCutOff) {
  if (!GetParam()) GTEST_SKIP() << "TLS only; the plain server reads what comes";
  RawClient client(server_->port(), client_tls_);
  ASSERT_TRUE(client.connected());
  // The request's record, made by the session into memory, then sent a byte at a time.
  BIO* memory = BIO_new(BIO_s_mem());
  SSL_set0_wbio(client.ssl(), memory);  // the session owns it
  const std::string request =
      "GET / HTTP/1.1\r\nHost: x\r\nX-Pad: " + std::string(200, 'a') + "\r\n\r\n";
  ASSERT_EQ(SSL_write(client.ssl(), request.data(), static_cast<int>(request.size())),
            static_cast<int>(request.size()));
  std::string record(static_cast<size_t>(BIO_ctrl_pending(memory)), '\0');
  ASSERT_GT(record.size(), 200u);
  ASSERT_EQ(BIO_read(memory, record.data(), static_cast<int>(record.size())),
            static_cast<int>(record.size()));
  size_t sent = 0;  // 60 bytes: 18 s
  for (; sent < 60 && !client.Answered(static_cast<int>(kTrickle.count())); ++sent) {
    if (::send(client.fd(), record.data() + sent, 1, MSG_NOSIGNAL) != 1) break;
  }
  EXPECT_LT(sent, 60u) << "the server waited for the whole record";
}

// A request httplib answers itself before routing (a malformed Range: 416) leaves its body
// unread: the connection closes after the answer, so the body is not served as a request.
TEST_P(HttpServerTest, ARequestAnsweredBeforeRoutingClosesItsConnection) {
  const std::string smuggled = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
  RawClient client(server_->port(), client_tls_);
  ASSERT_TRUE(client.connected());
  ASSERT_TRUE(client.Send(absl::StrCat("POST / HTTP/1.1\r\nHost: x\r\nRange: bytes=5-1\r\n",
                                       "Content-Length: ", smuggled.size(), "\r\n\r\n", smuggled)));
  const std::string answer = client.ReceiveResponse();
  EXPECT_EQ(answer.substr(0, 12), "HTTP/1.1 416") << answer;
  EXPECT_EQ(answer.find("HTTP/1.1", 1), std::string::npos) << "a second answer: " << answer;
  // Closed at once, not at the keep-alive timeout (5 s).
  EXPECT_TRUE(client.Answered(2000));
  EXPECT_EQ(client.ReceiveResponse(), "") << "a second answer on the connection";
}

// A body trickled a byte at a time (each within the read timeout) is cut too: it gets the
// head's time again, plus each byte's at 64 KiB/s, not the time its Content-Length announced.
TEST_P(HttpServerTest, ATrickledBodyIsCutOff) {
  RawClient client(server_->port(), client_tls_);
  ASSERT_TRUE(client.connected());
  ASSERT_TRUE(client.Send("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n"));
  int bytes = 0;  // 60 bytes: 18 s
  while (bytes < 60 && !client.Answered(static_cast<int>(kTrickle.count()))) {
    if (!client.Send("b")) break;
    ++bytes;
  }
  EXPECT_LT(bytes, 60) << "the server waited for the whole body";
  const std::string answer = client.ReceiveResponse();
  EXPECT_TRUE(answer.empty() || answer.substr(0, 12) == "HTTP/1.1 400") << answer;
}

// A Content-Length that is not a byte count is refused (httplib reads "-1" as 2^64 - 1), and
// so are two that differ.
TEST_P(HttpServerTest, AContentLengthThatIsNoCountIsRefused) {
  for (const char* length : {"-1", "5x", "abc"}) {
    RawClient client(server_->port(), client_tls_);
    ASSERT_TRUE(client.connected());
    ASSERT_TRUE(client.Send(
        absl::StrCat("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: ", length, "\r\n\r\nhello")));
    EXPECT_EQ(client.ReceiveResponse().substr(0, 12), "HTTP/1.1 400") << length;
  }
  RawClient client(server_->port(), client_tls_);
  ASSERT_TRUE(client.connected());
  ASSERT_TRUE(client.Send(
      "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 9\r\n\r\nhello"));
  EXPECT_EQ(client.ReceiveResponse().substr(0, 12), "HTTP/1.1 400");
}

// A body that stops arriving is cut when a read times out (1 s here; 400), and the
// connection closes: what the client sends after is not read as a next request.
TEST_P(HttpServerTest, ABodyCutOffClosesItsConnection) {
  const std::string smuggled = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
  const std::string body = "xxxxx" + smuggled;
  RawClient client(server_->port(), client_tls_);
  ASSERT_TRUE(client.connected());
  ASSERT_TRUE(client.Send(absl::StrCat("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: ",
                                       body.size(), "\r\n\r\n", body.substr(0, 5))));
  const std::string answer = client.ReceiveResponse();  // at the read timeout
  EXPECT_EQ(answer.substr(0, 12), "HTTP/1.1 400") << answer;
  client.Send(smuggled);  // may fail: the server closed
  EXPECT_EQ(client.ReceiveResponse(), "") << "a second answer on the connection";
}

// A Range header does not slice the answer, nor multiply it (httplib would build one copy of
// the body per range, thousands of them from one header line).
TEST_P(HttpServerTest, RangesAreIgnored) {
  RawClient client(server_->port(), client_tls_);
  ASSERT_TRUE(client.connected());
  std::string ranges = "bytes=0-0";
  for (int i = 0; i < 1000; ++i) ranges += ",-";
  ASSERT_TRUE(client.Send("GET / HTTP/1.1\r\nHost: x\r\nRange: " + ranges + "\r\n\r\n"));
  const std::string answer = client.ReceiveResponse();
  EXPECT_EQ(answer.substr(0, 15), "HTTP/1.1 200 OK") << answer.substr(0, 200);
  EXPECT_TRUE(absl::EndsWith(answer, "\r\n\r\nok")) << answer.substr(0, 200);
}

// A client that sends its head a header line now and then, each within the read timeout,
// is cut off at the request's time limit, not served whenever it ends (slowloris).
TEST_P(HttpServerTest, ATricklingRequestIsCutOffAtItsTimeLimit) {
  RawClient client(server_->port(), client_tls_);
  ASSERT_TRUE(client.connected());
  ASSERT_TRUE(client.Send("GET / HTTP/1.1\r\nHost: x\r\n"));
  // Trickling for 60 x 300 ms = 18 s: six times the limit.
  int lines = 0;
  while (lines < 60 && !client.Answered(static_cast<int>(kTrickle.count()))) {
    if (!client.Send(absl::StrCat("X-Line-", lines, ": a\r\n"))) break;
    ++lines;
  }
  EXPECT_LT(lines, 60) << "the server waited for the whole trickle";
  const std::string answer = client.ReceiveResponse();
  EXPECT_TRUE(answer.empty() || answer.substr(0, 12) == "HTTP/1.1 400") << answer;
}

// A server stopping does not wait for a client still sending its request: destruction
// returns while the client trickles (here the request's own limit is a minute).
TEST_P(HttpServerTest, StoppingDoesNotWaitForATricklingClient) {
  TlsServerConfig tls;
  if (GetParam()) {
    tls.cert_file = certs_->server_cert;
    tls.key_file = certs_->server_key;
  }
  std::unique_ptr<HttpServer> server = StartServer(tls, absl::Seconds(60));
  ASSERT_NE(server, nullptr);
  RawClient client(server->port(), client_tls_);
  ASSERT_TRUE(client.connected());
  ASSERT_TRUE(client.Send("GET / HTTP/1.1\r\nHost: x\r\n"));
  std::this_thread::sleep_for(kTrickle);  // the request is being read
  std::atomic<bool> stopped{false};
  std::thread stopper([&] {
    server.reset();
    stopped = true;
  });
  int lines = 0;
  for (; lines < 60 && !stopped; ++lines) {  // 18 s
    if (!client.Send(absl::StrCat("X-Line-", lines, ": a\r\n"))) break;
    std::this_thread::sleep_for(kTrickle);
  }
  stopper.join();
  EXPECT_LT(lines, 60) << "the server's stop waited for the client";
}

// A TLS handshake sent a byte at a time is cut off at the request's time limit too.
TEST_P(HttpServerTest, ATricklingTlsHandshakeIsCutOff) {
  if (!GetParam()) GTEST_SKIP() << "TLS only; the plain server has no handshake";
  // The client's first flight (its ClientHello), made by a client session over memory.
  SSL* ssl = SSL_new(client_tls_);
  BIO* in = BIO_new(BIO_s_mem());
  BIO* out = BIO_new(BIO_s_mem());
  SSL_set_bio(ssl, in, out);
  ASSERT_EQ(SSL_connect(ssl), -1);  // wants the server's answer
  std::string hello(static_cast<size_t>(BIO_ctrl_pending(out)), '\0');
  ASSERT_GT(hello.size(), 60u);
  ASSERT_EQ(BIO_read(out, hello.data(), static_cast<int>(hello.size())),
            static_cast<int>(hello.size()));
  SSL_free(ssl);
  RawClient client(server_->port(), /*tls=*/nullptr);
  ASSERT_TRUE(client.connected());
  size_t sent = 0;  // 60 bytes: 18 s
  for (; sent < 60 && !client.Answered(static_cast<int>(kTrickle.count())); ++sent) {
    if (::send(client.fd(), hello.data() + sent, 1, MSG_NOSIGNAL) != 1) break;
  }
  EXPECT_LT(sent, 60u) << "the server waited for the whole trickle";
}

// A body refused by its length while the client is still sending it: the client reads the
// 413, not a reset that would have discarded it (the server takes what follows for a moment
// before it closes).
TEST_P(HttpServerTest, ARefusedBodyStillSendingGetsItsAnswer) {
  RawClient client(server_->port(), client_tls_);
  ASSERT_TRUE(client.connected());
  ASSERT_TRUE(client.Send("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4194304\r\n\r\n"));
  ASSERT_TRUE(client.Send(std::string(512 << 10, 'b')));
  EXPECT_EQ(client.ReceiveResponse().substr(0, 12), "HTTP/1.1 413");
}

// Each request of a kept-alive connection has a budget of its own, and a request within it
// (a head near the limit, a body at the limit) is served.
TEST_P(HttpServerTest, RequestsWithinTheBudgetAreServedOneAfterAnother) {
  RawClient client(server_->port(), client_tls_);
  ASSERT_TRUE(client.connected());
  const std::string head = "Host: x\r\n" + HeaderLines(15);  // 60 KiB
  for (int i = 0; i < 3; ++i) {
    SCOPED_TRACE(i);
    const std::string body(kMaxBody, 'b');
    ASSERT_TRUE(client.Send(absl::StrCat(
        "POST / HTTP/1.1\r\n", head, "Content-Type: text/plain\r\nContent-Length: ", body.size(),
        "\r\n\r\n", body)));
    const std::string answer = client.ReceiveResponse();
    EXPECT_EQ(answer.substr(0, 15), "HTTP/1.1 200 OK") << answer;
    EXPECT_TRUE(absl::EndsWith(answer, "\r\n\r\n1024")) << answer;
  }
}

INSTANTIATE_TEST_SUITE_P(PlainAndTls, HttpServerTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? "Tls" : "Plain";
                         });

// Past the threads and the connections that may wait for one, a connection is refused at once
// (503, Retry-After) instead of queued; the waiting one is served when a thread is free.
// A server whose one thread serves a request that blocks until `release`, with room for one
// connection more: Fill() takes both.
class BoundedTaskQueueTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_.new_task_queue = [this] { return made_ = new BoundedTaskQueue(1, 1); };
    server_.Get("/block", [this](const httplib::Request&, httplib::Response& res) {
      ++started_;
      for (int i = 0; i < 2000 && !release_; ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
      res.set_content("done", "text/plain");
    });
    port_ = server_.bind_to_any_port("127.0.0.1");
    ASSERT_GT(port_, 0);
    loop_ = std::thread([this] { server_.listen_after_bind(); });
    for (int i = 0; i < 5000 && made_ == nullptr; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    ASSERT_NE(made_.load(), nullptr);
  }

  void TearDown() override {
    release_ = true;
    if (first_.joinable()) first_.join();
    if (second_.joinable()) second_.join();
    server_.stop();
    if (loop_.joinable()) loop_.join();
  }

  int Get() const {
    httplib::Result r = httplib::Client("127.0.0.1", port_).Get("/block");
    return r ? r->status : 0;
  }

  // The first request is served (blocked) and the second waits: the queue holds 2.
  void Fill() {
    first_ = std::jthread([this] { first_status_ = Get(); });
    for (int i = 0; i < 1000 && started_ == 0; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    ASSERT_EQ(started_, 1) << "the one thread never took the first request";
    second_ = std::jthread([this] { second_status_ = Get(); });
    for (int i = 0; i < 1000 && made_.load()->held() < 2; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    ASSERT_EQ(made_.load()->held(), 2u);
  }

  BoundedHttpServer server_;
  std::atomic<BoundedTaskQueue*> made_{nullptr};  // by the listening thread, once it runs
  std::atomic<int> started_{0};
  std::atomic<bool> release_{false};
  int port_ = 0;
  std::thread loop_;
  std::jthread first_, second_;
  std::atomic<int> first_status_{0}, second_status_{0};  // 0: no answer
};

TEST_F(BoundedTaskQueueTest, AConnectionPastTheWaitingRoomIsRefusedAndTheWaitingOneServed) {
  ASSERT_NO_FATAL_FAILURE(Fill());
  const httplib::Result third = httplib::Client("127.0.0.1", port_).Get("/block");
  ASSERT_TRUE(third) << "no answer: " << httplib::to_string(third.error());
  EXPECT_EQ(third->status, 503);
  EXPECT_EQ(third->get_header_value("Retry-After"), "1");
  EXPECT_EQ(third->body, "too many connections; try again shortly\n");
  EXPECT_EQ(made_.load()->refused(), 1u);
  release_ = true;
  first_.join();
  second_.join();
  EXPECT_EQ(first_status_, 200);
  EXPECT_EQ(second_status_, 200);
  EXPECT_EQ(started_, 2);
}

// Refused connections that send nothing and stay open each linger up to kLingerFor, on a
// thread of their own, so the accepting thread takes the next at once: 20 in a row, each
// reading its whole 503 and the end before the next connects, take well under 20 x kLingerFor.
// They used to linger on the accepting thread: each connection waited for the one before it
// to end its 100 ms.
TEST_F(BoundedTaskQueueTest, SilentRefusedConnectionsDoNotHoldTheAcceptingThread) {
  ASSERT_NO_FATAL_FAILURE(Fill());
  constexpr int kSilent = 20;
  std::vector<int> fds;  // kept open (silent clients) until the end
  absl::Cleanup close_all = [&fds] {
    for (int fd : fds) ::close(fd);
  };
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port_));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  const absl::Time start = absl::Now();
  for (int i = 0; i < kSilent; ++i) {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    ASSERT_GE(fd, 0);
    fds.push_back(fd);
    ASSERT_EQ(::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)), 0);
    // The whole 503, then the end of the server's writing, never sending a byte.
    std::string got;
    char buf[512];
    for (;;) {
      pollfd p{fd, POLLIN, 0};
      ASSERT_EQ(::poll(&p, 1, 10000), 1) << "no answer or end within 10 s; got: " << got;
      const ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
      ASSERT_GE(n, 0) << "reset: " << std::strerror(errno) << "; got: " << got;
      if (n == 0) break;
      got.append(buf, static_cast<size_t>(n));
    }
    EXPECT_TRUE(absl::StartsWith(got, "HTTP/1.1 503")) << got;
    EXPECT_TRUE(absl::EndsWith(got, "too many connections; try again shortly\n")) << got;
  }
  const absl::Duration took = absl::Now() - start;
  EXPECT_EQ(made_.load()->refused(), static_cast<uint64_t>(kSilent));
  // Lingering on the accepting thread, the 20 took at least 19 x kLingerFor (1.9 s).
  EXPECT_LT(took, kSilent * kLingerFor / 2);
  for (int i = 0; i < 200 && LingeringConnections() > 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(LingeringConnections(), 0u) << "each closed at its deadline";
}

}  // namespace
}  // namespace llmint8::coordinator
