#include "worker/grpc_rendezvous.h"

#include <chrono>
#include <utility>

#include "absl/strings/str_cat.h"
#include "grpcpp/grpcpp.h"
#include "worker/grpc_status.h"

namespace llmint8::worker {
namespace {

constexpr auto kRpcTimeout = std::chrono::seconds(30);

void SetDeadline(grpc::ClientContext& ctx, std::chrono::milliseconds extra) {
  ctx.set_deadline(std::chrono::system_clock::now() + kRpcTimeout + extra);
}

}  // namespace

GrpcRendezvous::GrpcRendezvous(const std::string& address,
                               std::shared_ptr<grpc::ChannelCredentials> credentials)
    : address_(address),
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

absl::Status GrpcRendezvous::Set(std::string_view key, std::string_view value) {
  grpc::ClientContext ctx;
  SetDeadline(ctx, std::chrono::milliseconds(0));
  ctx.set_wait_for_ready(true);
  v1::SetRequest req;
  req.set_key(std::string(key));
  req.set_value(std::string(value));
  v1::SetResponse resp;
  return Result(stub_->Set(&ctx, req, &resp), "Set");
}

absl::StatusOr<std::string> GrpcRendezvous::Get(std::string_view key, absl::Duration timeout) {
  grpc::ClientContext ctx;
  auto ms = std::chrono::milliseconds(absl::ToInt64Milliseconds(timeout));
  SetDeadline(ctx, ms);
  ctx.set_wait_for_ready(true);
  v1::GetRequest req;
  req.add_keys(std::string(key));
  req.set_timeout_ms(ms.count());
  v1::GetResponse resp;
  absl::Status status = Result(stub_->Get(&ctx, req, &resp), "Get");
  if (!status.ok()) return status;
  if (resp.values_size() != 1) {
    return absl::InternalError(absl::StrCat("rendezvous at ", address_, " returned ",
                                            resp.values_size(), " values for one key"));
  }
  return std::move(*resp.mutable_values(0));
}

absl::StatusOr<int64_t> GrpcRendezvous::Add(std::string_view key, int64_t delta) {
  grpc::ClientContext ctx;
  SetDeadline(ctx, std::chrono::milliseconds(0));
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
