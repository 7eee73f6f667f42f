// How much memory a worker tells the coordinator it may use (WorkerInfoResponse.memory_bytes),
// which the coordinator's planner sizes the tensor-parallel group with.
//
//   --memory-limit > 0   that limit, on any device (it is also what the shard's own accounting
//                        enforces, see model/shard_model.h ShardOptions::memory_limit_bytes);
//   cpu, no limit        MemAvailable from /proc/meminfo, or the room its container's memory
//                        limit leaves when less (worker/cgroup_memory.h), plus what this
//                        worker's loaded shard holds now (a new LoadShard frees it first);
//   cuda, no limit       the device's free memory (cudaMemGetInfo) plus what the loaded shard
//                        holds; 0 = unknown when it cannot be read (the coordinator then skips
//                        planning and uses every worker).
//
// Without a limit that figure is the free memory of something other processes may use too: a
// host, a GPU. MemoryPool names it, so that the coordinator can count the group's ranks that
// share one and give each its part (LoadShardRequest.memory_sharers).
//
// Pure functions apart from ReadMemAvailableBytes (reads /proc/meminfo) and MemoryPool (reads
// the boot id, asks CUDA); thread-safe.
#ifndef LLMINT8_WORKER_USABLE_MEMORY_H_
#define LLMINT8_WORKER_USABLE_MEMORY_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace llmint8::worker {

// The "MemAvailable:  123456 kB" line of a /proc/meminfo text, in bytes. NotFound when the
// line is missing, InvalidArgument when it does not parse.
absl::StatusOr<int64_t> ParseMemAvailableBytes(std::string_view meminfo);

// ParseMemAvailableBytes of /proc/meminfo (Unavailable when it cannot be read).
absl::StatusOr<int64_t> ReadMemAvailableBytes();

// The figure Info reports (see the header comment). `held_bytes`: what the loaded shard holds
// (MemoryStats::total(), 0 when none). Returns 0 when unknown.
// `cuda_device` is the CUDA device (the worker's --cuda_device, or the one its loaded shard is
// on); < 0 when not known yet: device 0 when the process sees one GPU, else 0 (unknown).
int64_t UsableMemoryBytes(const std::string& device, int cuda_device, int64_t memory_limit_bytes,
                          int64_t held_bytes);

// The part of UsableMemoryBytes' figure (`usable`: free memory plus `held_bytes`, without a
// --memory_limit) one of `sharers` ranks plans its KV cache with: 90% of the free memory
// (libraries allocate more later), shared with the other ranks of its pool (a neighbour may
// still be loading), plus all of what it holds itself (its weights are its own).
int64_t SharedUsableBytes(int64_t usable, int64_t held_bytes, int sharers);

// What UsableMemoryBytes' figure is the free memory of (WorkerInfoResponse.memory_pool):
// "" with a limit (the worker's own, shared with nobody) or when it cannot be told;
// "host:<boot id>" on CPU (/proc/sys/kernel/random/boot_id: one per running kernel, the same
// in every container on a node, as their memory is), "cgroup:<boot id>:<inode>" when a
// container's memory limit binds (its room is less than MemAvailable: the figure is then that
// cgroup's, shared by the workers in it; containers limited apart each have their own, and
// limits that together exceed the node are the operator's overcommit); "gpu:<UUID>" on CUDA with a
// --cuda_device (the physical GPU, or MIG instance, whichever process sees it and under
// whatever device number; without one the device is the rank's, not known before it loads).
std::string MemoryPool(const std::string& device, int cuda_device, int64_t memory_limit_bytes);

}  // namespace llmint8::worker

#endif  // LLMINT8_WORKER_USABLE_MEMORY_H_
