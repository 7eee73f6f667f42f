#include "comm/file_rendezvous.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/file.h"
#include "common/status_macros.h"

namespace llmint8::comm {
namespace {

absl::Status ErrnoError(std::string_view what, std::string_view path) {
  const int err = errno;
  return absl::UnavailableError(absl::StrCat("file rendezvous: ", std::string(what), " '",
                                             std::string(path), "': ", std::strerror(err)));
}

// Writes all of `data` to `fd`.
absl::Status WriteAll(int fd, std::string_view data, std::string_view path) {
  while (!data.empty()) {
    const ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoError("write", path);
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return absl::OkStatus();
}

// Writes `value` to a temporary file beside `path` and renames it over `path`.
absl::Status AtomicWrite(const std::string& path, std::string_view value) {
  static std::atomic<uint64_t> counter{0};
  const std::string tmp = absl::StrCat(path, ".tmp.", ::getpid(), ".", counter.fetch_add(1));
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoError("create", tmp);
  absl::Status s = WriteAll(fd, value, tmp);
  if (::close(fd) != 0 && s.ok()) s = ErrnoError("close", tmp);
  if (s.ok() && ::rename(tmp.c_str(), path.c_str()) != 0) s = ErrnoError("rename to", path);
  if (!s.ok()) ::unlink(tmp.c_str());
  return s;
}

}  // namespace

std::string FileRendezvous::PathFor(std::string_view key) const {
  std::string name;
  for (const char c : key) {
    const bool plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                       c == '.' || c == '_' || c == '-';
    if (plain) {
      name.push_back(c);
    } else {
      absl::StrAppendFormat(&name, "%%%02X", static_cast<unsigned char>(c));
    }
  }
  // A leading '.' would hide the file and could spell "." or ".."; escape it too.
  if (!name.empty() && name[0] == '.') name.replace(0, 1, "%2E");
  return absl::StrCat(directory_, "/k_", name);
}

absl::Status FileRendezvous::Set(std::string_view key, std::string_view value) {
  return AtomicWrite(PathFor(key), value);
}

absl::StatusOr<std::string> FileRendezvous::Get(std::string_view key, absl::Duration timeout) {
  const std::string path = PathFor(key);
  const absl::Time deadline = absl::Now() + timeout;
  absl::Duration backoff = absl::Milliseconds(1);
  for (;;) {
    absl::StatusOr<std::string> value = ReadFileToString(path);
    if (value.ok() || !absl::IsNotFound(value.status())) return value;
    const absl::Time now = absl::Now();
    if (now >= deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat("rendezvous key '", std::string(key), "' not set within ",
                       absl::FormatDuration(absl::Ceil(timeout, absl::Milliseconds(1))), " in ",
                       directory_, " (is every rank of the group running?)"));
    }
    std::this_thread::sleep_for(absl::ToChronoNanoseconds(std::min(backoff, deadline - now)));
    backoff = std::min(backoff * 2, absl::Milliseconds(20));
  }
}

absl::StatusOr<int64_t> FileRendezvous::Add(std::string_view key, int64_t delta) {
  const std::string path = PathFor(key);
  const std::string lock_path = path + ".lock";
  const int lock_fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (lock_fd < 0) return ErrnoError("create", lock_path);
  while (::flock(lock_fd, LOCK_EX) != 0) {
    if (errno != EINTR) {
      absl::Status s = ErrnoError("flock", lock_path);
      ::close(lock_fd);
      return s;
    }
  }
  absl::StatusOr<int64_t> result = [&]() -> absl::StatusOr<int64_t> {
    int64_t value = 0;
    absl::StatusOr<std::string> old = ReadFileToString(path);
    if (old.ok()) {
      if (!absl::SimpleAtoi(*old, &value)) {
        return absl::FailedPreconditionError(absl::StrCat("rendezvous key '", std::string(key),
                                                          "' holds '", *old, "', not a counter"));
      }
    } else if (!absl::IsNotFound(old.status())) {
      return old.status();
    }
    value += delta;
    RETURN_IF_ERROR(AtomicWrite(path, absl::StrCat(value)));
    return value;
  }();
  ::flock(lock_fd, LOCK_UN);
  ::close(lock_fd);
  return result;
}

}  // namespace llmint8::comm
