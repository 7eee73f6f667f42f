#include "comm/make_communicator.h"

#include "absl/strings/str_cat.h"
#include "comm/gloo_communicator.h"
#include "comm/local_communicator.h"
#include "comm/nccl_communicator.h"

namespace llmint8::comm {

absl::StatusOr<std::unique_ptr<Communicator>> MakeCommunicator(std::string_view backend,
                                                               const CommOptions& options) {
  if (backend == "gloo") {
    absl::StatusOr<std::unique_ptr<GlooCommunicator>> comm = GlooCommunicator::Create(options);
    if (!comm.ok()) return comm.status();
    return std::unique_ptr<Communicator>(std::move(*comm));
  }
  if (backend == "nccl") return CreateNcclCommunicator(options);
  if (backend == "local") {
    if (options.world_size != 1 || options.rank != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("backend \"local\" is a group of one; got rank ", options.rank, " of ",
                       options.world_size, " (use \"gloo\" or \"nccl\" for tensor parallelism)"));
    }
    return std::unique_ptr<Communicator>(new LocalCommunicator());
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown communicator backend \"",
                                                 std::string(backend),
                                                 "\"; expected \"gloo\", \"nccl\" or \"local\""));
}

}  // namespace llmint8::comm
