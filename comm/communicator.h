// Collectives among the tensor-parallel ranks of one model group.
//
// One Communicator per rank; all ranks call the same collectives in the same order, with the
// same element counts (the coordinator drives every worker through the same steps). Buffers
// are host memory for the Gloo and local backends and device memory for the NCCL backend
// (`on_device()` says which); a span over device memory is only a pointer and a length here,
// never dereferenced on the host.
//
// Completion: every call returns when the collective has finished on this rank (NCCL: the
// work has completed on the communicator's stream), so the caller may read the result.
//
// Errors (a peer gone, a timeout, a transport error) come back as absl::Status naming the
// rank and the backend, never as an abort or an exception. After a transport error or a
// timeout the group is broken: every later call fails fast with FailedPrecondition and the
// first error, and the caller must form a new group. Bad arguments (sizes, root) give
// InvalidArgument and leave the group usable.
//
// Not thread-safe: one caller at a time. Create through MakeCommunicator (make_communicator.h).
#ifndef LLMINT8_COMM_COMMUNICATOR_H_
#define LLMINT8_COMM_COMMUNICATOR_H_

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "absl/status/status.h"
#include "common/half.h"

namespace llmint8::comm {

// Element types a collective can carry.
enum class DataType { kFloat32, kFloat16, kUint8 };
size_t DataTypeSize(DataType type);

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual bool on_device() const = 0;
  virtual std::string backend() const = 0;  // "gloo", "nccl", "local"

  // In place: data[i] = sum over ranks of data[i]. fp16 sums are accumulated in fp16 (NCCL)
  // or pairwise in float and rounded to fp16 per step (Gloo); fp32 sums of integer-valued
  // data below 2^24 are exact on every backend.
  absl::Status AllReduceSum(std::span<float> data) {
    return AllReduceSumImpl(data.data(), data.size(), DataType::kFloat32);
  }
  absl::Status AllReduceSum(std::span<Half> data) {
    return AllReduceSumImpl(data.data(), data.size(), DataType::kFloat16);
  }

  // out = concat over ranks (rank order) of in; out.size() must be in.size() * size().
  // `in` and `out` must not overlap, except that `in` may be this rank's slice of `out`.
  absl::Status AllGather(std::span<const float> in, std::span<float> out) {
    return CheckedAllGather(in.data(), in.size(), out.data(), out.size(), DataType::kFloat32);
  }
  absl::Status AllGather(std::span<const Half> in, std::span<Half> out) {
    return CheckedAllGather(in.data(), in.size(), out.data(), out.size(), DataType::kFloat16);
  }

  // Bytes of `root` copied to every rank (token ids, small control data). Every rank passes
  // the same length. 0 <= root < size().
  absl::Status Broadcast(std::span<uint8_t> data, int root);

  // Returns once every rank has entered the barrier.
  virtual absl::Status Barrier() = 0;

  // Breaks the group on purpose, for a rank that cannot go on with it (an error of its own
  // in the middle of a step's collectives, which its peers cannot know of): this rank's later
  // calls fail with FailedPrecondition naming `why`, and peers stop waiting for it. Gloo closes
  // this rank's connections, so a peer blocked on it in a collective, or entering one, fails
  // at once with Unavailable instead of sitting out its timeout (and, breaking, closes its
  // own: the whole group learns). NCCL aborts the communicator (ncclCommAbort); when its
  // peers notice depends on NCCL's transport (sockets: when the connection drops; shared
  // memory or NVLink: their timeout). A group of one has no peers, and LocalCommunicator's
  // later calls still succeed (Gloo's and NCCL's of one fail as above). Nothing happens on a
  // group that is already broken (a transport error closes it the same way).
  // Never blocks on peers.
  virtual void Abort(const absl::Status& why) = 0;

 protected:
  // Backends implement these; arguments are already checked (counts match, root in range).
  virtual absl::Status AllReduceSumImpl(void* data, size_t count, DataType type) = 0;
  // `count` is the per-rank element count; `out` holds count * size() elements.
  virtual absl::Status AllGatherImpl(const void* in, void* out, size_t count, DataType type) = 0;
  virtual absl::Status BroadcastImpl(void* data, size_t bytes, int root) = 0;

 private:
  absl::Status CheckedAllGather(const void* in, size_t in_count, void* out, size_t out_count,
                                DataType type);
};

}  // namespace llmint8::comm

#endif  // LLMINT8_COMM_COMMUNICATOR_H_
