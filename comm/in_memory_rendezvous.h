// Rendezvous held in one process's memory: for groups whose ranks are threads of one process
// (tests) and as the store behind the coordinator's rendezvous service. Thread-safe.
#ifndef LLMINT8_COMM_IN_MEMORY_RENDEZVOUS_H_
#define LLMINT8_COMM_IN_MEMORY_RENDEZVOUS_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "comm/rendezvous.h"

namespace llmint8::comm {

// Keys, values and counters together hold at most kMaxBytes (a group's keys are addresses and ids,
// a few KiB): a Set past it is ResourceExhausted. An Add that would overflow int64 is OutOfRange.
class InMemoryRendezvous : public Rendezvous {
 public:
  static constexpr int64_t kMaxBytes = int64_t{256} << 20;

  absl::Status Set(std::string_view key, std::string_view value) override;
  absl::StatusOr<std::string> Get(std::string_view key, absl::Duration timeout) override;
  absl::StatusOr<int64_t> Add(std::string_view key, int64_t delta) override;

  // Erases every value and counter whose key does not start with `prefix` (the coordinator
  // keeps only the keys of the group it is forming). Waiting Gets are not woken.
  void KeepOnlyPrefixed(std::string_view prefix);

 private:
  absl::Mutex mu_;
  absl::flat_hash_map<std::string, std::string> values_ ABSL_GUARDED_BY(mu_);
  int64_t bytes_ ABSL_GUARDED_BY(mu_) = 0;  // of values_ and counters_ (key + 8 bytes each)
  absl::flat_hash_map<std::string, int64_t> counters_ ABSL_GUARDED_BY(mu_);
};

}  // namespace llmint8::comm

#endif  // LLMINT8_COMM_IN_MEMORY_RENDEZVOUS_H_
