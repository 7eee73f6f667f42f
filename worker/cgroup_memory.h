// The memory a worker's cgroup leaves it: a container's limit (Kubernetes' resources.limits.
// memory) is not in /proc/meminfo, whose MemAvailable is the node's. A CPU worker without
// --memory_limit takes the smaller of the two (worker/usable_memory.h), so that it does not
// size its KV cache by the node and get killed at its container's limit.
//
// Room = limit - working set, where the working set is what kubelet counts against the limit:
// usage less the inactive file cache (which the kernel reclaims before it kills).
//   cgroup v2: memory.max, memory.current, memory.stat "inactive_file";
//   cgroup v1: memory.limit_in_bytes, memory.usage_in_bytes, memory.stat "total_inactive_file".
// The cgroup is this process's, from /proc/self/cgroup ("0::PATH" for v2, "N:memory:PATH" for
// v1), under the mount root; when that path is not there (a container that sees its host's
// path but has its own cgroup mounted at the root), the root's. Its ancestors' limits bind
// too: v2 takes the least room of the cgroup and each parent up to the mount, v1 the least of
// its limit and memory.stat's hierarchical_memory_limit.
#ifndef LLMINT8_WORKER_CGROUP_MEMORY_H_
#define LLMINT8_WORKER_CGROUP_MEMORY_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace llmint8::worker {

// The room the texts of a cgroup's limit, usage and memory.stat files say it leaves (>= 0);
// nullopt when it has no limit ("max", or v1's 2^63 - 4096: anything from 2^60 on) or a file
// does not parse.
std::optional<int64_t> CgroupRoomBytes(std::string_view limit, std::string_view usage,
                                       std::string_view stat);

struct CgroupMemory {
  int64_t room_bytes = 0;  // CgroupRoomBytes, the least along the ancestors
  std::string path;        // the directory of the cgroup whose room that is
};

// This process's memory cgroup, given /proc/self/cgroup's text and the cgroup mount root
// ("/sys/fs/cgroup"); nullopt when it sets no limit or cannot be read.
std::optional<CgroupMemory> ReadCgroupMemory(std::string_view proc_self_cgroup,
                                             const std::string& root);

// ReadCgroupMemory of this process (/proc/self/cgroup, /sys/fs/cgroup).
std::optional<CgroupMemory> ReadOwnCgroupMemory();

}  // namespace llmint8::worker

#endif  // LLMINT8_WORKER_CGROUP_MEMORY_H_
