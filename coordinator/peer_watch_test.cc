// PeerWatch against real loopback TCP connections: open, closed by the peer (FIN), reset by
// the peer (RST), and a connection the table never had.
#include "coordinator/peer_watch.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "absl/time/clock.h"
#include "gtest/gtest.h"

namespace llmint8::coordinator {
namespace {

int Port(int fd, bool peer) {
  sockaddr_in addr{};
  socklen_t len = sizeof(addr);
  const int rc = peer ? getpeername(fd, reinterpret_cast<sockaddr*>(&addr), &len)
                      : getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  return rc == 0 ? ntohs(addr.sin_port) : -1;
}

// A server's accepted socket and the client's, on loopback.
struct Connection {
  int listener = -1, server = -1, client = -1;
  Connection() {
    listener = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
    listen(listener, 1);
    socklen_t len = sizeof(addr);
    getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len);
    client = socket(AF_INET, SOCK_STREAM, 0);
    connect(client, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
    server = accept(listener, nullptr, nullptr);
  }
  ~Connection() {
    for (int fd : {listener, server, client}) {
      if (fd >= 0) close(fd);
    }
  }
  PeerWatch Watch() const {
    return PeerWatch("127.0.0.1", Port(server, false), "127.0.0.1", Port(server, true),
                     absl::ZeroDuration());
  }
};

// Polls Gone() for up to 2 s.
bool GoneWithin2s(PeerWatch& watch) {
  const absl::Time end = absl::Now() + absl::Seconds(2);
  while (absl::Now() < end) {
    if (watch.Gone()) return true;
    absl::SleepFor(absl::Milliseconds(10));
  }
  return false;
}

TEST(PeerWatchTest, AnOpenConnectionIsNotGoneAndAClosedOneIs) {
  Connection c;
  ASSERT_GE(c.server, 0);
  PeerWatch watch = c.Watch();
  EXPECT_FALSE(watch.Gone());
  EXPECT_FALSE(watch.Gone());
  close(c.client);  // FIN: the server's end waits in CLOSE_WAIT
  c.client = -1;
  EXPECT_TRUE(GoneWithin2s(watch));
  EXPECT_TRUE(watch.Gone()) << "stays gone";
}

TEST(PeerWatchTest, AResetConnectionIsGone) {
  Connection c;
  ASSERT_GE(c.server, 0);
  PeerWatch watch = c.Watch();
  EXPECT_FALSE(watch.Gone());
  linger hard{.l_onoff = 1, .l_linger = 0};  // close with RST: the server's entry goes
  setsockopt(c.client, SOL_SOCKET, SO_LINGER, &hard, sizeof(hard));
  close(c.client);
  c.client = -1;
  EXPECT_TRUE(GoneWithin2s(watch));
}

TEST(PeerWatchTest, AConnectionTheTableNeverHadIsNotGone) {
  // No such connection, asked over many reads of the table (two misses would do for one
  // that had been seen open).
  PeerWatch never("127.0.0.1", 1, "127.0.0.1", 1, absl::ZeroDuration());
  for (int i = 0; i < 20; ++i) {
    ASSERT_FALSE(never.Gone()) << "read " << i;
    absl::SleepFor(absl::Milliseconds(15));
  }
  EXPECT_FALSE(PeerWatch("", -1, "", -1).Gone()) << "what httplib could not tell";
  EXPECT_FALSE(PeerWatch("not an address", 80, "127.0.0.1", 5000).Gone());
}

// Another client with the same source port, from another address, closing: not this one.
TEST(PeerWatchTest, AnotherClientOnTheSamePortsIsNotThisOne) {
  Connection c;
  ASSERT_GE(c.server, 0);
  PeerWatch other("127.0.0.1", Port(c.server, false), "127.0.0.2", Port(c.server, true),
                  absl::ZeroDuration());
  PeerWatch mine = c.Watch();
  close(c.client);
  c.client = -1;
  EXPECT_TRUE(GoneWithin2s(mine));
  EXPECT_FALSE(other.Gone()) << "never seen: the addresses differ";
}

}  // namespace
}  // namespace llmint8::coordinator
