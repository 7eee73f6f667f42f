// One entry point for every backend:
//   "gloo"  - TCP, host memory (CPU workers; multi-process tests on loopback)
//   "nccl"  - device memory (GPU workers; Unimplemented in a build without CUDA)
//   "local" - a group of one (TP = 1), host memory; world_size must be 1
// Blocks until the group is formed or `options.timeout` passes.
#ifndef LLMINT8_COMM_MAKE_COMMUNICATOR_H_
#define LLMINT8_COMM_MAKE_COMMUNICATOR_H_

#include <memory>
#include <string_view>

#include "absl/status/statusor.h"
#include "comm/comm_options.h"
#include "comm/communicator.h"

namespace llmint8::comm {

absl::StatusOr<std::unique_ptr<Communicator>> MakeCommunicator(std::string_view backend,
                                                               const CommOptions& options);

}  // namespace llmint8::comm

#endif  // LLMINT8_COMM_MAKE_COMMUNICATOR_H_
