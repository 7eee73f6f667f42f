// The group epoch that the coordinator and its workers share (LoadShardRequest.epoch): the high
// 32 bits are the coordinator instance's (random per coordinator process), the low 32 bits count
// the groups that instance formed. Shared by the worker's lease (worker/coordinator_lease.h) and
// the coordinator's worker group (coordinator/worker_group.h), and the rendezvous keys' scope.
#ifndef LLMINT8_WORKER_GROUP_EPOCH_H_
#define LLMINT8_WORKER_GROUP_EPOCH_H_

#include <cstdint>
#include <string>

#include "absl/strings/str_cat.h"

namespace llmint8::worker {

// The coordinator instance of a group epoch (its high 32 bits); 0 for epoch 0 (no group).
inline int64_t CoordinatorInstance(int64_t epoch) {
  return static_cast<int64_t>(static_cast<uint64_t>(epoch) & ~uint64_t{0xffffffff});
}

// Where the ranks of group `epoch` keep their rendezvous keys: every key of that group starts
// with it, so the coordinator can drop older groups' keys when it forms a new one.
inline std::string RendezvousKeyPrefix(int64_t epoch) { return absl::StrCat("epoch/", epoch, "/"); }

}  // namespace llmint8::worker

#endif  // LLMINT8_WORKER_GROUP_EPOCH_H_
