#include "common/file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace llmint8 {
namespace {

absl::Status CannotRead(const std::string& path, int error) {
  const std::string message = absl::StrCat(path, ": cannot be read (", std::strerror(error), ")");
  switch (error) {
    case ENOENT:
    case ENOTDIR:
      return absl::NotFoundError(message);
    case EACCES:
    case EPERM:
      return absl::PermissionDeniedError(message);
    default:
      return absl::FailedPreconditionError(message);
  }
}

}  // namespace

absl::Status WriteFailed(const std::string& path, int error) {
  return absl::ErrnoToStatus(error != 0 ? error : EIO, absl::StrCat("writing ", path));
}

absl::StatusOr<std::string> ReadFileToString(const std::string& path, int64_t max_bytes,
                                             bool allow_pipe) {
  // O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused below); reads of a
  // regular file ignore the flag.
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) return CannotRead(path, errno);
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int error = errno;
    ::close(fd);
    return CannotRead(path, error);
  }
  if (!S_ISREG(st.st_mode) && !(allow_pipe && S_ISFIFO(st.st_mode))) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat(path,
                                                   ": cannot be read (not a regular file but a ",
                                                   S_ISDIR(st.st_mode)    ? "directory"
                                                   : S_ISFIFO(st.st_mode) ? "FIFO"
                                                                          : "device or socket",
                                                   ")"));
  }
  const auto too_big = [&](int64_t size) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat(path, ": cannot be read (", size,
                                                   " bytes or more, over the ", max_bytes,
                                                   " this file may hold)"));
  };
  if (st.st_size > max_bytes) return too_big(st.st_size);
  // Blocking reads from here (a pipe's writer may not have written yet; some FUSE file systems
  // honour O_NONBLOCK on regular files too).
  ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) & ~O_NONBLOCK);
  std::string out;
  out.reserve(static_cast<size_t>(st.st_size));  // /proc files report 0: they just grow
  char buf[1 << 14];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0) {
      if (errno == EINTR) continue;
      const int error = errno;
      ::close(fd);
      return CannotRead(path, error);
    }
    if (n == 0) break;
    if (static_cast<int64_t>(out.size()) + n > max_bytes) {
      return too_big(static_cast<int64_t>(out.size()) + n);
    }
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}

}  // namespace llmint8
