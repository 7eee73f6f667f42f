// The all-gather of small buffers (decode's per-layer all-reduces) over a second Gloo full mesh
// whose pairs run in sync mode with buffers registered once. Gloo's allgather with unbound
// buffers goes through the transport's event-loop thread: 0.27-0.37 ms per 1 KiB exchange
// between two ranks on loopback; a sync-mode pair sends and reads its socket in the calling
// thread: 12-25 us (llmint8_comm_latency, bench/README.md, 2 shared cores). Sync mode does not
// take unbound buffers, so it gets a mesh of its own and the large collectives keep theirs.
//
// Every rank sends its buffer to each peer, then reads each peer's. The simultaneous sends
// cannot deadlock: Gloo's send sizes the socket's send buffer to the message (the kernel
// doubles it), so a send of up to kMaxBytes completes without the peer reading, and ranks are
// at most one call apart, so at most two unread messages wait in either direction. A read
// waits at most the context's timeout. Each message carries its size, the sender's call count
// and its kind; a mismatch (ranks out of step on their collectives: a bug) throws
// std::runtime_error instead of gathering stale bytes. Failures throw (Gloo's IoException for
// a timeout or a peer gone); the caller maps them. One caller at a time.
#ifndef LLMINT8_COMM_GLOO_SMALL_EXCHANGE_H_
#define LLMINT8_COMM_GLOO_SMALL_EXCHANGE_H_

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "gloo/rendezvous/context.h"
#include "gloo/rendezvous/store.h"
#include "gloo/transport/buffer.h"
#include "gloo/transport/device.h"

namespace llmint8::comm {

class GlooSmallExchange {
 public:
  static constexpr size_t kMaxBytes = size_t{64} << 10;

  // Connects the mesh through `store` (keys of its own: give it a scope of its own).
  GlooSmallExchange(int rank, int size, gloo::rendezvous::Store& store,
                    std::shared_ptr<gloo::transport::Device> device,
                    std::chrono::milliseconds timeout);

  // out[r * bytes, (r + 1) * bytes) = rank r's `in`, for bytes <= kMaxBytes. `in` may be this
  // rank's slice of `out`. `kind` names what the exchange is for (data, or a check the caller
  // makes before another collective): Internal when a peer's payload is not this call's (its
  // size, call count or kind differ: ranks that disagree on the sequence of collectives, a
  // bug); Gloo's own failures (a peer gone, a timeout) throw its exceptions, as its
  // collectives do.
  absl::Status AllGather(const void* in, void* out, size_t bytes, uint64_t kind = 0);

  // Closes the connections to every peer (their reads from this rank fail at once); later
  // calls throw. Never throws.
  void Close();

 private:
  int rank_;
  int size_;
  std::shared_ptr<gloo::rendezvous::Context> context_;
  uint64_t calls_ = 0;
  std::vector<uint8_t> send_;               // header + up to kMaxBytes: what this rank sends
  std::vector<std::vector<uint8_t>> recv_;  // per rank: header + up to kMaxBytes from it
  std::vector<std::unique_ptr<gloo::transport::Buffer>> send_buffers_, recv_buffers_;  // per peer
};

}  // namespace llmint8::comm

#endif  // LLMINT8_COMM_GLOO_SMALL_EXCHANGE_H_
