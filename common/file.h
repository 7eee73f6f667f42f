// Reading a whole (small) file: configs, tokenizers, PEM files, rendezvous keys, eval text.
//
//   ASSIGN_OR_RETURN(std::string text, ReadFileToString(path));
#ifndef LLMINT8_COMMON_FILE_H_
#define LLMINT8_COMMON_FILE_H_

#include <string>

#include "absl/status/statusor.h"

namespace llmint8 {

// The bytes of file `path`. Errors name the path and the system's reason
// ("<path>: cannot be read (No such file or directory)"): NotFound when it does not exist,
// PermissionDenied when it may not be read, FailedPrecondition otherwise (a directory, an I/O
// error).
absl::StatusOr<std::string> ReadFileToString(const std::string& path);

}  // namespace llmint8

#endif  // LLMINT8_COMMON_FILE_H_
