#include "coordinator/rendezvous_service.h"

#include <algorithm>
#include <string>

#include "absl/cleanup/cleanup.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/grpc_status.h"

namespace llmint8::coordinator {

void RendezvousService::KeepOnlyPrefixed(std::string_view prefix) {
  absl::MutexLock lock(&mu_);
  forming_prefix_ = std::string(prefix);
  store_.KeepOnlyPrefixed(prefix);
}

grpc::Status RendezvousService::CheckKey(const std::string& key) const {
  if (key.empty()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "rendezvous key must not be empty");
  }
  absl::MutexLock lock(&mu_);
  if (!forming_prefix_.empty() && key.rfind(forming_prefix_, 0) == 0) return grpc::Status::OK;
  return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                      "rendezvous key '" + key.substr(0, 64) +
                          "' is not one of the group being formed (a worker of an older group?)");
}

grpc::Status RendezvousService::Set(grpc::ServerContext*, const v1::SetRequest* req,
                                    v1::SetResponse*) {
  if (grpc::Status key = CheckKey(req->key()); !key.ok()) return key;
  return ToGrpcStatus(store_.Set(req->key(), req->value()));
}

grpc::Status RendezvousService::Get(grpc::ServerContext* ctx, const v1::GetRequest* req,
                                    v1::GetResponse* resp) {
  if (req->timeout_ms() < 0 || req->timeout_ms() > kMaxTimeoutMs) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "rendezvous Get timeout_ms must be in [0, 600000]");
  }
  if (req->keys_size() > kMaxKeysPerGet) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "rendezvous Get asks for more than 1024 keys");
  }
  for (const std::string& key : req->keys()) {
    if (grpc::Status checked = CheckKey(key); !checked.ok()) return checked;
  }
  const int waiting = ++waiting_gets_;
  absl::Cleanup done = [this] { --waiting_gets_; };
  if (waiting > kMaxWaitingGets) {
    return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                        "the rendezvous has too many Gets waiting; retry later");
  }
  const absl::Time deadline = absl::Now() + absl::Milliseconds(req->timeout_ms());
  int64_t answer_bytes = 0;
  for (const std::string& key : req->keys()) {
    // Wait in slices so that a client that went away frees this thread soon.
    while (true) {
      const absl::Duration left = deadline - absl::Now();
      absl::StatusOr<std::string> value =
          store_.Get(key, std::clamp(left, absl::ZeroDuration(), absl::Milliseconds(200)));
      if (value.ok()) {
        answer_bytes += static_cast<int64_t>(value->size());
        if (answer_bytes > kMaxAnswerBytes) {  // one large value asked for many times
          return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                              "rendezvous Get's values would exceed 16 MiB; ask for fewer keys");
        }
        resp->add_values(*std::move(value));
        break;
      }
      if (value.status().code() != absl::StatusCode::kDeadlineExceeded) {
        return ToGrpcStatus(value.status());
      }
      if (ctx->IsCancelled()) return grpc::Status::CANCELLED;
      // The coordinator went on to another group: this one's keys will not come.
      if (grpc::Status still = CheckKey(key); !still.ok()) return still;
      if (absl::Now() >= deadline) {
        return grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED,
                            "rendezvous key '" + key + "' was not set in time");
      }
    }
  }
  return grpc::Status::OK;
}

grpc::Status RendezvousService::Add(grpc::ServerContext*, const v1::AddRequest* req,
                                    v1::AddResponse* resp) {
  if (grpc::Status key = CheckKey(req->key()); !key.ok()) return key;
  absl::StatusOr<int64_t> value = store_.Add(req->key(), req->delta());
  if (!value.ok()) return ToGrpcStatus(value.status());
  resp->set_value(*value);
  return grpc::Status::OK;
}

}  // namespace llmint8::coordinator
