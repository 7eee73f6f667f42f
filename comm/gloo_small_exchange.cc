#include "comm/gloo_small_exchange.h"

#include <cstring>

namespace llmint8::comm {

GlooSmallExchange::GlooSmallExchange(int rank, int size, gloo::rendezvous::Store& store,
                                     std::shared_ptr<gloo::transport::Device> device,
                                     std::chrono::milliseconds timeout)
    : rank_(rank),
      size_(size),
      context_(std::make_shared<gloo::rendezvous::Context>(rank, size)),
      send_(kMaxBytes),
      recv_(size),
      send_buffers_(size),
      recv_buffers_(size) {
  context_->setTimeout(timeout);
  context_->connectFullMesh(store, device);
  for (int peer = 0; peer < size_; ++peer) {
    if (peer == rank_) continue;
    auto& pair = context_->getPair(peer);
    pair->setSync(/*sync=*/true, /*busyPoll=*/false);  // busy polling would starve shared cores
    recv_[peer].resize(kMaxBytes);
    // Slot 0 of each pair: a send here lands in the peer's recv buffer of slot 0.
    send_buffers_[peer] = pair->createSendBuffer(0, send_.data(), kMaxBytes);
    recv_buffers_[peer] = pair->createRecvBuffer(0, recv_[peer].data(), kMaxBytes);
  }
}

void GlooSmallExchange::AllGather(const void* in, void* out, size_t bytes) {
  std::memcpy(send_.data(), in, bytes);  // `in` may alias this rank's slice of `out`
  for (int peer = 0; peer < size_; ++peer) {
    if (peer != rank_) send_buffers_[peer]->send(0, bytes);
  }
  uint8_t* dst = static_cast<uint8_t*>(out);
  std::memcpy(dst + static_cast<size_t>(rank_) * bytes, send_.data(), bytes);
  for (int peer = 0; peer < size_; ++peer) {
    if (peer == rank_) continue;
    recv_buffers_[peer]->waitRecv();
    std::memcpy(dst + static_cast<size_t>(peer) * bytes, recv_[peer].data(), bytes);
  }
  // send_ is reused by the next call: its sends must be done (in sync mode they are).
  for (int peer = 0; peer < size_; ++peer) {
    if (peer != rank_) send_buffers_[peer]->waitSend();
  }
}

}  // namespace llmint8::comm
