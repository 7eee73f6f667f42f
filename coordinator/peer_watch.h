// Whether the client of an HTTP request is still connected, for a handler that cannot see its
// socket (cpp-httplib 0.11 gives a handler none, and a non-streamed request writes nothing
// until its end): the kernel's table of TCP connections (Linux /proc/net/tcp and tcp6), looked
// up by the connection's two ports. A client that closed its end leaves ours in CLOSE_WAIT; one
// that reset it removes the entry. The table is read at most every `refresh` for all watches
// of the process together.
//
//   PeerWatch peer(req.local_port, req.remote_port);
//   ... if (peer.Gone()) cancel the request ...
//
// Conservative: a connection never found in the table (no /proc, another network namespace's
// view) is never reported gone. Thread-safe.
#ifndef LLMINT8_COORDINATOR_PEER_WATCH_H_
#define LLMINT8_COORDINATOR_PEER_WATCH_H_

#include "absl/time/time.h"

namespace llmint8::coordinator {

class PeerWatch {
 public:
  PeerWatch(int local_port, int remote_port, absl::Duration refresh = absl::Milliseconds(200));

  // True once the peer is known to have closed or reset the connection.
  bool Gone();

 private:
  const int local_port_;
  const int remote_port_;
  const absl::Duration refresh_;
  bool seen_ = false;  // found open in the table once
  bool gone_ = false;
};

}  // namespace llmint8::coordinator

#endif  // LLMINT8_COORDINATOR_PEER_WATCH_H_
