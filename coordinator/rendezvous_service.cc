#include "coordinator/rendezvous_service.h"

#include <algorithm>
#include <string>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/grpc_status.h"
#include "common/status_macros.h"

namespace llmint8::coordinator {

void RendezvousService::KeepOnlyPrefixed(std::string_view prefix) {
  absl::MutexLock lock(&mu_);
  forming_prefix_ = std::string(prefix);
  store_.KeepOnlyPrefixed(prefix);
}

absl::Status RendezvousService::CheckKey(const std::string& key) const {
  absl::MutexLock lock(&mu_);
  return CheckKeyLocked(key);
}

absl::Status RendezvousService::CheckKeyLocked(const std::string& key) const {
  if (key.empty()) return absl::InvalidArgumentError("rendezvous key must not be empty");
  if (key.size() > kMaxKeyBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("rendezvous key of ", key.size(), " bytes; at most ", kMaxKeyBytes));
  }
  if (!forming_prefix_.empty() && key.rfind(forming_prefix_, 0) == 0) return absl::OkStatus();
  return absl::FailedPreconditionError(
      absl::StrCat("rendezvous key '", key.substr(0, 64),
                   "' is not one of the group being formed (a worker of an older group?)"));
}

grpc::Status RendezvousService::Set(grpc::ServerContext*, const v1::SetRequest* req,
                                    v1::SetResponse*) {
  return ToGrpcStatus(SetImpl(*req));
}

grpc::Status RendezvousService::Get(grpc::ServerContext* ctx, const v1::GetRequest* req,
                                    v1::GetResponse* resp) {
  return ToGrpcStatus(GetImpl(*ctx, *req, *resp));
}

grpc::Status RendezvousService::Add(grpc::ServerContext*, const v1::AddRequest* req,
                                    v1::AddResponse* resp) {
  return ToGrpcStatus(AddImpl(*req, *resp));
}

absl::Status RendezvousService::SetImpl(const v1::SetRequest& req) {
  if (req.value().size() > kMaxValueBytes) {
    return absl::InvalidArgumentError(absl::StrCat("rendezvous value of ", req.value().size(),
                                                   " bytes; at most ", kMaxValueBytes));
  }
  absl::MutexLock lock(&mu_);
  RETURN_IF_ERROR(CheckKeyLocked(req.key()));
  return store_.Set(req.key(), req.value());
}

absl::Status RendezvousService::GetImpl(grpc::ServerContext& ctx, const v1::GetRequest& req,
                                        v1::GetResponse& resp) {
  if (req.timeout_ms() < 0 || req.timeout_ms() > kMaxTimeoutMs) {
    return absl::InvalidArgumentError("rendezvous Get timeout_ms must be in [0, 600000]");
  }
  if (req.keys_size() > kMaxKeysPerGet) {
    return absl::InvalidArgumentError("rendezvous Get asks for more than 1024 keys");
  }
  for (const std::string& key : req.keys()) RETURN_IF_ERROR(CheckKey(key));
  const int waiting = ++waiting_gets_;
  absl::Cleanup done = [this] { --waiting_gets_; };
  if (waiting > kMaxWaitingGets) {
    return absl::ResourceExhaustedError("the rendezvous has too many Gets waiting; retry later");
  }
  const absl::Time deadline = absl::Now() + absl::Milliseconds(req.timeout_ms());
  int64_t answer_bytes = 0;
  for (const std::string& key : req.keys()) {
    // Wait in slices so that a client that went away frees this thread soon.
    while (true) {
      const absl::Duration left = deadline - absl::Now();
      absl::StatusOr<std::string> value =
          store_.Get(key, std::clamp(left, absl::ZeroDuration(), absl::Milliseconds(200)));
      if (value.ok()) {
        answer_bytes += static_cast<int64_t>(value->size());
        if (answer_bytes > kMaxAnswerBytes) {  // one large value asked for many times
          return absl::ResourceExhaustedError(
              "rendezvous Get's values would exceed 16 MiB; ask for fewer keys");
        }
        resp.add_values(*std::move(value));
        break;
      }
      if (value.status().code() != absl::StatusCode::kDeadlineExceeded) return value.status();
      if (ctx.IsCancelled()) return absl::CancelledError("the client cancelled the Get");
      // The coordinator went on to another group: this one's keys will not come.
      RETURN_IF_ERROR(CheckKey(key));
      if (absl::Now() >= deadline) {
        return absl::DeadlineExceededError(
            absl::StrCat("rendezvous key '", key, "' was not set in time"));
      }
    }
  }
  return absl::OkStatus();
}

absl::Status RendezvousService::AddImpl(const v1::AddRequest& req, v1::AddResponse& resp) {
  absl::MutexLock lock(&mu_);
  RETURN_IF_ERROR(CheckKeyLocked(req.key()));
  ASSIGN_OR_RETURN(const int64_t value, store_.Add(req.key(), req.delta()));
  resp.set_value(value);
  return absl::OkStatus();
}

}  // namespace llmint8::coordinator
