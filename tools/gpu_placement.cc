#include "tools/gpu_placement.h"

#include "absl/strings/str_cat.h"

namespace llmint8::tools {

GpuPlacement PlaceRank(int rank, int tp, int devices) {
  return GpuPlacement{rank % devices, tp > devices};
}

absl::Status NoUsableGpu(std::string_view reason) {
  return absl::FailedPreconditionError(
      absl::StrCat("--device=cuda: no usable CUDA GPU on this machine (",
                   absl::string_view(reason.data(), reason.size()),
                   "); check the GPU and its driver (nvidia-smi), or run with --device=cpu"));
}

absl::StatusOr<int> UsableGpus(const absl::StatusOr<int64_t>& count) {
  if (!count.ok()) return NoUsableGpu(count.status().ToString());
  if (*count <= 0) return NoUsableGpu("no device is visible");
  return static_cast<int>(*count);
}

std::string SharedGpuWarning(int tp, int devices) {
  if (tp <= devices) return "";
  return absl::StrCat(tp, " ranks on ", devices,
                      " GPU(s): ranks share a GPU, each with its own NCCL_HOSTID (NCCL over "
                      "sockets)");
}

}  // namespace llmint8::tools
