// The NCCL backend of a build without CUDA.
#include "absl/strings/str_cat.h"
#include "comm/nccl_communicator.h"

namespace llmint8::comm {

absl::StatusOr<std::unique_ptr<Communicator>> CreateNcclCommunicator(const CommOptions& options) {
  return absl::UnimplementedError(
      absl::StrCat("nccl rank ", options.rank,
                   ": this build has no NCCL backend (configure with CUDA: "
                   "-DLLMINT8_CUDA=ON), use backend \"gloo\" for CPU workers"));
}

bool NcclBackendBuilt() { return false; }

}  // namespace llmint8::comm
