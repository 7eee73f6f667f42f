// Collectives over Gloo's TCP transport, on host memory (CPU workers, and tests of tensor
// parallelism on loopback). Group formation: every rank publishes its listening address
// through the Rendezvous and connects a full mesh; a peer that does not appear within
// `options.timeout` gives DeadlineExceeded. Each collective is bounded by the same timeout.
// Gloo's C++ exceptions are caught here and never cross this API.
//
// AllReduceSum of up to 64 KiB (the per-layer reductions of decode) is one
// all-gather and a local sum in rank order, the same on every rank: one exchange instead of the
// ring's two rounds, which is most of a decode step on a few CPU cores. All-gathers of up to
// 64 KiB per rank go over a second, sync-mode mesh (gloo_small_exchange.h: tens of us instead
// of hundreds per exchange; bench/README.md). Larger buffers take Gloo's ring algorithms, after
// one small exchange in which the ranks check that they agree on the collective's size.
#ifndef LLMINT8_COMM_GLOO_COMMUNICATOR_H_
#define LLMINT8_COMM_GLOO_COMMUNICATOR_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "comm/comm_options.h"
#include "comm/communicator.h"

namespace gloo {
class Context;
}  // namespace gloo

namespace llmint8::comm {

class GlooSmallExchange;

class GlooCommunicator : public Communicator {
 public:
  // Forms the group (blocks until every rank has joined, or the timeout). Uses
  // rank, world_size, rendezvous, key_prefix, timeout, gloo_hostname, gloo_interface.
  static absl::StatusOr<std::unique_ptr<GlooCommunicator>> Create(const CommOptions& options);

  ~GlooCommunicator() override;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  bool on_device() const override { return false; }
  std::string backend() const override { return "gloo"; }
  absl::Status Barrier() override;
  void Abort(const absl::Status& why) override;

 protected:
  absl::Status AllReduceSumImpl(void* data, size_t count, DataType type) override;
  absl::Status AllGatherImpl(const void* in, void* out, size_t count, DataType type) override;
  absl::Status BroadcastImpl(void* data, size_t bytes, int root) override;

 private:
  GlooCommunicator(int rank, int size, absl::Duration timeout,
                   std::shared_ptr<gloo::Context> context,
                   std::unique_ptr<GlooSmallExchange> small);

  // Runs one Gloo collective `op` (which may throw), mapping exceptions to Status and marking
  // the group broken on transport errors.
  template <typename Op>
  absl::Status Run(const char* what, Op&& op);

  // FailedPrecondition once the group broke (every later call fails, even an empty one).
  absl::Status Usable(const char* what) const;

  // Before a collective that goes through Gloo's own algorithms: every rank compares what it
  // is about to run (`kind`, its bytes, its root) over the small exchange. Gloo reads its
  // peers' data on its event-loop thread, where its own check of a message's size throws with
  // nothing to catch it: ranks that disagree (a bug upstream) ended the process, or left a
  // buffer half filled with an OK status. Internal, the group broken, instead.
  absl::Status AgreeOnCollective(const char* what, uint64_t kind, uint64_t bytes, int root);

  // Closes this rank's connections of both meshes: peers waiting on it fail at once.
  void CloseConnections();

  int rank_;
  int size_;
  absl::Duration timeout_;
  std::shared_ptr<gloo::Context> context_;
  std::unique_ptr<GlooSmallExchange> small_;  // when size > 1
  uint32_t next_tag_ = 0;          // same sequence on every rank: calls happen in the same order
  absl::Status broken_;            // the error that broke the group; OK while healthy
  std::vector<uint8_t> gathered_;  // small all-reduces: every rank's buffer, reused
  std::vector<uint64_t> agreed_;   // AgreeOnCollective: every rank's (kind, bytes, root)
};

}  // namespace llmint8::comm

#endif  // LLMINT8_COMM_GLOO_COMMUNICATOR_H_
