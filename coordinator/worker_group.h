// The coordinator's view of its tensor-parallel workers: forms the group (LoadShard on every
// worker, concurrently, under a fresh epoch), drives it in lockstep (the same Step / Release
// to every worker, concurrently, waiting for all), watches health, and re-forms the group when
// a lost worker is back.
//
// States: kForming (waiting for every worker to answer, then loading) -> kReady -> kBroken
// (a Step or a Release failed, or a member's probe did: refused, answered unfit (another
// epoch, not loaded, held by another coordinator), or timed out, twice in a row when the lease
// allows it, MayMissAProbe) -> kForming ... Only kReady accepts Step / Release.
// Before loading, the group is chosen from the memory every worker reports
// (coordinator/group_decision.h): with `policy` kSmallest the fewest workers that hold the
// model (the rest stay idle), with kAllWorkers all of them. When they cannot hold it
// the state is kRefused and refusal() the FAILED_PRECONDITION saying what to change; the
// monitor keeps asking the workers and forms the group once their reports allow it. A
// LoadShard that fails for a reason an immediate retry cannot mend (the checkpoint or config
// is bad, the shard does not fit: IsModelLoadError) refuses the group the same way, with the
// workers' reason, and is tried again after 1, 2, 4 ... 30 s. Either refusal gives way to
// kBroken (requests wait again) when a worker stops answering.
// Forming waits for every worker to answer, but under kSmallest only for `join_wait`: after
// it the group forms from the workers that answered when they hold the model (an idle spare
// takes the place of a lost member, and one dead worker does not hold up the rest). A worker
// that answers later stays idle until the group next re-forms.
// Workers that another coordinator's group holds (worker/coordinator_lease.h), or that are shutting
// down, count as not answering, and forming waits for them. This coordinator's own lease on its
// members is renewed by every probe, step and release (and while a group loads), and ended by
// Stop(), so that a successor takes them at once, and for a worker shutting down that still holds a
// group of ours that we left (nothing will run on it: it may go at once). A member whose probe says
// it is shutting down makes the group draining() until it re-forms (the worker waits for its
// running sequences, then goes). While the group is ready the idle spares are probed too, every 8th
// round unless a member's probe is being asked again, so that their state (Workers(), the
// metrics) stays current. `on_state_change` is called
// (from the thread that changed the state, no lock held) so the server can flip its grpc.health.v1
// status.
//
// Thread-safety: Step and Release are called by one thread at a time (the scheduler); the
// monitor runs on its own thread; state queries are safe from any thread.
#ifndef LLMINT8_COORDINATOR_WORKER_GROUP_H_
#define LLMINT8_COORDINATOR_WORKER_GROUP_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "coordinator/group_decision.h"
#include "coordinator/step_group.h"
#include "grpcpp/security/credentials.h"
#include "llmint8/v1/worker.grpc.pb.h"
#include "model/config.h"

namespace llmint8::coordinator {

struct WorkerGroupOptions {
  std::vector<std::string> addresses;  // rank order (of the members, when some stay idle)
  // How the workers are dialled (CoordinatorOptions::workers_tls); null: plaintext.
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  std::string backend = "gloo";        // "gloo", "nccl" (world size 1: "local")
  std::string model;                   // model spec (model/model_spec.h)
  std::string dtype = "fp16";
  float threshold = 6.0f;
  std::string device = "cpu";
  int32_t max_batch = 32;
  int64_t max_context = 0;
  int64_t max_step_tokens = 0;  // LoadShardRequest.max_step_tokens
  int64_t max_step_rows = 0;    // LoadShardRequest.max_step_rows
  // The model's config, for planning the group; unset: every worker joins, unplanned.
  std::optional<model::OptConfig> config;
  GroupPolicy policy = GroupPolicy::kAllWorkers;
  int64_t reserve_sequences = 1;  // the plan keeps KV room for this many max_context sequences
  absl::Duration probe_interval = absl::Milliseconds(250);
  absl::Duration probe_timeout = absl::Milliseconds(1000);
  absl::Duration step_timeout = absl::Seconds(120);
  absl::Duration load_timeout = absl::Minutes(30);
  // kSmallest: how long forming waits for workers that do not answer before it plans with
  // those that do. Zero: at once; InfiniteDuration: always wait for all.
  absl::Duration join_wait = absl::Seconds(3);
  // How long a worker stays this coordinator's after its last contact
  // (LoadShardRequest.lease_ms): longer than probe_interval + probe_timeout, so that a live
  // coordinator never loses its workers to a second one started by mistake.
  absl::Duration lease = absl::Seconds(3);
  // Called with each new group's wire epoch before its workers are asked to load (the
  // coordinator drops older groups' rendezvous keys); may be empty.
  std::function<void(int64_t wire_epoch)> on_forming;
};

enum class GroupState { kForming, kReady, kBroken, kRefused, kStopped };

struct WorkerStatus {
  std::string address;
  int rank = -1;             // rank in the current group; -1: not a member (idle)
  int64_t memory_bytes = 0;  // what the worker reported it may use (Info)
  std::string memory_pool;   // what memory_bytes is the free memory of ("": its own limit)
  int64_t held_bytes = 0;    // what its loaded shard holds (Info), part of memory_bytes
  bool healthy = false;
  // Another coordinator's group holds the worker (its lease runs): this one cannot take it.
  bool held_by_another = false;
  bool draining = false;  // shutting down (its Info said so)
  // Still loading a shard of a group that broke (the load stops at its next layer): its
  // memory report leaves out what that load holds, so forming waits for it.
  bool loading = false;
  std::string device;
  int64_t weight_bytes = 0;
  int64_t kv_cache_bytes = 0;
  int64_t total_bytes = 0;
};

// What a worker is doing, for the metrics (llmint8_workers{state}) and the logs: a member
// serving, an idle spare, shutting down, held by another coordinator's group, or not
// answering (unreachable, or a member not in the group it should be in).
const char* WorkerStateName(const WorkerStatus& w);
// "forming", "ready", "broken", "refused" or "stopped" (GetModelInfo's group_state).
const char* GroupStateName(GroupState state);
inline constexpr const char* kWorkerStateNames[] = {"serving",         "idle",    "draining",
                                                    "held_by_another", "loading", "not_answering"};

class WorkerGroup : public StepGroup {
 public:
  WorkerGroup(WorkerGroupOptions options, std::function<void(GroupState)> on_state_change);
  ~WorkerGroup() override;  // stops the monitor
  WorkerGroup(const WorkerGroup&) = delete;
  WorkerGroup& operator=(const WorkerGroup&) = delete;

  // Starts the monitor thread (which forms the group as soon as all workers answer).
  // `rendezvous_address`: this coordinator's Rendezvous service, as workers reach it.
  void Start(std::string rendezvous_address);
  // Stops the monitor and lets the members go (ReleaseRequest.end_lease). Steps must have
  // ended.
  void Stop();

  GroupState state() const;
  bool ready() const override { return state() == GroupState::kReady; }
  int64_t epoch() const override;
  bool draining() const override;
  // Members of the current (or, before the first formation, the intended) group = its TP
  // degree; num_workers() counts idle ones too.
  int world_size() const;
  int num_workers() const { return static_cast<int>(options_.addresses.size()); }
  // KV cache positions the current group can hold, summed over sequences: the least any member
  // reported at LoadShard; nullopt when a member did not report one.
  std::optional<int64_t> kv_capacity_tokens() const override;
  bool takes_token_masks() const override;
  // OK unless the state is kRefused: then FAILED_PRECONDITION with the planner's message.
  absl::Status refusal() const override;
  const WorkerGroupOptions& options() const { return options_; }
  // Blocks until kReady or `timeout`; true when ready.
  bool WaitReady(absl::Duration timeout) const override;

  // Sends `request` (its epoch is filled in) to every worker, waits for all, and returns
  // rank 0's response. Any failure breaks the group and returns UNAVAILABLE naming the worker,
  // except an INVALID_ARGUMENT / OUT_OF_RANGE / RESOURCE_EXHAUSTED that every rank agrees on
  // (the batch was bad, the group is fine).
  absl::StatusOr<v1::StepResponse> Step(v1::StepRequest request, int64_t epoch) override;
  // Frees sequences on every worker; failures break the group.
  absl::Status Release(const std::vector<uint64_t>& seq_ids) override;
  void CancelSteps() override;

  // One entry per worker, members first in rank order, then idle ones (memory figures from
  // its last LoadShard / Stats).
  std::vector<WorkerStatus> Workers() const;
  // Asks every member for its Stats (bounded by probe_timeout) and updates Workers().
  void RefreshStats();

 private:
  struct Worker {
    std::string address;
    std::unique_ptr<v1::Worker::Stub> stub;
    WorkerStatus status;
    int64_t held_epoch = 0;  // the group (wire epoch) its last answer said it holds; 0: none
    int missed_probes = 0;   // a ready member's probes in a row that timed out
    uint64_t process_id = 0;  // its Info's (0: not known)
    std::string probe_error;  // why its last probe failed; empty when it answered
  };

  void MonitorLoop();
  // What forming waits for: the workers that did not answer, answered that another
  // coordinator holds them, or that they are shutting down; empty when none. `with_reason`
  // (may be null), for the log only (the state's status reaches clients): the same, taken at
  // once, with why the first silent worker did not answer, as gRPC said it (its address, a
  // refused connection or handshake).
  std::string WaitingFor(std::string* with_reason = nullptr) const;
  // A worker and the group of ours (its wire epoch) that it holds.
  struct HeldGroup {
    int worker;
    int64_t wire_epoch;
  };
  // Tells each worker that this coordinator lets go of that group (bounded by probe_timeout;
  // failures only logged).
  void EndLease(const std::vector<HeldGroup>& held);
  // What the probes during a formation found wrong with a member (OK: nothing yet); read by
  // the LoadShard fan-out, which stops waiting once it is set.
  struct FormWatch {
    absl::Mutex mu;
    absl::Status lost ABSL_GUARDED_BY(mu);
  };
  // Probes `workers` with `wire_epoch` every probe_interval until `done`: keeps the lease on
  // members whose LoadShard finished while the others' still run. Sets watch.lost
  // (UNAVAILABLE, naming it) when a member said it is shutting down, another coordinator holds
  // it, or it answered none of kSilentProbes probes in a row (a frozen or cut-off host sends
  // no reset, so its LoadShard would wait out load_timeout).
  void RenewUntil(const std::vector<int>& workers, int64_t wire_epoch, absl::Notification& done,
                  FormWatch& watch);
  static constexpr int kSilentProbes = 4;
  // Timed-out probes in a row after which a ready member counts as gone (Probe), when
  // MayMissAProbe; else the first.
  static constexpr int kProbesMissedToLeave = 2;
  // Whether the members' lease outlasts the gap between two renewals with a timed-out probe
  // between them, kProbesMissedToLeave x (probe_interval + probe_timeout), with a probe
  // interval to spare (a second coordinator could take a member in the gap otherwise): with
  // the defaults (3 s > 2.75 s) it does; with --worker_lease=2s the first miss counts.
  bool MayMissAProbe() const {
    return options_.lease >
           (options_.probe_interval + options_.probe_timeout) * kProbesMissedToLeave +
               options_.probe_interval;
  }
  // Why a fan-out to the group formed at `epoch` should stop waiting: CANCELLED when the
  // coordinator stops, UNAVAILABLE (naming the members that stopped answering) when that group
  // broke or re-formed; else OK.
  absl::Status Abandoned(int64_t epoch) const;
  // Probes the workers `probed` (indices): the members of the ready group with their epoch
  // (expected_epoch >= 0: each must be in it), or, while forming or for the idle spares, with
  // expected_epoch < 0. True when all answered (and match). Sets each probed worker's status:
  // healthy is false too for one that another coordinator holds and, with expected_epoch < 0,
  // for one shutting down (which is let go at once if it still holds a group of ours that we
  // left: nothing will run on it).
  bool Probe(const std::vector<int>& probed, int64_t expected_epoch);
  // Every worker, and the ones not in the group (idle spares).
  std::vector<int> All() const;
  std::vector<int> Idle() const;
  // Chooses the members from the reports (FailedPrecondition: they cannot hold the model).
  // `answered_only`: from the workers whose last probe answered, and only a planned choice
  // (FailedPrecondition otherwise: without a plan every worker must join).
  absl::Status Choose(bool answered_only);
  absl::Status Form();
  std::vector<int> Members() const;
  // The workers whose status `holds`.
  std::vector<int> WorkersWhere(bool (*holds)(const WorkerStatus&)) const;
  // Workers whose last probe did not answer.
  std::vector<int> Unanswered() const;
  // Of those, the ones gone or kept away (silent, shutting down, held by another coordinator):
  // all but those still loading a broken group's shard, which will be back.
  std::vector<int> Away() const;
  // Whether a ready member's last probe timed out (it is being asked again).
  bool AMemberMissedAProbe() const;
  // `only_at_epoch`: no change unless the group is still that one (a call to a group that
  // re-formed meanwhile must not break the new group).
  void SetState(GroupState state, const absl::Status& why,
                std::optional<int64_t> only_at_epoch = std::nullopt);
  void Break(const absl::Status& why, std::optional<int64_t> only_at_epoch = std::nullopt);

  // The epoch a group's messages carry: this coordinator's instance in the high 32 bits, the
  // count of groups it formed (epoch_) below. Another coordinator (a restarted one, or a
  // second one started by mistake against the same workers) sends other epochs (the odds of
  // the same instance are 2^-30), so a worker refuses its steps rather than let both drive
  // one group with colliding sequence ids, and keeps the workers for the coordinator that
  // formed the group while its lease runs (worker/coordinator_lease.h).
  int64_t WireEpoch(int64_t count) const { return instance_ + count; }

  const WorkerGroupOptions options_;
  const std::function<void(GroupState)> on_state_change_;
  const int64_t instance_;  // random in [1, 2^30) << 32
  std::vector<Worker> workers_;
  std::string rendezvous_address_;  // set by Start
  std::string left_out_logged_;     // Choose's workers on another device, last logged (monitor)

  mutable absl::Mutex mu_;
  GroupState state_ ABSL_GUARDED_BY(mu_) = GroupState::kForming;
  int64_t epoch_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<int> members_ ABSL_GUARDED_BY(mu_);  // worker indices, rank order
  std::optional<int64_t> kv_capacity_tokens_ ABSL_GUARDED_BY(mu_);
  bool token_masks_ ABSL_GUARDED_BY(mu_) = false;  // every member's LoadShard said so
  absl::Status refusal_ ABSL_GUARDED_BY(mu_);
  bool draining_ ABSL_GUARDED_BY(mu_) = false;  // a member said it is shutting down
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  bool steps_cancelled_ ABSL_GUARDED_BY(mu_) = false;  // CancelSteps
  std::thread monitor_;
};

}  // namespace llmint8::coordinator

#endif  // LLMINT8_COORDINATOR_WORKER_GROUP_H_
