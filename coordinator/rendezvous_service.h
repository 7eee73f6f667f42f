// The coordinator's Rendezvous gRPC service (proto/llmint8/v1/rendezvous.proto): a key-value
// store in memory through which the workers of a group exchange Gloo addresses / NCCL ids.
// Workers scope their keys by group epoch (worker::RendezvousKeyPrefix); the coordinator drops
// the older groups' keys each time it forms a new group, so the store holds one group's keys.
// Thread-safe; Get blocks its handler thread up to the request's timeout.
#ifndef LLMINT8_COORDINATOR_RENDEZVOUS_SERVICE_H_
#define LLMINT8_COORDINATOR_RENDEZVOUS_SERVICE_H_

#include <string_view>

#include "comm/in_memory_rendezvous.h"
#include "llmint8/v1/rendezvous.grpc.pb.h"

namespace llmint8::coordinator {

class RendezvousService final : public v1::Rendezvous::Service {
 public:
  // Longest wait a Get may ask for.
  static constexpr int64_t kMaxTimeoutMs = 10 * 60 * 1000;
  static constexpr int kMaxKeysPerGet = 1024;
  static constexpr int64_t kMaxAnswerBytes = int64_t{16} << 20;

  grpc::Status Set(grpc::ServerContext* ctx, const v1::SetRequest* req,
                   v1::SetResponse* resp) override;
  grpc::Status Get(grpc::ServerContext* ctx, const v1::GetRequest* req,
                   v1::GetResponse* resp) override;
  grpc::Status Add(grpc::ServerContext* ctx, const v1::AddRequest* req,
                   v1::AddResponse* resp) override;

  // Drops every key outside `prefix`: the keys of groups no longer forming.
  void KeepOnlyPrefixed(std::string_view prefix) { store_.KeepOnlyPrefixed(prefix); }

 private:
  comm::InMemoryRendezvous store_;
};

}  // namespace llmint8::coordinator

#endif  // LLMINT8_COORDINATOR_RENDEZVOUS_SERVICE_H_
