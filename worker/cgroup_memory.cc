#include "worker/cgroup_memory.h"

#include <sys/stat.h>

#include <algorithm>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/file.h"

namespace llmint8::worker {
namespace {

constexpr int64_t kNoLimit = int64_t{1} << 60;

std::optional<int64_t> ParseBytes(absl::string_view text) {
  int64_t value = 0;
  if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(text), &value) || value < 0) {
    return std::nullopt;
  }
  return value;
}

// The value of `key` in a memory.stat text ("key value" lines); 0 when absent.
int64_t StatValue(absl::string_view stat, absl::string_view key) {
  for (absl::string_view line : absl::StrSplit(stat, '\n')) {
    if (absl::ConsumePrefix(&line, key) && absl::ConsumePrefix(&line, " ")) {
      return ParseBytes(line).value_or(0);
    }
  }
  return 0;
}

bool IsDirectory(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

}  // namespace

std::optional<int64_t> CgroupRoomBytes(std::string_view limit, std::string_view usage,
                                       std::string_view stat) {
  const absl::string_view limit_text = absl::StripAsciiWhitespace({limit.data(), limit.size()});
  if (limit_text == "max") return std::nullopt;
  std::optional<int64_t> max = ParseBytes(limit_text);
  const std::optional<int64_t> used = ParseBytes({usage.data(), usage.size()});
  const absl::string_view stat_text(stat.data(), stat.size());
  // v1: an ancestor's limit binds too (hierarchical_memory_limit, the least of them).
  if (const int64_t inherited = StatValue(stat_text, "hierarchical_memory_limit");
      max.has_value() && inherited > 0) {
    max = std::min(*max, inherited);
  }
  if (!max.has_value() || !used.has_value() || *max >= kNoLimit) return std::nullopt;
  // v1 counts the whole subtree under total_; v2's inactive_file already does.
  int64_t inactive = StatValue(stat_text, "total_inactive_file");
  if (inactive == 0) inactive = StatValue(stat_text, "inactive_file");
  const int64_t working_set = std::max<int64_t>(0, *used - std::min(inactive, *used));
  return std::max<int64_t>(0, *max - working_set);
}

std::optional<CgroupMemory> ReadCgroupMemory(std::string_view proc_self_cgroup,
                                             const std::string& root) {
  std::optional<std::string> v1_path;
  std::optional<std::string> v2_path;
  for (absl::string_view line :
       absl::StrSplit(absl::string_view(proc_self_cgroup.data(), proc_self_cgroup.size()), '\n')) {
    const std::vector<absl::string_view> fields = absl::StrSplit(line, absl::MaxSplits(':', 2));
    if (fields.size() != 3) continue;
    if (fields[0] == "0" && fields[1].empty()) v2_path = std::string(fields[2]);
    for (absl::string_view controller : absl::StrSplit(fields[1], ',')) {
      if (controller == "memory") v1_path = std::string(fields[2]);
    }
  }
  // A hybrid host mounts the memory controller on v1: its line is the one that limits.
  struct Layout {
    std::string mount;
    const char* limit;
    const char* usage;
  };
  const bool v1 = v1_path.has_value();
  if (!v1 && !v2_path.has_value()) return std::nullopt;
  const Layout layout =
      v1 ? Layout{root + "/memory", "memory.limit_in_bytes", "memory.usage_in_bytes"}
         : Layout{root, "memory.max", "memory.current"};
  std::string dir = layout.mount + (v1 ? *v1_path : *v2_path);
  while (!dir.empty() && dir.back() == '/') dir.pop_back();
  if (!IsDirectory(dir)) dir = layout.mount;
  auto room_at = [&layout](const std::string& at) -> std::optional<int64_t> {
    absl::StatusOr<std::string> limit = ReadFileToString(at + "/" + layout.limit);
    absl::StatusOr<std::string> usage = ReadFileToString(at + "/" + layout.usage);
    absl::StatusOr<std::string> stat = ReadFileToString(at + "/memory.stat");
    if (!limit.ok() || !usage.ok()) return std::nullopt;
    return CgroupRoomBytes(*limit, *usage, stat.ok() ? *stat : std::string());
  };
  // v2: the least room of the cgroup and its ancestors up to the mount (a pod's limit above
  // its container's, a systemd slice's); v1's stat already gives the ancestors' limit.
  std::optional<int64_t> room = room_at(dir);
  std::string binding = dir;
  for (std::string at = dir; !v1 && at.size() > layout.mount.size();) {
    at.resize(at.rfind('/'));
    if (at.size() < layout.mount.size()) break;
    if (const std::optional<int64_t> up = room_at(at);
        up.has_value() && (!room.has_value() || *up < *room)) {
      room = up;
      binding = at;
    }
  }
  if (!room.has_value()) return std::nullopt;
  return CgroupMemory{*room, binding};
}

std::optional<CgroupMemory> ReadOwnCgroupMemory() {
  absl::StatusOr<std::string> text = ReadFileToString("/proc/self/cgroup");
  if (!text.ok()) return std::nullopt;
  return ReadCgroupMemory(*text, "/sys/fs/cgroup");
}

}  // namespace llmint8::worker
