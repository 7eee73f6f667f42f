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

}  // namespace llmint8::tools
