// Where the ranks of a local tensor-parallel group run on this machine's GPUs (serve, eval).
//
// Rank r runs on device r % devices. With more ranks than GPUs, ranks share a device and each
// rank's process needs comm/shared_gpu_env.h's NCCL environment (how a one-GPU machine runs TP 2
// and 4).
#ifndef LLMINT8_TOOLS_GPU_PLACEMENT_H_
#define LLMINT8_TOOLS_GPU_PLACEMENT_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace llmint8::tools {

struct GpuPlacement {
  int cuda_device = 0;
  bool shares_gpu = false;  // more ranks than devices
};

// devices >= 1, 0 <= rank < tp.
GpuPlacement PlaceRank(int rank, int tp, int devices);

// The error of serve and eval when --device=cuda finds no GPU it can use: FailedPrecondition
// saying so, with `reason` (the driver's, e.g. cudaErrorInsufficientDriver; or that no device
// is visible) and the way out.
absl::Status NoUsableGpu(std::string_view reason);

// The devices --device=cuda places ranks on, from `count` (the driver's device count):
// NoUsableGpu when the count failed or is 0.
absl::StatusOr<int> UsableGpus(const absl::StatusOr<int64_t>& count);

// What serve and eval log when `tp` ranks run on fewer `devices`; "" when each has its own.
std::string SharedGpuWarning(int tp, int devices);

}  // namespace llmint8::tools

#endif  // LLMINT8_TOOLS_GPU_PLACEMENT_H_
