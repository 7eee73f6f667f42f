// The Worker gRPC service (proto/llmint8/v1/worker.proto): one tensor-parallel shard of the
// model in this process.
//
// LoadShard forms the communicator group through the coordinator's rendezvous (keys scoped by
// the group epoch) and loads this rank's slice, logging "loading shard r/N: layer i/L". Step
// runs ShardModel::Step; rank 0 then samples one token per sequence and returns them, other
// ranks return no results. Requests for another epoch than the loaded one are
// FAILED_PRECONDITION (the coordinator re-forms the group). A communicator error breaks the
// group: Step then answers UNAVAILABLE until the next LoadShard.
//
// The coordinator that formed the group holds the worker (worker/coordinator_lease.h): a
// LoadShard from another coordinator is refused FAILED_PRECONDITION, and leaves the group and
// model as they are, until the holder has been silent for its lease or ended it. A group
// whose coordinator has been silent for its lease and WorkerOptions::abandoned_after more
// (it died or was cut off, and ended nothing) is dropped: its weights, KV cache and samplers
// go back, with a warning in the log (a coordinator that comes back re-forms its group).
//
// Drain() (the process got SIGTERM) makes Info say `draining` and LoadShard refuse
// (UNAVAILABLE); the group's running sequences go on until Drained().
//
// A GPU whose CUDA context is lost (common/device_lost.h: a device-side fault in a Step or a
// LoadShard) cannot be used by this process again: the worker records it (DeviceLost()),
// breaks its group and refuses every later LoadShard (UNAVAILABLE); its main then stops the
// process (exit status 3) so that its supervisor starts a fresh one.
//
// Info reports the memory this worker may use (worker/usable_memory.h), which the coordinator
// plans the group with. With WorkerOptions::memory_limit_bytes, LoadShard refuses a shard that
// does not fit with RESOURCE_EXHAUSTED (the shard's own accounting, with the numbers), and
// Step refuses a batch whose KV cache would pass it.
//
// Thread-safe: RPCs are served concurrently by gRPC; model access is serialized by a mutex
// (the coordinator sends one Step at a time anyway).
#ifndef LLMINT8_WORKER_WORKER_SERVICE_H_
#define LLMINT8_WORKER_WORKER_SERVICE_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "comm/communicator.h"
#include "grpcpp/security/credentials.h"
#include "llmint8/v1/worker.grpc.pb.h"
#include "model/shard_model.h"
#include "worker/coordinator_lease.h"
#include "worker/sequence_samplers.h"

namespace llmint8::worker {

struct WorkerOptions {
  std::string device = "cpu";  // "cpu" or "cuda"
  // CUDA device index of this worker; -1: its rank (one process per GPU on one host).
  int cuda_device = -1;
  int64_t memory_limit_bytes = 0;  // 0: unlimited
  // When set, used instead of LoadShardRequest.rendezvous_address (the coordinator as seen
  // from this worker, e.g. across a NAT or a Kubernetes service).
  std::string coordinator_address;
  // TLS to the coordinator's rendezvous when it serves TLS (common/tls.h); null: plaintext.
  std::shared_ptr<grpc::ChannelCredentials> coordinator_credentials;
  // Address other ranks reach this worker's Gloo transport at; with gloo_interface set
  // (e.g. "eth0"), that interface's address instead (comm/comm_options.h).
  std::string gloo_hostname = "127.0.0.1";
  std::string gloo_interface;
  // Group formation and per-collective timeout.
  int64_t comm_timeout_ms = 30000;
  // A draining worker stops only once its group has held no sequence this long: the
  // coordinator may release the last one and then, in a second call, step one it had
  // preempted and takes back (coordinator/scheduler.h); a worker that looked in between
  // would leave that stream behind.
  absl::Duration drain_quiet = absl::Milliseconds(250);
  // How long past its coordinator's lease a silent group is kept (see the header comment);
  // InfiniteDuration: kept until another LoadShard.
  absl::Duration abandoned_after = absl::Seconds(60);
};

class WorkerService final : public v1::Worker::Service {
 public:
  explicit WorkerService(WorkerOptions options);
  ~WorkerService() override;

  grpc::Status Info(grpc::ServerContext* ctx, const v1::WorkerInfoRequest* req,
                    v1::WorkerInfoResponse* resp) override;
  grpc::Status LoadShard(grpc::ServerContext* ctx, const v1::LoadShardRequest* req,
                         v1::LoadShardResponse* resp) override;
  grpc::Status Step(grpc::ServerContext* ctx, const v1::StepRequest* req,
                    v1::StepResponse* resp) override;
  grpc::Status Release(grpc::ServerContext* ctx, const v1::ReleaseRequest* req,
                       v1::ReleaseResponse* resp) override;
  grpc::Status Stats(grpc::ServerContext* ctx, const v1::StatsRequest* req,
                     v1::StatsResponse* resp) override;

  // Shutting down: see the header comment.
  void Drain();
  // Whether the worker may stop now without failing a request: its coordinator gone (it let
  // the worker go, or its lease lapsed); else, with no LoadShard or Step under way, no group
  // (or a broken one), or, once that coordinator has seen the drain (two of its probes
  // answered `draining`), no sequence left in it for drain_quiet. Never waits for the model
  // lock.
  bool Drained() const;

  // The error that lost this process's GPU context; OK while it has none such.
  absl::Status DeviceLost() const;

 private:
  friend class WorkerServiceTestPeer;  // worker/worker_device_lost_test.cc: a step's fault

  // Records `status` when it says the GPU context is lost (the first such, logged).
  void NoteIfDeviceLost(const absl::Status& status);

  // `ctx` (null in tests that call the service directly): a cancelled call stops the load.
  absl::Status DoLoadShard(grpc::ServerContext* ctx, const v1::LoadShardRequest& req,
                           v1::LoadShardResponse& resp) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status DoStep(const v1::StepRequest& req, v1::StepResponse& resp)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Records a LoadShard of `epoch` as asked for (before it waits for mu_; only one whose fields
  // are valid: a refused request asks for no group). Kept per coordinator instance: another
  // coordinator's request (refused by the lease, likely) does not make ours look current.
  void NoteLoadRequested(int64_t epoch);
  // Whether its coordinator has since asked for a newer group: loads queue on mu_, and one
  // that waited behind a long load must not form a group no other rank will join.
  bool LoadSuperseded(int64_t epoch) const;
  absl::Status CheckEpoch(int64_t epoch) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Step `step_id` failed so that this group's state is lost: records `why` (every later call
  // of the group is refused), publishes it, and returns the UNAVAILABLE the step answers.
  absl::Status BreakGroup(absl::Status why, uint64_t step_id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Unload() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  void Publish() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The loaded shard's held bytes and sequences (0 without one); Publish includes it, a step or
  // a release calls it alone.
  void PublishUsage() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const WorkerOptions options_;
  const std::string memory_pool_;  // MemoryPool of the options, read once (Info)
  // Without --cuda_device a CUDA shard is on its rank's device, known once a load assigns it:
  // that device (-1 while none is loaded) and its MemoryPool, for Info (read together).
  struct LoadedDevice {
    int cuda_device = -1;
    std::string memory_pool;
  };
  mutable absl::Mutex device_mu_;
  LoadedDevice loaded_device_ ABSL_GUARDED_BY(device_mu_);
  // What Info reports, readable while a long Step holds mu_ (health probes must not wait).
  const uint64_t process_id_;  // WorkerInfoResponse.process_id
  std::atomic<int64_t> published_epoch_{0};
  std::atomic<bool> published_loaded_{false};
  std::atomic<int> published_rank_{0};
  std::atomic<int> published_world_size_{0};
  std::atomic<int64_t> published_held_bytes_{0};  // the loaded shard's MemoryStats::total()
  std::atomic<int64_t> published_sequences_{0};   // the loaded shard's live sequences
  // Since when (LeaseNow, in ns) it has held none, after it last held some; 0: never held any.
  std::atomic<int64_t> empty_since_ns_{0};
  // Stats, likewise: it answers without the model lock, which a load or a long step holds
  // (a Stats call per GetModelInfo would otherwise wait for it on a thread of its own).
  std::atomic<int64_t> published_weight_bytes_{0};
  std::atomic<int64_t> published_kv_cache_bytes_{0};
  std::atomic<uint64_t> published_steps_{0};
  std::atomic<uint64_t> published_tokens_{0};
  CoordinatorLease lease_;  // its own lock: probes renew it while a Step holds mu_
  std::atomic<bool> draining_{false};
  // The group whose coordinator's probes were told of the drain, and how many such probes:
  // after the second, the first answer has reached the coordinator (it probes one at a time),
  // which admits nothing new from then on.
  std::atomic<int64_t> drain_seen_epoch_{0};
  std::atomic<int> drain_probes_{0};
  // LoadShard and Step calls begun and not yet published: a drain waits for them (a group
  // that finishes loading is one the coordinator will step at once).
  std::atomic<int> calls_in_flight_{0};
  std::atomic<bool> device_lost_{false};  // set once device_lost_status_ is
  mutable absl::Mutex lost_mu_;
  absl::Status device_lost_status_ ABSL_GUARDED_BY(lost_mu_);
  mutable absl::Mutex requested_mu_;
  // The newest epoch asked for by each of the last kRememberedCoordinators coordinator
  // instances, the latest last.
  static constexpr size_t kRememberedCoordinators = 8;
  std::vector<int64_t> newest_requested_ ABSL_GUARDED_BY(requested_mu_);

  mutable absl::Mutex mu_;
  int64_t epoch_ ABSL_GUARDED_BY(mu_) = 0;
  int rank_ ABSL_GUARDED_BY(mu_) = 0;
  int world_size_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Status broken_ ABSL_GUARDED_BY(mu_);  // first communicator error of this group
  // Whether the step DoStep runs has gone through the model (its sequences' KV caches grew):
  // a failure after that is no refused batch, which the coordinator would send again.
  bool step_forwarded_ ABSL_GUARDED_BY(mu_) = false;
  std::unique_ptr<comm::Communicator> comm_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<model::ShardModel> model_ ABSL_GUARDED_BY(mu_);
  // Rank 0: every live sequence's sampling parameters (and tokens, for the penalties).
  SequenceSamplers samplers_ ABSL_GUARDED_BY(mu_);
  uint64_t steps_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t tokens_ ABSL_GUARDED_BY(mu_) = 0;
  // The most tokens and logits rows a Step of this group may carry, as its LoadShard set them
  // or worker.proto's defaults (rows 0: bounded by the tokens): the room the worker kept is for
  // steps within them.
  int64_t max_step_tokens_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t max_step_rows_ ABSL_GUARDED_BY(mu_) = 0;

  // Drops the group of a coordinator silent past abandoned_after (WatchForAbandonment's
  // thread; stopped by the destructor).
  void WatchForAbandonment();
  absl::Mutex watch_mu_;
  bool watch_stop_ ABSL_GUARDED_BY(watch_mu_) = false;
  std::thread watcher_;
};

}  // namespace llmint8::worker

#endif  // LLMINT8_WORKER_WORKER_SERVICE_H_
