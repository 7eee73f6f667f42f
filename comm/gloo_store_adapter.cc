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
                            const std::chrono::milliseconds& /*gloo_timeout*/) {
  // Gloo passes its context's timeout, which GlooCommunicator shortens while pairs connect;
  // a peer that starts late gets this store's whole timeout.
  const absl::Time deadline = absl::Now() + default_timeout_;
  for (const std::string& key : keys) {
    absl::StatusOr<std::string> value =
        rendezvous_.Get(key, std::max(deadline - absl::Now(), absl::ZeroDuration()));
    if (!value.ok()) Throw(value.status());
  }
}

}  // namespace llmint8::comm
