// The coordinator's Rendezvous gRPC service (proto/llmint8/v1/rendezvous.proto): a key-value
// store in memory through which the workers of a group exchange Gloo addresses / NCCL ids.
// Workers scope their keys by group epoch (worker::RendezvousKeyPrefix); the coordinator drops
// the older groups' keys each time it forms a new group, so the store holds one group's keys.
// It serves only the keys of the group being formed: any other key is FAILED_PRECONDITION (a
// late worker of an older group; or a client of the public port, where the rendezvous is
// served without --rendezvous_listen, and which must not fill the store or hold its threads).
// Thread-safe; Get blocks its handler thread up to the request's timeout, and at most
// kMaxWaitingGets wait at once (RESOURCE_EXHAUSTED past that).
#ifndef LLMINT8_COORDINATOR_RENDEZVOUS_SERVICE_H_
#define LLMINT8_COORDINATOR_RENDEZVOUS_SERVICE_H_

#include <atomic>
#include <string>
#include <string_view>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "comm/in_memory_rendezvous.h"
#include "llmint8/v1/rendezvous.grpc.pb.h"

namespace llmint8::coordinator {

class RendezvousService final : public v1::Rendezvous::Service {
 public:
  // Longest wait a Get may ask for.
  static constexpr int64_t kMaxTimeoutMs = 10 * 60 * 1000;
  static constexpr int kMaxKeysPerGet = 1024;
  static constexpr int64_t kMaxAnswerBytes = int64_t{16} << 20;
  // Each rank of a forming group waits on one key at a time.
  static constexpr int kMaxWaitingGets = 256;
  // A key and a value (Gloo's addresses of a rank's pairs, an NCCL id: bytes to kilobytes).
  static constexpr size_t kMaxKeyBytes = 1024;
  static constexpr size_t kMaxValueBytes = size_t{1} << 20;

  grpc::Status Set(grpc::ServerContext* ctx, const v1::SetRequest* req,
                   v1::SetResponse* resp) override;
  grpc::Status Get(grpc::ServerContext* ctx, const v1::GetRequest* req,
                   v1::GetResponse* resp) override;
  grpc::Status Add(grpc::ServerContext* ctx, const v1::AddRequest* req,
                   v1::AddResponse* resp) override;

  // The group with keys under `prefix` forms now: drops every other key (those of groups no
  // longer forming) and serves only keys under it from now on.
  void KeepOnlyPrefixed(std::string_view prefix);

 private:
  // OK for a key of the forming group; INVALID_ARGUMENT for an empty one or one longer than
  // kMaxKeyBytes, else FAILED_PRECONDITION.
  absl::Status CheckKey(const std::string& key) const;
  absl::Status CheckKeyLocked(const std::string& key) const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  // The handlers, in absl::Status (converted once, by ToGrpcStatus, at the service edge).
  absl::Status SetImpl(const v1::SetRequest& req);
  absl::Status GetImpl(grpc::ServerContext& ctx, const v1::GetRequest& req, v1::GetResponse& resp);
  absl::Status AddImpl(const v1::AddRequest& req, v1::AddResponse& resp);

  comm::InMemoryRendezvous store_;
  // Held across a write's key check and the write, so that KeepOnlyPrefixed never lets an
  // older group's key in after it dropped them (taken before store_'s own lock).
  mutable absl::Mutex mu_;
  std::string forming_prefix_ ABSL_GUARDED_BY(mu_);  // empty: no group formed yet
  std::atomic<int> waiting_gets_{0};
};

}  // namespace llmint8::coordinator

#endif  // LLMINT8_COORDINATOR_RENDEZVOUS_SERVICE_H_
