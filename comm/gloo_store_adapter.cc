#include "comm/gloo_store_adapter.h"

#include "gloo/common/error.h"

namespace llmint8::comm {

void GlooStoreAdapter::Throw(absl::Status status) {
  if (first_error_.ok()) first_error_ = status;
  throw gloo::IoException(std::string(status.message()));
}

void GlooStoreAdapter::set(const std::string& key, const std::vector<char>& data) {
  absl::Status s = rendezvous_.Set(key, std::string_view(data.data(), data.size()));
  if (!s.ok()) Throw(std::move(s));
}

std::vector<char> GlooStoreAdapter::get(const std::string& key) {
  absl::StatusOr<std::string> value = rendezvous_.Get(key, default_timeout_);
  if (!value.ok()) Throw(value.status());
  return std::vector<char>(value->begin(), value->end());
}

void GlooStoreAdapter::wait(const std::vector<std::string>& keys) {
  wait(keys, std::chrono::duration_cast<std::chrono::milliseconds>(
                 absl::ToChronoMilliseconds(default_timeout_)));
}

void GlooStoreAdapter::wait(const std::vector<std::string>& keys,
                            const std::chrono::milliseconds& timeout) {
  // Gloo passes kNoTimeout (0) to mean "no limit"; ours are always finite.
  const absl::Duration limit = timeout.count() > 0 ? absl::FromChrono(timeout) : default_timeout_;
  const absl::Time deadline = absl::Now() + limit;
  for (const std::string& key : keys) {
    absl::StatusOr<std::string> value =
        rendezvous_.Get(key, std::max(deadline - absl::Now(), absl::ZeroDuration()));
    if (!value.ok()) Throw(value.status());
  }
}

}  // namespace llmint8::comm
