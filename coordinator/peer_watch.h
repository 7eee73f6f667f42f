// Whether the client of an HTTP request is still connected, for a handler that cannot see its
// socket (cpp-httplib 0.11 gives a handler none, and a non-streamed request writes nothing
// until its end): the kernel's table of TCP connections (Linux /proc/net/tcp and tcp6), looked
// up by the connection's addresses and ports. A client that closed its end leaves ours in
// CLOSE_WAIT; one that reset it removes the entry. The tables are read at most every
// `refresh` for all watches of the process together.
//
//   PeerWatch peer(req.local_addr, req.local_port, req.remote_addr, req.remote_port);
//   ... if (peer.Gone()) cancel the request ...
//
// A client that half-closes its end after sending the request (shutdown(SHUT_WR)) looks gone
// too, as it does to Go's net/http; HTTP clients do not do that. Conservative otherwise: a
// connection never found open in the table (no /proc, an address it cannot parse) is never
// reported gone, nor one missing from a single read (a read of the table may skip a row).
//
// One PeerWatch belongs to one request's thread; the shared table is thread-safe.
#ifndef LLMINT8_COORDINATOR_PEER_WATCH_H_
#define LLMINT8_COORDINATOR_PEER_WATCH_H_

#include <cstdint>
#include <string>

#include "absl/time/time.h"

namespace llmint8::coordinator {

class PeerWatch {
 public:
  // Numeric addresses as httplib gives them ("127.0.0.1", "::1", "::ffff:10.0.0.7").
  PeerWatch(const std::string& local_addr, int local_port, const std::string& remote_addr,
            int remote_port, absl::Duration refresh = absl::Milliseconds(200));

  // True once the peer is known to have closed or reset the connection.
  bool Gone();

 private:
  std::string key_;  // as the table writes the connection; empty: unknown, never gone
  const absl::Duration refresh_;
  bool seen_ = false;  // found open in the table once
  int misses_ = 0;     // reads of the table in a row without it, since
  uint64_t last_miss_ = 0;
  bool gone_ = false;
};

}  // namespace llmint8::coordinator

#endif  // LLMINT8_COORDINATOR_PEER_WATCH_H_
