#include "worker/grpc_rendezvous.h"

#include <algorithm>
#include <chrono>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/grpc_status.h"
#include "common/status_macros.h"
#include "grpcpp/grpcpp.h"

namespace llmint8::worker {
namespace {

// A Get waits in RPCs of at most this long, so that a cancelled load stops within one.
constexpr absl::Duration kGetSlice = absl::Seconds(1);

}  // namespace

GrpcRendezvous::GrpcRendezvous(const std::string& address,
                               std::shared_ptr<grpc::ChannelCredentials> credentials,
                               std::function<bool()> cancelled, absl::Duration timeout)
    : address_(address),
      cancelled_(std::move(cancelled)),
      timeout_(timeout),
      channel_(grpc::CreateChannel(address, credentials != nullptr
                                                ? std::move(credentials)
                                                : grpc::InsecureChannelCredentials())),
      stub_(v1::Rendezvous::NewStub(channel_)) {}

absl::Status GrpcRendezvous::Result(const grpc::Status& status, const char* call) const {
  absl::Status out = FromGrpcStatus(status, absl::StrCat("rendezvous ", call, " at ", address_));
  // A server there that does not serve the Rendezvous (a coordinator's public port when it
  // serves it on --rendezvous_listen; a worker mid-rollout dialling the old port) is a wrong
  // address, not a bad model: Unavailable, so the coordinator retries rather than refuses.
  if (out.code() == absl::StatusCode::kUnimplemented) {
    out = absl::UnavailableError(
        absl::StrCat(out.message(),
                     " (no Rendezvous there: is it the coordinator's --rendezvous_listen "
                     "port, when it has one?)"));
  }
  // The rendezvous refusing a call for room (too many waiting, a full store) is no fault of
  // the model: not a code the coordinator reads as one (worker_group.cc IsModelLoadError).
  if (out.code() == absl::StatusCode::kResourceExhausted) {
    out = absl::UnavailableError(out.message());
  }
  // The calls wait for the channel: a coordinator never reached (wrong address, or a TLS
  // handshake that fails) ends as a deadline, which alone would not say so.
  if (out.code() == absl::StatusCode::kDeadlineExceeded &&
      channel_->GetState(/*try_to_connect=*/false) != GRPC_CHANNEL_READY) {
    out = absl::DeadlineExceededError(
        absl::StrCat(out.message(),
                     " (the coordinator was never reached: check the address and, when it "
                     "serves TLS, this worker's --tls_ca_file / --tls_cert_file / "
                     "--tls_key_file against its certificate)"));
  }
  return out;
}

absl::Status GrpcRendezvous::CheckCancelled(const char* call) const {
  if (cancelled_ == nullptr || !cancelled_()) return absl::OkStatus();
  return absl::CancelledError(absl::StrCat("rendezvous ", call, " at ", address_,
                                           ": the load it forms a group for was given up"));
}

absl::Status GrpcRendezvous::WaitConnected(const char* call) const {
  const absl::Time give_up = absl::Now() + timeout_;
  while (true) {
    RETURN_IF_ERROR(CheckCancelled(call));
    const grpc_connectivity_state state = channel_->GetState(/*try_to_connect=*/true);
    if (state == GRPC_CHANNEL_READY) return absl::OkStatus();
    if (absl::Now() >= give_up) break;
    channel_->WaitForStateChange(state,
                                 absl::ToChronoTime(std::min(give_up, absl::Now() + kGetSlice)));
  }
  // Why: a call that does not wait for the channel fails at once with its last error.
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + kGetSlice));
  v1::GetRequest req;
  v1::GetResponse resp;
  const grpc::Status why = stub_->Get(&ctx, req, &resp);
  if (why.ok()) return absl::OkStatus();  // reached just now
  return absl::DeadlineExceededError(
      absl::StrCat("rendezvous ", call, " at ", address_, ": the coordinator was not reached in ",
                   absl::FormatDuration(timeout_), " (", why.error_message(), ")",
                   ": check the address and, when it serves TLS, this worker's --tls_ca_file / "
                   "--tls_cert_file / --tls_key_file against its certificate"));
}

absl::Status GrpcRendezvous::Set(std::string_view key, std::string_view value) {
  RETURN_IF_ERROR(WaitConnected("Set"));
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + timeout_));
  ctx.set_wait_for_ready(true);
  v1::SetRequest req;
  req.set_key(std::string(key));
  req.set_value(std::string(value));
  v1::SetResponse resp;
  return Result(stub_->Set(&ctx, req, &resp), "Set");
}

absl::StatusOr<std::string> GrpcRendezvous::Get(std::string_view key, absl::Duration timeout) {
  // Reaching the coordinator may take timeout_ (WaitConnected); the key may then take
  // `timeout` to be set, and a coordinator lost on the way timeout_ more.
  const absl::Time set_by = absl::Now() + std::max(timeout, absl::ZeroDuration());
  const absl::Time give_up = set_by + timeout_;
  v1::GetRequest req;
  req.add_keys(std::string(key));
  v1::GetResponse resp;
  RETURN_IF_ERROR(WaitConnected("Get"));
  while (true) {
    RETURN_IF_ERROR(CheckCancelled("Get"));
    const absl::Duration wait = std::clamp(set_by - absl::Now(), absl::ZeroDuration(), kGetSlice);
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(std::min(give_up, absl::Now() + wait + kGetSlice)));
    ctx.set_wait_for_ready(true);
    req.set_timeout_ms(absl::ToInt64Milliseconds(wait));
    const grpc::Status status = stub_->Get(&ctx, req, &resp);
    // Not set within this slice, or the coordinator not reached yet: wait on while time is left.
    const bool connected = channel_->GetState(/*try_to_connect=*/false) == GRPC_CHANNEL_READY;
    if (status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED &&
        absl::Now() < (connected ? set_by : give_up)) {
      continue;
    }
    RETURN_IF_ERROR(Result(status, "Get"));
    break;
  }
  if (resp.values_size() != 1) {
    return absl::InternalError(absl::StrCat("rendezvous at ", address_, " returned ",
                                            resp.values_size(), " values for one key"));
  }
  return std::move(*resp.mutable_values(0));
}

absl::StatusOr<int64_t> GrpcRendezvous::Add(std::string_view key, int64_t delta) {
  RETURN_IF_ERROR(WaitConnected("Add"));
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + timeout_));
  ctx.set_wait_for_ready(true);
  v1::AddRequest req;
  req.set_key(std::string(key));
  req.set_delta(delta);
  v1::AddResponse resp;
  absl::Status status = Result(stub_->Add(&ctx, req, &resp), "Add");
  if (!status.ok()) return status;
  return resp.value();
}

}  // namespace llmint8::worker
