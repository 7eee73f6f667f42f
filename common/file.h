// Reading a whole (small) file: configs, tokenizers, PEM files, rendezvous keys, eval text.
//
//   ASSIGN_OR_RETURN(std::string text, ReadFileToString(path));
#ifndef LLMINT8_COMMON_FILE_H_
#define LLMINT8_COMMON_FILE_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace llmint8 {

// What a file read whole may hold unless the caller says otherwise: far more than any config,
// index or key file, little enough to hold in memory.
inline constexpr int64_t kDefaultMaxFileBytes = int64_t{64} << 20;

// The bytes of regular file `path`. Errors name the path and the system's reason
// ("<path>: cannot be read (No such file or directory)"): NotFound when it does not exist,
// PermissionDenied when it may not be read, InvalidArgument when it is not a regular file (a
// directory, a FIFO, a device: never waited on) or holds more than `max_bytes`,
// FailedPrecondition otherwise (an I/O error). `allow_pipe`: a FIFO or pipe is read too (what a
// shell's <(...) passes), for files an operator names, never a checkpoint's.
absl::StatusOr<std::string> ReadFileToString(const std::string& path,
                                             int64_t max_bytes = kDefaultMaxFileBytes,
                                             bool allow_pipe = false);

// The error of a failed create or write of `path` with the system's `error` (errno; 0, which
// some streams leave, reads as EIO): "writing <path>: No space left on device", with the code
// of that errno (ResourceExhausted for a full disk, PermissionDenied, ...).
absl::Status WriteFailed(const std::string& path, int error);

}  // namespace llmint8

#endif  // LLMINT8_COMMON_FILE_H_
