#include "comm/gloo_small_exchange.h"

#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"

namespace llmint8::comm {
namespace {

// Before each payload: its size, the sender's call count and the exchange's kind, so that
// ranks that disagree on the sequence of collectives (a bug, never a client's doing) break the
// group instead of summing stale bytes.
struct Header {
  uint64_t bytes;
  uint64_t call;
  uint64_t kind;
};
constexpr size_t kHeaderBytes = sizeof(Header);

}  // namespace

GlooSmallExchange::GlooSmallExchange(int rank, int size, gloo::rendezvous::Store& store,
                                     std::shared_ptr<gloo::transport::Device> device,
                                     std::chrono::milliseconds timeout)
    : rank_(rank),
      size_(size),
      context_(std::make_shared<gloo::rendezvous::Context>(rank, size)),
      send_(kHeaderBytes + kMaxBytes),
      recv_(size),
      send_buffers_(size),
      recv_buffers_(size) {
  context_->setTimeout(timeout);
  context_->connectFullMesh(store, device);
  for (int peer = 0; peer < size_; ++peer) {
    if (peer == rank_) continue;
    auto& pair = context_->getPair(peer);
    pair->setSync(/*sync=*/true, /*busyPoll=*/false);  // busy polling would starve shared cores
    recv_[peer].resize(kHeaderBytes + kMaxBytes);
    // Slot 0 of each pair: a send here lands in the peer's recv buffer of slot 0.
    send_buffers_[peer] = pair->createSendBuffer(0, send_.data(), send_.size());
    recv_buffers_[peer] = pair->createRecvBuffer(0, recv_[peer].data(), recv_[peer].size());
  }
}

absl::Status GlooSmallExchange::AllGather(const void* in, void* out, size_t bytes, uint64_t kind) {
  const Header mine{bytes, calls_++, kind};
  std::memcpy(send_.data(), &mine, kHeaderBytes);
  std::memcpy(send_.data() + kHeaderBytes, in, bytes);  // `in` may alias our slice of `out`
  for (int peer = 0; peer < size_; ++peer) {
    if (peer != rank_) send_buffers_[peer]->send(0, kHeaderBytes + bytes);
  }
  uint8_t* dst = static_cast<uint8_t*>(out);
  std::memcpy(dst + static_cast<size_t>(rank_) * bytes, send_.data() + kHeaderBytes, bytes);
  absl::Status mismatch;  // the first; every peer's payload is still taken in
  for (int peer = 0; peer < size_; ++peer) {
    if (peer == rank_) continue;
    recv_buffers_[peer]->waitRecv();
    Header theirs;
    std::memcpy(&theirs, recv_[peer].data(), kHeaderBytes);
    if (theirs.bytes != mine.bytes || theirs.call != mine.call || theirs.kind != mine.kind) {
      if (mismatch.ok()) {
        mismatch = absl::InternalError(absl::StrCat(
            "collective mismatch: rank ", peer, " sent ", theirs.bytes, " bytes of kind ",
            theirs.kind, " for its call ", theirs.call, " while rank ", rank_, " gathers ",
            mine.bytes, " bytes of kind ", mine.kind, " in its call ", mine.call));
      }
      continue;
    }
    std::memcpy(dst + static_cast<size_t>(peer) * bytes, recv_[peer].data() + kHeaderBytes, bytes);
  }
  // send_ is reused by the next call: its sends must be done (in sync mode they are).
  for (int peer = 0; peer < size_; ++peer) {
    if (peer != rank_) send_buffers_[peer]->waitSend();
  }
  return mismatch;
}

void GlooSmallExchange::Close() {
  try {
    context_->closeConnections();
  } catch (const std::exception&) {
    // A pair that fails to close is closed with the context at the latest.
  }
}

}  // namespace llmint8::comm
