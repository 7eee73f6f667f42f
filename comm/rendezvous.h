// Key-value store that the ranks of one group use to find each other (group formation only,
// never on the hot path): Gloo's per-rank transport addresses and NCCL's unique id pass
// through it.
//
// Values are opaque bytes (std::string, may hold NULs). A key is written once per group
// (writers must not race on one key, except through Add). Get blocks until the key is present
// or `timeout` passes, then returns DeadlineExceeded; a finite timeout is what turns a peer
// that never shows up into an error instead of a hang.
//
// Implementations: FileRendezvous (a directory on a local disk shared by the processes of one
// host; tests and single-host runs), InMemoryRendezvous (threads of one process; the
// coordinator's store), and GrpcRendezvous (worker/grpc_rendezvous.h: the workers' client of the
// coordinator's store). All implementations are thread-safe.
#ifndef LLMINT8_COMM_RENDEZVOUS_H_
#define LLMINT8_COMM_RENDEZVOUS_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace llmint8::comm {

class Rendezvous {
 public:
  virtual ~Rendezvous() = default;

  // Stores `value` under `key`, replacing any previous value.
  virtual absl::Status Set(std::string_view key, std::string_view value) = 0;

  // The value under `key`, waiting up to `timeout` for it to appear.
  // DeadlineExceeded when it does not; other errors for I/O failures.
  virtual absl::StatusOr<std::string> Get(std::string_view key, absl::Duration timeout) = 0;

  // Atomically adds `delta` to the integer counter under `key` (absent counts as 0) and
  // returns the new value. Counters and Set/Get values must use distinct keys.
  virtual absl::StatusOr<int64_t> Add(std::string_view key, int64_t delta) = 0;
};

// A view of `base` that puts `prefix` in front of every key, so that successive groups (or
// the Gloo and NCCL keys of one group) do not collide. `base` must outlive the view.
class PrefixedRendezvous : public Rendezvous {
 public:
  PrefixedRendezvous(Rendezvous& base, std::string prefix)
      : base_(base), prefix_(std::move(prefix)) {}

  absl::Status Set(std::string_view key, std::string_view value) override {
    return base_.Set(prefix_ + std::string(key), value);
  }
  absl::StatusOr<std::string> Get(std::string_view key, absl::Duration timeout) override {
    return base_.Get(prefix_ + std::string(key), timeout);
  }
  absl::StatusOr<int64_t> Add(std::string_view key, int64_t delta) override {
    return base_.Add(prefix_ + std::string(key), delta);
  }

 private:
  Rendezvous& base_;
  std::string prefix_;
};

}  // namespace llmint8::comm

#endif  // LLMINT8_COMM_RENDEZVOUS_H_
