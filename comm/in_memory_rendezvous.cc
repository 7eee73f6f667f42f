#include "comm/in_memory_rendezvous.h"

#include "absl/strings/str_cat.h"

namespace llmint8::comm {

absl::Status InMemoryRendezvous::Set(std::string_view key, std::string_view value) {
  absl::MutexLock lock(&mu_);
  const std::string k(key);
  auto it = values_.find(k);
  const int64_t old =
      it == values_.end() ? 0 : static_cast<int64_t>(key.size() + it->second.size());
  const int64_t now = static_cast<int64_t>(key.size() + value.size());
  if (bytes_ - old + now > kMaxBytes) {
    return absl::ResourceExhaustedError(absl::StrCat("the rendezvous store holds ", bytes_,
                                                     " bytes; key '", k.substr(0, 64),
                                                     "' would take it past ", kMaxBytes));
  }
  values_[k] = std::string(value);
  bytes_ += now - old;
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
  const std::string k(key);
  absl::MutexLock lock(&mu_);
  auto it = counters_.find(k);
  const int64_t counter = it == counters_.end() ? 0 : it->second;
  int64_t sum = 0;
  if (__builtin_add_overflow(counter, delta, &sum)) {
    return absl::OutOfRangeError(absl::StrCat("rendezvous counter '", k.substr(0, 64), "' (",
                                              counter, ") + ", delta, " overflows int64"));
  }
  if (it == counters_.end()) {  // a new counter counts against the store's bound too
    const int64_t size = static_cast<int64_t>(k.size() + sizeof(int64_t));
    if (bytes_ + size > kMaxBytes) {
      return absl::ResourceExhaustedError(absl::StrCat("the rendezvous store holds ", bytes_,
                                                       " bytes; counter '", k.substr(0, 64),
                                                       "' would take it past ", kMaxBytes));
    }
    bytes_ += size;
    it = counters_.emplace(k, 0).first;
  }
  return it->second = sum;
}

void InMemoryRendezvous::KeepOnlyPrefixed(std::string_view prefix) {
  absl::MutexLock lock(&mu_);
  auto stale = [prefix](std::string_view key) { return key.substr(0, prefix.size()) != prefix; };
  absl::erase_if(values_, [&](const auto& kv) {
    if (!stale(kv.first)) return false;
    bytes_ -= static_cast<int64_t>(kv.first.size() + kv.second.size());
    return true;
  });
  absl::erase_if(counters_, [&](const auto& kv) {
    if (!stale(kv.first)) return false;
    bytes_ -= static_cast<int64_t>(kv.first.size() + sizeof(int64_t));
    return true;
  });
}

}  // namespace llmint8::comm
