// Collectives among the tensor-parallel ranks of one model group.
//
// One Communicator per rank; all ranks call the same collectives in the same order (the
// coordinator drives every worker through the same steps). Buffers are host memory for the
// Gloo backend and device memory for the NCCL backend (`on_device()` says which).
// Errors (a peer gone, a timeout, a transport error) come back as absl::Status naming the
// rank and the backend, never as an abort. Not thread-safe: one caller at a time.
#ifndef LLMINT8_COMM_COMMUNICATOR_H_
#define LLMINT8_COMM_COMMUNICATOR_H_

#include <cstdint>
#include <span>
#include <string>

#include "absl/status/status.h"

namespace llmint8::comm {

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual bool on_device() const = 0;
  virtual std::string backend() const = 0;  // "gloo", "nccl", "local"

  // In place: data[i] = sum over ranks of data[i].
  virtual absl::Status AllReduceSum(std::span<float> data) = 0;
  // out = concat over ranks (rank order) of in; out.size() == in.size() * size().
  virtual absl::Status AllGather(std::span<const float> in, std::span<float> out) = 0;
  // Bytes of `root` copied to every rank (used for token ids and small control data).
  virtual absl::Status Broadcast(std::span<uint8_t> data, int root) = 0;
  virtual absl::Status Barrier() = 0;
};

}  // namespace llmint8::comm

#endif  // LLMINT8_COMM_COMMUNICATOR_H_
