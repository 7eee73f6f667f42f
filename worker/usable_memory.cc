#include "worker/usable_memory.h"

#include <sys/stat.h>

#include <algorithm>
#include <optional>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/file.h"
#include "common/status_macros.h"
#include "model/shard_model.h"
#include "worker/cgroup_memory.h"

namespace llmint8::worker {

absl::StatusOr<int64_t> ParseMemAvailableBytes(std::string_view meminfo) {
  const absl::string_view text(meminfo.data(), meminfo.size());
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (!absl::ConsumePrefix(&line, "MemAvailable:")) continue;
    line = absl::StripAsciiWhitespace(line);
    int64_t scale = 1;
    if (absl::ConsumeSuffix(&line, "kB")) scale = 1024;
    line = absl::StripAsciiWhitespace(line);
    int64_t value = 0;
    if (!absl::SimpleAtoi(line, &value) || value < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("/proc/meminfo: MemAvailable '", line, "' is not a size"));
    }
    return value * scale;
  }
  return absl::NotFoundError("/proc/meminfo has no MemAvailable line");
}

absl::StatusOr<int64_t> ReadMemAvailableBytes() {
  ASSIGN_OR_RETURN(const std::string text, ReadFileToString("/proc/meminfo"));
  return ParseMemAvailableBytes(text);
}

int64_t UsableMemoryBytes(const std::string& device, int cuda_device, int64_t memory_limit_bytes,
                          int64_t held_bytes) {
  if (memory_limit_bytes > 0) return memory_limit_bytes;
  if (device != "cpu") {
    if (cuda_device < 0) {
      // The rank's device, not known before a load assigns it: only a process that sees one
      // GPU knows which it will be. (Asking device 0 would also make a CUDA context there in
      // every worker process, memory rank 0 planned with.)
      absl::StatusOr<int> count = model::CudaDeviceCount();
      if (!count.ok() || *count != 1) return 0;
      cuda_device = 0;
    }
    // A GPU worker can use what the device has free now plus what its loaded shard holds.
    absl::StatusOr<int64_t> free_bytes = model::CudaFreeMemoryBytes(cuda_device);
    return free_bytes.ok() ? *free_bytes + held_bytes : 0;
  }
  absl::StatusOr<int64_t> available = ReadMemAvailableBytes();
  if (!available.ok()) return 0;
  const std::optional<CgroupMemory> cgroup = ReadOwnCgroupMemory();
  const bool limited = cgroup.has_value() && cgroup->room_bytes < *available;
  return (limited ? cgroup->room_bytes : *available) + held_bytes;
}

int64_t SharedUsableBytes(int64_t usable, int64_t held_bytes, int sharers) {
  const int64_t held = std::max<int64_t>(held_bytes, 0);
  const int64_t free = std::max<int64_t>(usable - held, 0);
  return free / 10 * 9 / std::max(sharers, 1) + held;
}

std::string MemoryPool(const std::string& device, int cuda_device, int64_t memory_limit_bytes) {
  if (memory_limit_bytes > 0) return "";
  if (device != "cpu") {
    // Without --cuda_device the device is the rank's, known only once the group forms.
    if (cuda_device < 0) return "";
    absl::StatusOr<std::string> uuid = model::CudaDeviceUuid(cuda_device);
    return uuid.ok() ? absl::StrCat("gpu:", *uuid) : "";
  }
  absl::StatusOr<std::string> boot_id = ReadFileToString("/proc/sys/kernel/random/boot_id");
  if (!boot_id.ok()) return "";
  const absl::string_view id = absl::StripAsciiWhitespace(*boot_id);
  if (id.empty()) return "";
  // A container's limit that binds (its room is less than the host has free): the figure is
  // that cgroup's, shared by the workers inside it (serve's, in one container), not the node's.
  // Its inode names it on this kernel.
  absl::StatusOr<int64_t> available = ReadMemAvailableBytes();
  const std::optional<CgroupMemory> cgroup = ReadOwnCgroupMemory();
  struct stat st {};
  if (available.ok() && cgroup.has_value() && cgroup->room_bytes < *available &&
      ::stat(cgroup->path.c_str(), &st) == 0) {
    return absl::StrCat("cgroup:", id, ":", st.st_ino);
  }
  return absl::StrCat("host:", id);
}

}  // namespace llmint8::worker
