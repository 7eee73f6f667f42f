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
      stub_(v1::Rendezvous::NewStub(grpc::CreateChannel(
          address,
          credentials != nullptr ? std::move(credentials) : grpc::InsecureChannelCredentials()))) {}

absl::Status GrpcRendezvous::Set(std::string_view key, std::string_view value) {
  grpc::ClientContext ctx;
  SetDeadline(ctx, std::chrono::milliseconds(0));
  ctx.set_wait_for_ready(true);
  v1::SetRequest req;
  req.set_key(std::string(key));
  req.set_value(std::string(value));
  v1::SetResponse resp;
  return FromGrpcStatus(stub_->Set(&ctx, req, &resp), absl::StrCat("rendezvous Set at ", address_));
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
  absl::Status status =
      FromGrpcStatus(stub_->Get(&ctx, req, &resp), absl::StrCat("rendezvous Get at ", address_));
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
  absl::Status status =
      FromGrpcStatus(stub_->Add(&ctx, req, &resp), absl::StrCat("rendezvous Add at ", address_));
  if (!status.ok()) return status;
  return resp.value();
}

}  // namespace llmint8::worker
