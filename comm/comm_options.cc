#include "comm/comm_options.h"

#include "absl/strings/str_cat.h"

namespace llmint8::comm {

absl::Status ValidateCommOptions(const CommOptions& options) {
  if (options.world_size < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("world_size is ", options.world_size, "; it must be >= 1"));
  }
  if (options.rank < 0 || options.rank >= options.world_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("rank ", options.rank, " is outside the group [0, ", options.world_size, ")"));
  }
  if (options.timeout <= absl::ZeroDuration() || options.timeout == absl::InfiniteDuration()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "timeout is ", absl::FormatDuration(options.timeout), "; it must be positive and finite"));
  }
  if (options.world_size > 1 && options.rendezvous == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("rank ", options.rank, " of ",
                                                   options.world_size,
                                                   ": a group of more than one rank needs a "
                                                   "rendezvous"));
  }
  return absl::OkStatus();
}

}  // namespace llmint8::comm
