// The communicator of a group of one (TP = 1): every collective is the identity.
// Host memory: AllGather copies `in` to `out` with memcpy unless they are the same buffer, so
// for device buffers at TP = 1 pass out == in (or use the "nccl" backend with one rank).
#ifndef LLMINT8_COMM_LOCAL_COMMUNICATOR_H_
#define LLMINT8_COMM_LOCAL_COMMUNICATOR_H_

#include <string>

#include "comm/communicator.h"

namespace llmint8::comm {

class LocalCommunicator : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  bool on_device() const override { return false; }
  std::string backend() const override { return "local"; }
  absl::Status Barrier() override { return absl::OkStatus(); }
  void Abort(const absl::Status&) override {}  // no peers wait on a group of one

 protected:
  absl::Status AllReduceSumImpl(void*, size_t, DataType) override { return absl::OkStatus(); }
  absl::Status AllGatherImpl(const void* in, void* out, size_t count, DataType type) override;
  absl::Status BroadcastImpl(void*, size_t, int) override { return absl::OkStatus(); }
};

}  // namespace llmint8::comm

#endif  // LLMINT8_COMM_LOCAL_COMMUNICATOR_H_
