// comm::Rendezvous over the coordinator's gRPC Rendezvous service (proto/llmint8/v1/
// rendezvous.proto): how workers on different hosts exchange Gloo addresses / NCCL ids.
// Thread-safe (a gRPC stub is).
#ifndef LLMINT8_WORKER_GRPC_RENDEZVOUS_H_
#define LLMINT8_WORKER_GRPC_RENDEZVOUS_H_

#include <functional>
#include <memory>
#include <string>

#include "absl/time/time.h"
#include "comm/rendezvous.h"
#include "grpcpp/channel.h"
#include "grpcpp/security/credentials.h"
#include "llmint8/v1/rendezvous.grpc.pb.h"

namespace llmint8::worker {

class GrpcRendezvous : public comm::Rendezvous {
 public:
  // `address`: host:port of the coordinator; `credentials`: TLS to reach it (null: plaintext).
  // No connection is made until the first call. `cancelled` (optional): the load this group
  // forms for was given up (the coordinator cancelled it, or asked for a newer group, or the
  // worker's server shut down the call); every call then ends CANCELLED within a second (each
  // waits in slices of one, reaching the coordinator too).
  // `timeout`: how long reaching the coordinator, and each call once there, may take.
  GrpcRendezvous(const std::string& address, std::shared_ptr<grpc::ChannelCredentials> credentials,
                 std::function<bool()> cancelled = nullptr,
                 absl::Duration timeout = absl::Seconds(30));

  absl::Status Set(std::string_view key, std::string_view value) override;
  absl::StatusOr<std::string> Get(std::string_view key, absl::Duration timeout) override;
  absl::StatusOr<int64_t> Add(std::string_view key, int64_t delta) override;

 private:
  // `status` of `call` as an absl::Status naming the coordinator.
  absl::Status Result(const grpc::Status& status, const char* call) const;

  absl::Status CheckCancelled(const char* call) const;
  // Until the channel to the coordinator is ready, in slices that CheckCancelled between,
  // for up to the calls' timeout: DEADLINE_EXCEEDED then, with why it was not reached (a
  // refused connection, a TLS handshake that failed) as gRPC says it.
  absl::Status WaitConnected(const char* call) const;

  std::string address_;
  std::function<bool()> cancelled_;
  absl::Duration timeout_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Rendezvous::Stub> stub_;
};

}  // namespace llmint8::worker

#endif  // LLMINT8_WORKER_GRPC_RENDEZVOUS_H_
