// Lets Gloo's group formation (gloo::rendezvous::Context::connectFullMesh) read and write a
// llmint8 Rendezvous. Gloo's Store reports failure by throwing; this adapter throws
// gloo::IoException and keeps the first Status, so the caller (which catches at its boundary)
// can return the real code (DeadlineExceeded for a missing peer) instead of a generic one.
// Keys are passed through unchanged (wrap the Rendezvous in a PrefixedRendezvous to scope
// them). Lives as long as the connect call; not thread-safe beyond what Gloo needs (one
// thread).
#ifndef LLMINT8_COMM_GLOO_STORE_ADAPTER_H_
#define LLMINT8_COMM_GLOO_STORE_ADAPTER_H_

#include <chrono>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "comm/rendezvous.h"
#include "gloo/rendezvous/store.h"

namespace llmint8::comm {

class GlooStoreAdapter : public gloo::rendezvous::Store {
 public:
  // `default_timeout` bounds every get() and wait(), whatever timeout Gloo passes.
  GlooStoreAdapter(Rendezvous& rendezvous, absl::Duration default_timeout)
      : rendezvous_(rendezvous), default_timeout_(default_timeout) {}

  void set(const std::string& key, const std::vector<char>& data) override;
  std::vector<char> get(const std::string& key) override;
  void wait(const std::vector<std::string>& keys) override;
  void wait(const std::vector<std::string>& keys,
            const std::chrono::milliseconds& timeout) override;

  // The first error this store threw for; OK when it threw none.
  const absl::Status& first_error() const { return first_error_; }

 private:
  [[noreturn]] void Throw(absl::Status status);

  Rendezvous& rendezvous_;
  absl::Duration default_timeout_;
  absl::Status first_error_;
};

}  // namespace llmint8::comm

#endif  // LLMINT8_COMM_GLOO_STORE_ADAPTER_H_
