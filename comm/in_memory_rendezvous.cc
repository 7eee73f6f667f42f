#include "comm/in_memory_rendezvous.h"

#include "absl/strings/str_cat.h"

namespace llmint8::comm {

absl::Status InMemoryRendezvous::Set(std::string_view key, std::string_view value) {
  absl::MutexLock lock(&mu_);
  values_[std::string(key)] = std::string(value);
  return absl::OkStatus();
}

absl::StatusOr<std::string> InMemoryRendezvous::Get(std::string_view key, absl::Duration timeout) {
  const std::string k(key);
  absl::MutexLock lock(&mu_);
  auto present = [this, &k]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return values_.contains(k); };
  if (!mu_.AwaitWithTimeout(absl::Condition(&present), timeout)) {
    return absl::DeadlineExceededError(
        absl::StrCat("rendezvous key '", k, "' not set within ",
                     absl::FormatDuration(absl::Ceil(timeout, absl::Milliseconds(1))),
                     " (is every rank of the group running?)"));
  }
  return values_.find(k)->second;
}

absl::StatusOr<int64_t> InMemoryRendezvous::Add(std::string_view key, int64_t delta) {
  absl::MutexLock lock(&mu_);
  return counters_[std::string(key)] += delta;
}

}  // namespace llmint8::comm
