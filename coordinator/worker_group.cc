#include "coordinator/worker_group.h"

#include <algorithm>
#include <string>
#include <utility>

#include "absl/random/distributions.h"
#include "absl/random/random.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/byte_size.h"
#include "common/grpc_status.h"
#include "common/log.h"
#include "coordinator/fan_out.h"
#include "worker/group_epoch.h"

namespace llmint8::coordinator {
namespace {

// How often forming logs a new reason why the same workers do not answer.
constexpr absl::Duration kReasonLogInterval = absl::Seconds(10);

// LoadShard failures that trying again at once cannot mend: the checkpoint or the config is
// bad (InvalidArgument, NotFound, DataLoss, OutOfRange, PermissionDenied, Unimplemented) or the
// shard does not fit (ResourceExhausted). Not FailedPrecondition (another coordinator's lease,
// a worker that has not loaded yet) nor Unavailable / DeadlineExceeded (a worker went away).
bool IsModelLoadError(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kDataLoss:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kPermissionDenied:
    case absl::StatusCode::kUnimplemented:
    case absl::StatusCode::kResourceExhausted:
      return true;
    default:
      return false;
  }
}

bool IsBatchError(grpc::StatusCode code) {
  return code == grpc::StatusCode::INVALID_ARGUMENT || code == grpc::StatusCode::OUT_OF_RANGE ||
         code == grpc::StatusCode::RESOURCE_EXHAUSTED;
}

bool AnyFailure(const grpc::Status& s) { return !s.ok(); }
// Probes and stats are per worker: one worker's failure says nothing about the others.
bool NeverCancel(const grpc::Status&) { return false; }
bool FatalFailure(const grpc::Status& s) { return !s.ok() && !IsBatchError(s.error_code()); }

const char* StateName(GroupState s) {
  switch (s) {
    case GroupState::kForming:
      return "forming";
    case GroupState::kReady:
      return "ready";
    case GroupState::kBroken:
      return "broken";
    case GroupState::kRefused:
      return "refused";
    case GroupState::kStopped:
      return "stopped";
  }
  return "?";
}

}  // namespace

const char* GroupStateName(GroupState state) { return StateName(state); }

const char* WorkerStateName(const WorkerStatus& w) {
  if (w.held_by_another) return "held_by_another";
  if (w.draining) return "draining";
  if (w.loading) return "loading";
  if (!w.healthy) return "not_answering";
  return w.rank >= 0 ? "serving" : "idle";
}

WorkerGroup::WorkerGroup(WorkerGroupOptions options,
                         std::function<void(GroupState)> on_state_change)
    : options_(std::move(options)),
      on_state_change_(std::move(on_state_change)),
      instance_(absl::Uniform<int64_t>(absl::BitGen(), 1, int64_t{1} << 30) << 32) {
  for (const std::string& address : options_.addresses) {
    grpc::ChannelArguments args;
    // Reconnect quickly to a restarted worker.
    args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
    args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
    Worker w;
    w.address = address;
    w.stub = v1::Worker::NewStub(grpc::CreateCustomChannel(
        address,
        options_.credentials != nullptr ? options_.credentials : grpc::InsecureChannelCredentials(),
        args));
    w.status.address = address;
    workers_.push_back(std::move(w));
  }
  // Until a group is chosen: all workers, ranked in address order.
  for (int i = 0; i < num_workers(); ++i) {
    members_.push_back(i);
    workers_[i].status.rank = i;
  }
}

WorkerGroup::~WorkerGroup() { Stop(); }

void WorkerGroup::Start(std::string rendezvous_address) {
  rendezvous_address_ = std::move(rendezvous_address);
  monitor_ = std::thread([this] { MonitorLoop(); });
}

void WorkerGroup::Stop() {
  bool first;
  {
    absl::MutexLock lock(&mu_);
    first = !stop_;
    stop_ = true;
  }
  if (monitor_.joinable()) monitor_.join();
  if (first && epoch() > 0) {
    std::vector<HeldGroup> held;
    for (int i : Members()) held.push_back({i, WireEpoch(epoch())});
    EndLease(held);
  }
}

void WorkerGroup::EndLease(const std::vector<HeldGroup>& held) {
  std::vector<v1::ReleaseRequest> requests(held.size());
  for (size_t i = 0; i < held.size(); ++i) {
    requests[i].set_epoch(held[i].wire_epoch);
    requests[i].set_end_lease(true);
  }
  auto r = FanOut<v1::ReleaseResponse>(
      static_cast<int>(held.size()), options_.probe_timeout, NeverCancel,
      [&](int i, grpc::ClientContext* ctx, v1::ReleaseResponse* resp, auto done) {
        workers_[held[i].worker].stub->async()->Release(ctx, &requests[i], resp, std::move(done));
      });
  for (size_t i = 0; i < held.size(); ++i) {
    if (r.statuses[i].ok()) continue;
    const int w = held[i].worker;
    LLMINT8_LOG(WARNING) << "could not let worker " << w << " (" << workers_[w].address
                         << ") go; it is free when the lease of "
                         << absl::FormatDuration(options_.lease)
                         << " lapses: " << r.statuses[i].error_message();
  }
}

void WorkerGroup::RenewUntil(const std::vector<int>& workers, int64_t wire_epoch,
                             absl::Notification& done, FormWatch& watch) {
  v1::WorkerInfoRequest request;
  request.set_epoch(wire_epoch);
  std::vector<int> silent(workers.size(), 0);  // probes in a row each did not answer
  absl::Status lost;
  while (lost.ok() && !done.WaitForNotificationWithTimeout(options_.probe_interval)) {
    auto r = FanOut<v1::WorkerInfoResponse>(
        static_cast<int>(workers.size()), options_.probe_timeout, NeverCancel,
        [&](int i, grpc::ClientContext* ctx, v1::WorkerInfoResponse* resp, auto done) {
          workers_[workers[i]].stub->async()->Info(ctx, &request, resp, std::move(done));
        });
    for (size_t i = 0; i < workers.size() && lost.ok(); ++i) {
      const std::string who =
          absl::StrCat("worker ", workers[i], " (", workers_[workers[i]].address, ")");
      if (!r.statuses[i].ok()) {
        // A worker that died fails its LoadShard at once; a silent one is given up here.
        if (++silent[i] >= kSilentProbes) {
          lost = absl::UnavailableError(
              absl::StrCat(who, " answered none of its last ", kSilentProbes,
                           " probes while the group formed: ", r.statuses[i].error_message()));
        }
        continue;
      }
      silent[i] = 0;
      const v1::WorkerInfoResponse& info = r.responses[i];
      if (!info.draining() && !info.held_by_another()) continue;
      lost = absl::UnavailableError(absl::StrCat(
          who, " ", info.draining() ? "began shutting down" : "was taken by another coordinator",
          " while the group formed"));
    }
  }
  absl::MutexLock lock(&watch.mu);
  watch.lost = lost;
}

void WorkerGroup::CancelSteps() {
  absl::MutexLock lock(&mu_);
  steps_cancelled_ = true;
}

absl::Status WorkerGroup::Abandoned(int64_t epoch) const {
  absl::MutexLock lock(&mu_);
  if (stop_) return absl::CancelledError("the coordinator is stopping");
  if (state_ == GroupState::kReady && epoch_ == epoch) return absl::OkStatus();
  if (epoch_ != epoch) {
    return absl::UnavailableError("the worker group re-formed while this call waited");
  }
  std::string gone;  // the members the probes found gone (no answer, or not in the group)
  for (int i : members_) {
    if (workers_[i].status.healthy) continue;
    absl::StrAppend(&gone, gone.empty() ? "" : ", ", "worker ", i, " (", workers_[i].address, ")");
  }
  return absl::UnavailableError(absl::StrCat(
      "the worker group broke while this call waited",
      gone.empty() ? std::string() : absl::StrCat(": ", gone, " left it or stopped answering"),
      "; it is re-forming"));
}

GroupState WorkerGroup::state() const {
  absl::MutexLock lock(&mu_);
  return state_;
}

int64_t WorkerGroup::epoch() const {
  absl::MutexLock lock(&mu_);
  return epoch_;
}

bool WorkerGroup::draining() const {
  absl::MutexLock lock(&mu_);
  return draining_;
}

int WorkerGroup::world_size() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(members_.size());
}

std::vector<int> WorkerGroup::WorkersWhere(bool (*holds)(const WorkerStatus&)) const {
  absl::MutexLock lock(&mu_);
  std::vector<int> out;
  for (int i = 0; i < num_workers(); ++i) {
    if (holds(workers_[i].status)) out.push_back(i);
  }
  return out;
}

std::vector<int> WorkerGroup::Unanswered() const {
  return WorkersWhere([](const WorkerStatus& s) { return !s.healthy; });
}

std::vector<int> WorkerGroup::Away() const {
  return WorkersWhere([](const WorkerStatus& s) { return !s.healthy && !s.loading; });
}

bool WorkerGroup::AMemberMissedAProbe() const {
  absl::MutexLock lock(&mu_);
  return std::any_of(workers_.begin(), workers_.end(),
                     [](const Worker& w) { return w.missed_probes > 0; });
}

std::string WorkerGroup::WaitingFor(std::string* with_reason) const {
  absl::MutexLock lock(&mu_);
  std::vector<int> silent, held, draining, loading;
  for (int i = 0; i < num_workers(); ++i) {
    const WorkerStatus& s = workers_[i].status;
    if (s.healthy) continue;
    (s.held_by_another ? held : s.draining ? draining : s.loading ? loading : silent).push_back(i);
  }
  const size_t waiting = silent.size() + held.size() + draining.size() + loading.size();
  std::string out;
  std::string reason;  // after "no answer from ..."
  if (waiting > 0) {
    out = absl::StrCat(waiting, " of ", num_workers(), " workers");
    if (!silent.empty()) {
      absl::StrAppend(&out, "; no answer from ", absl::StrJoin(silent, ", "));
      // Why the first did not answer: a refused connection, or a TLS handshake that failed.
      if (const std::string& why = workers_[silent.front()].probe_error; !why.empty()) {
        reason = absl::StrCat(" (", silent.front(), ": ", why, ")");
      }
    }
  }
  const size_t reason_at = out.size();
  if (!draining.empty()) {
    absl::StrAppend(&out, "; shutting down: ", absl::StrJoin(draining, ", "));
  }
  if (!loading.empty()) {
    absl::StrAppend(
        &out, "; still loading the shard of a group that broke: ", absl::StrJoin(loading, ", "));
  }
  if (!held.empty()) {
    absl::StrAppend(&out, "; another coordinator's group holds ", absl::StrJoin(held, ", "),
                    " (do two coordinators drive these workers?)");
  }
  if (with_reason != nullptr) {
    *with_reason = out;
    with_reason->insert(reason_at, reason);
  }
  return out;
}

std::vector<int> WorkerGroup::Members() const {
  absl::MutexLock lock(&mu_);
  return members_;
}

std::optional<int64_t> WorkerGroup::kv_capacity_tokens() const {
  absl::MutexLock lock(&mu_);
  return kv_capacity_tokens_;
}

bool WorkerGroup::takes_token_masks() const {
  absl::MutexLock lock(&mu_);
  return token_masks_;
}

absl::Status WorkerGroup::refusal() const {
  absl::MutexLock lock(&mu_);
  return state_ == GroupState::kRefused ? refusal_ : absl::OkStatus();
}

bool WorkerGroup::WaitReady(absl::Duration timeout) const {
  absl::MutexLock lock(&mu_);
  auto ready = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return state_ == GroupState::kReady; };
  return mu_.AwaitWithTimeout(absl::Condition(&ready), timeout);
}

void WorkerGroup::SetState(GroupState state, const absl::Status& why,
                           std::optional<int64_t> only_at_epoch) {
  {
    absl::MutexLock lock(&mu_);
    if (state_ == GroupState::kStopped) return;
    if (only_at_epoch.has_value() && epoch_ != *only_at_epoch) return;
    if (state_ == state && (state != GroupState::kRefused || refusal_ == why)) return;
    state_ = state;
    refusal_ = state == GroupState::kRefused ? why : absl::OkStatus();
  }
  if (state == GroupState::kRefused) {
    LLMINT8_LOG(ERROR) << "worker group: refused: " << why;
  } else if (why.ok()) {
    LLMINT8_LOG(INFO) << "worker group: " << StateName(state);
  } else {
    LLMINT8_LOG(WARNING) << "worker group: " << StateName(state) << ": " << why;
  }
  if (on_state_change_) on_state_change_(state);
}

void WorkerGroup::Break(const absl::Status& why, std::optional<int64_t> only_at_epoch) {
  SetState(GroupState::kBroken, why, only_at_epoch);
}

std::vector<WorkerStatus> WorkerGroup::Workers() const {
  absl::MutexLock lock(&mu_);
  std::vector<WorkerStatus> out;
  for (int i : members_) out.push_back(workers_[i].status);
  for (const Worker& w : workers_) {
    if (w.status.rank < 0) out.push_back(w.status);
  }
  return out;
}

void WorkerGroup::RefreshStats() {
  const std::vector<int> members = Members();
  const int n = static_cast<int>(members.size());
  auto r = FanOut<v1::StatsResponse>(
      n, options_.probe_timeout, NeverCancel,
      [&](int i, grpc::ClientContext* ctx, v1::StatsResponse* resp, auto done) {
        static const v1::StatsRequest kRequest;
        workers_[members[i]].stub->async()->Stats(ctx, &kRequest, resp, std::move(done));
      });
  absl::MutexLock lock(&mu_);
  for (int i = 0; i < n; ++i) {
    if (!r.statuses[i].ok() || r.responses[i].total_bytes() == 0) continue;
    WorkerStatus& status = workers_[members[i]].status;
    status.weight_bytes = r.responses[i].weight_bytes();
    status.kv_cache_bytes = r.responses[i].kv_cache_bytes();
    status.total_bytes = r.responses[i].total_bytes();
  }
}

std::vector<int> WorkerGroup::All() const {
  std::vector<int> all(num_workers());
  for (int i = 0; i < num_workers(); ++i) all[i] = i;
  return all;
}

std::vector<int> WorkerGroup::Idle() const {
  absl::MutexLock lock(&mu_);
  std::vector<int> idle;
  for (int i = 0; i < num_workers(); ++i) {
    if (workers_[i].status.rank < 0) idle.push_back(i);
  }
  return idle;
}

bool WorkerGroup::Probe(const std::vector<int>& probed, int64_t expected_epoch) {
  if (probed.empty()) return true;
  const int n = static_cast<int>(probed.size());
  v1::WorkerInfoRequest request;  // our epoch renews our lease on the members
  request.set_epoch(WireEpoch(epoch()));
  auto r = FanOut<v1::WorkerInfoResponse>(
      n, options_.probe_timeout, NeverCancel,
      [&](int k, grpc::ClientContext* ctx, v1::WorkerInfoResponse* resp, auto done) {
        workers_[probed[k]].stub->async()->Info(ctx, &request, resp, std::move(done));
      });
  bool all = true;
  std::vector<HeldGroup> let_go;  // shutting down while still in a group of ours, broken
  {
    absl::MutexLock lock(&mu_);
    for (int k = 0; k < n; ++k) {
      const int i = probed[k];
      // A ready member whose probe timed out is asked again before it counts as gone: one
      // slow answer (a loaded host, a retransmitted packet) is no reason to fail the running
      // requests and have every worker load its shard again. Two in a row (about 2.5 s) are,
      // when the lease outlasts them (MayMissAProbe); a refused connection (the process is
      // gone) is at once.
      if (expected_epoch >= 0 && MayMissAProbe() &&
          r.statuses[k].error_code() == grpc::StatusCode::DEADLINE_EXCEEDED &&
          ++workers_[i].missed_probes < kProbesMissedToLeave) {
        LLMINT8_LOG(WARNING) << "worker " << i << " (" << workers_[i].address
                             << ") did not answer a probe within "
                             << absl::FormatDuration(options_.probe_timeout) << ": asking again";
        continue;
      }
      workers_[i].missed_probes = 0;
      workers_[i].probe_error = r.statuses[k].error_message();
      bool healthy = r.statuses[k].ok();
      const int64_t theirs = healthy ? r.responses[k].epoch() : 0;
      const bool held = healthy && r.responses[k].held_by_another();
      if (healthy && expected_epoch >= 0) {
        healthy = theirs == WireEpoch(expected_epoch) && r.responses[k].loaded();
      }
      healthy = healthy && !held;
      workers_[i].status.held_by_another = held;
      // A member shutting down: it serves the running sequences, then goes; nothing new starts.
      // An idle worker shutting down cannot join (forming counts it as not answering).
      const bool draining = r.statuses[k].ok() && r.responses[k].draining();
      workers_[i].status.draining = draining;
      // Forming: a worker still loading a shard of ours (of a group that broke while it
      // loaded) reports its free memory without what that load holds, which it frees at its
      // next layer: it is waited for, not planned with (the plan would find too little memory
      // and refuse the model). A loaded shard's bytes are in held_bytes; a loading one's not.
      const bool loading = r.statuses[k].ok() && !held && theirs != 0 && !r.responses[k].loaded() &&
                           r.responses[k].held_bytes() == 0;
      workers_[i].status.loading = loading;
      if (expected_epoch < 0) healthy = healthy && !draining && !loading;
      // Forming (never while ready), so any group of ours it holds is one we left.
      if (draining && expected_epoch < 0 && theirs != 0 &&
          worker::CoordinatorInstance(theirs) == instance_) {
        let_go.push_back({i, theirs});
      }
      // An idle spare of the ready group that still holds an older group of ours (it was a
      // member until it stopped answering, and is back): let it go, so it drops that shard
      // (its memory may be the new group's, on a GPU they share).
      if (!draining && expected_epoch < 0 && state_ == GroupState::kReady &&
          workers_[i].status.rank < 0 && theirs != 0 && theirs != WireEpoch(epoch_) &&
          worker::CoordinatorInstance(theirs) == instance_) {
        LLMINT8_LOG(INFO) << "worker " << i << " (" << workers_[i].address
                          << ") idles with the shard of an older group (epoch " << theirs
                          << "): letting it go";
        let_go.push_back({i, theirs});
      }
      if (draining && expected_epoch >= 0 && !draining_) {
        draining_ = true;
        LLMINT8_LOG(WARNING) << "worker " << i << " (" << workers_[i].address
                             << ") is shutting down: the running requests finish, new ones wait "
                                "until the group re-forms";
      }
      if (r.statuses[k].ok()) {
        workers_[i].held_epoch = r.responses[k].epoch();
        workers_[i].process_id = r.responses[k].process_id();
        workers_[i].status.device = r.responses[k].device();
        workers_[i].status.memory_bytes = r.responses[k].memory_bytes();
        workers_[i].status.memory_pool = r.responses[k].memory_pool();
        workers_[i].status.held_bytes = r.responses[k].held_bytes();
      }
      if (workers_[i].status.healthy != healthy && expected_epoch >= 0) {
        // A group epoch whose high bits are not this coordinator's was formed by another one.
        const bool taken = theirs != 0 && worker::CoordinatorInstance(theirs) != instance_;
        LLMINT8_LOG(WARNING) << "worker " << i << " (" << workers_[i].address << ") "
                             << (!r.statuses[k].ok()
                                     ? "is unreachable: " + r.statuses[k].error_message()
                                 : taken ? std::string("joined a group another coordinator formed: "
                                                       "do two coordinators drive these workers?")
                                         : std::string("left the group"));
      }
      workers_[i].status.healthy = healthy;
      all = all && healthy;
    }
  }
  if (!let_go.empty()) EndLease(let_go);
  return all;
}

absl::Status WorkerGroup::Choose(bool answered_only) {
  std::vector<int> candidates;  // worker indices
  std::vector<int64_t> reported;
  std::vector<int64_t> held;
  std::vector<std::string> pools;
  std::vector<std::string> other_device;  // workers a planned group leaves out
  {
    absl::MutexLock lock(&mu_);
    for (int i = 0; i < num_workers(); ++i) {
      if (answered_only && !workers_[i].status.healthy) continue;
      const std::string& device = workers_[i].status.device;
      if (options_.policy == GroupPolicy::kSmallest && options_.config.has_value() &&
          !device.empty() && device != options_.device) {
        // It would refuse the shard (worker --device): the others may form the group.
        other_device.push_back(
            absl::StrCat("worker ", i, " (", workers_[i].address, ") runs on ", device));
        continue;
      }
      // One process listed twice (a host name and its address): it would be asked for two
      // ranks, and the group would wait for ever for the second.
      for (int j : candidates) {
        if (workers_[i].process_id != 0 && workers_[j].process_id == workers_[i].process_id) {
          return absl::AlreadyExistsError(absl::StrCat(  // refused as FAILED_PRECONDITION
              "workers ", j, " (", workers_[j].address, ") and ", i, " (", workers_[i].address,
              ") are one process: list each worker once in --workers"));
        }
      }
      candidates.push_back(i);
      reported.push_back(workers_[i].status.memory_bytes);
      held.push_back(workers_[i].status.held_bytes);
      pools.push_back(workers_[i].status.memory_pool);
    }
  }
  if (std::string left_out = absl::StrJoin(other_device, "; "); left_out != left_out_logged_) {
    if (!left_out.empty()) {
      LLMINT8_LOG(WARNING) << "group: left out, the group runs on " << options_.device << ": "
                           << left_out;
    }
    left_out_logged_ = std::move(left_out);
  }
  if (candidates.empty()) {
    return absl::FailedPreconditionError(
        other_device.empty() ? std::string("no worker answered")
                             : absl::StrCat("no worker runs on ", options_.device, " (",
                                            absl::StrJoin(other_device, "; "), ")"));
  }
  // Candidates reporting the free memory of one GPU or host each plan with their part of it
  // (all of them count, members or not: a conservative plan for --group=smallest).
  const std::vector<int> sharers = MemorySharers(pools);
  reported = MemoryPoolShares(reported, held, pools);
  GroupChoice choice;
  if (options_.config.has_value()) {
    GroupRequest request;
    request.policy = options_.policy;
    request.dtype = options_.dtype;
    request.device = options_.device;
    request.reserve_sequences = options_.reserve_sequences;
    request.max_context = options_.max_context;
    request.max_step_tokens = options_.max_step_tokens;
    request.max_step_rows = options_.max_step_rows;
    request.max_batch = options_.max_batch;
    absl::StatusOr<GroupChoice> chosen = ChooseGroup(*options_.config, request, reported);
    if (!chosen.ok()) return chosen.status();
    choice = *std::move(chosen);
  } else {
    for (size_t k = 0; k < candidates.size(); ++k) choice.members.push_back(static_cast<int>(k));
    choice.summary = "no model config to plan with; all workers join";
  }
  if (answered_only && !choice.planned) {
    return absl::FailedPreconditionError(
        absl::StrCat("not planned (", choice.summary, "): the group waits for every worker"));
  }
  std::vector<std::string> sizes;
  for (size_t k = 0; k < reported.size(); ++k) {
    sizes.push_back(FormatBytes(reported[k]));
    if (sharers[k] > 1) absl::StrAppend(&sizes.back(), " (1/", sharers[k], " of a shared pool)");
  }
  LLMINT8_LOG(INFO) << "group: " << choice.summary << " (workers "
                    << absl::StrJoin(candidates, ", ") << " have " << absl::StrJoin(sizes, ", ")
                    << ")";
  absl::MutexLock lock(&mu_);
  members_.clear();
  for (int k : choice.members) members_.push_back(candidates[k]);
  for (Worker& w : workers_) {
    // A worker left out holds no shard of this group: its last shard's figures are not shown.
    w.status.rank = -1;
    w.status.weight_bytes = w.status.kv_cache_bytes = w.status.total_bytes = 0;
  }
  for (size_t r = 0; r < members_.size(); ++r) {
    workers_[members_[r]].status.rank = static_cast<int>(r);
  }
  return absl::OkStatus();
}

absl::Status WorkerGroup::Form() {
  int64_t epoch;
  {
    absl::MutexLock lock(&mu_);
    epoch = ++epoch_;
  }
  const std::vector<int> members = Members();
  const int n = static_cast<int>(members.size());
  // Workers left out that hold an older group of ours (a member that missed its probes and is
  // back, say) drop that shard before the members load: the plan counted its memory as theirs
  // when they share a pool (MemoryPoolShares), and a GPU shared with them could not hold both.
  std::vector<HeldGroup> stale;
  {
    absl::MutexLock lock(&mu_);
    for (int i = 0; i < num_workers(); ++i) {
      const int64_t held = workers_[i].held_epoch;
      // (Only those that answered: one that did not is let go once it is back, by Probe.)
      if (workers_[i].status.rank < 0 && workers_[i].status.healthy && held != 0 &&
          held != WireEpoch(epoch) && worker::CoordinatorInstance(held) == instance_) {
        LLMINT8_LOG(INFO) << "worker " << i << " (" << workers_[i].address
                          << ") is left out and holds the shard of an older group (epoch " << held
                          << "): letting it go before the group loads";
        stale.push_back({i, held});
        workers_[i].held_epoch = 0;
      }
    }
  }
  if (!stale.empty()) EndLease(stale);
  LLMINT8_LOG(INFO) << "forming worker group epoch " << epoch << " (" << WireEpoch(epoch)
                    << " on the workers): " << n << " of " << num_workers() << " workers, "
                    << options_.backend << ", model " << options_.model << " (" << options_.dtype
                    << ")";
  std::vector<std::string> pools(n);
  {
    absl::MutexLock lock(&mu_);
    for (int i = 0; i < n; ++i) pools[i] = workers_[members[i]].status.memory_pool;
  }
  const std::vector<int> sharers = MemorySharers(pools);
  if (options_.on_forming) options_.on_forming(WireEpoch(epoch));
  std::vector<v1::LoadShardRequest> requests(n);
  for (int i = 0; i < n; ++i) {
    v1::LoadShardRequest& req = requests[i];
    req.set_epoch(WireEpoch(epoch));
    req.set_rank(i);
    req.set_world_size(n);
    req.set_backend(options_.backend);
    req.set_model(options_.model);
    req.set_dtype(options_.dtype);
    req.set_threshold(options_.threshold);
    req.set_device(options_.device);
    req.set_rendezvous_address(rendezvous_address_);
    req.set_max_batch(options_.max_batch);
    req.set_max_context(options_.max_context);
    req.set_max_step_tokens(options_.max_step_tokens);
    req.set_max_step_rows(options_.max_step_rows);
    req.set_lease_ms(absl::ToInt64Milliseconds(options_.lease));
    // 0 for a worker that named no pool: it keeps its old, conservative share.
    req.set_memory_sharers(pools[i].empty() ? 0 : sharers[i]);
  }
  absl::Notification loaded;
  FormWatch watch;
  std::thread renewer([&] { RenewUntil(members, WireEpoch(epoch), loaded, watch); });
  // Stop waiting for the loads when the coordinator stops or a member is lost meanwhile.
  auto abandon = [&]() -> absl::Status {
    {
      absl::MutexLock lock(&mu_);
      if (stop_) return absl::CancelledError("the coordinator is stopping");
    }
    absl::MutexLock lock(&watch.mu);
    return watch.lost;
  };
  const absl::Time load_start = absl::Now();
  auto r = FanOutAbandoning<v1::LoadShardResponse>(
      n, options_.load_timeout, AnyFailure, abandon,
      [&](int i, grpc::ClientContext* ctx, v1::LoadShardResponse* resp, auto done) {
        workers_[members[i]].stub->async()->LoadShard(ctx, &requests[i], resp, std::move(done));
      });
  loaded.Notify();
  renewer.join();
  absl::Status lost_while_loading;
  {
    absl::MutexLock lock(&watch.mu);
    lost_while_loading = watch.lost;
  }
  if (r.first_failure >= 0) {
    // Given up while loading (a member lost, or the coordinator stops): that is the reason.
    if (absl::Status gave_up = abandon(); !gave_up.ok()) return gave_up;
    int i = r.first_failure;
    for (int k = 0; k < n; ++k) {  // prefer the root cause over a peer's timeout
      const grpc::StatusCode code = r.statuses[k].error_code();
      if (code == grpc::StatusCode::RESOURCE_EXHAUSTED) {
        i = k;
        break;
      }
      if (code != grpc::StatusCode::OK && code != grpc::StatusCode::CANCELLED &&
          code != grpc::StatusCode::DEADLINE_EXCEEDED &&
          (r.statuses[i].error_code() == grpc::StatusCode::DEADLINE_EXCEEDED ||
           r.statuses[i].error_code() == grpc::StatusCode::CANCELLED)) {
        i = k;
      }
    }
    const Worker& w = workers_[members[i]];
    if (r.statuses[i].error_code() == grpc::StatusCode::DEADLINE_EXCEEDED &&
        absl::Now() - load_start >= options_.load_timeout) {
      return absl::DeadlineExceededError(absl::StrCat(
          "worker ", members[i], " (", w.address, ") did not load its shard within ",
          absl::FormatDuration(options_.load_timeout), " (the coordinator's --load_timeout)"));
    }
    return FromGrpcStatus(r.statuses[i],
                          absl::StrCat("LoadShard on worker ", members[i], " (", w.address, ")"));
  }
  // A member that began shutting down while the others loaded goes when it is idle: the group
  // re-forms (without it, or when it is back) rather than admit requests it would fail.
  if (!lost_while_loading.ok()) return lost_while_loading;
  // One --model, but not one checkpoint (another version on one host's disk): the ranks'
  // slices would not make one model, and the output would be wrong with no error. Refused as a
  // model that does not load (tried again after a while, in case the files are made equal).
  // Fingerprints of one version ("<version>:<hash>") are compared; older workers send none,
  // and another release's may hash otherwise.
  const auto version = [](const std::string& f) { return f.substr(0, f.find(':')); };
  std::string first;  // the first member's that has one
  for (int i = 0; i < n && first.empty(); ++i) first = r.responses[i].model_fingerprint();
  std::vector<std::string> fingerprints;
  bool differ = false;
  for (int i = 0; i < n; ++i) {
    const std::string& f = r.responses[i].model_fingerprint();
    if (f.empty() || version(f) != version(first)) continue;
    fingerprints.push_back(
        absl::StrCat("worker ", members[i], " (", workers_[members[i]].address, ") has ", f));
    differ = differ || f != first;
  }
  if (differ) {
    return absl::InvalidArgumentError(
        absl::StrCat("the workers loaded different checkpoints as ", options_.model, ": ",
                     absl::StrJoin(fingerprints, ", "),
                     " (model/checkpoint_fingerprint.h); give every worker the same files"));
  }
  absl::MutexLock lock(&mu_);
  token_masks_ = true;
  for (int i = 0; i < n; ++i) token_masks_ = token_masks_ && r.responses[i].token_masks();
  // The least of the members' capacities; unknown when any member does not know its own.
  kv_capacity_tokens_.reset();
  for (int i = 0; i < n; ++i) {
    if (!r.responses[i].has_kv_capacity_tokens()) {
      kv_capacity_tokens_.reset();
      break;
    }
    const int64_t cap = r.responses[i].kv_capacity_tokens();
    kv_capacity_tokens_ =
        kv_capacity_tokens_.has_value() ? std::min(*kv_capacity_tokens_, cap) : cap;
  }
  if (kv_capacity_tokens_.has_value() && *kv_capacity_tokens_ < options_.max_context) {
    // Served, but one sequence at a time, and a long one may be refused: say what it takes.
    LLMINT8_LOG(WARNING) << "the group holds only " << *kv_capacity_tokens_
                         << " KV cache positions, less than one sequence of "
                         << options_.max_context
                         << " (--max_context): requests run one at a time and a long one may fail "
                            "RESOURCE_EXHAUSTED. Each worker also keeps room for a step of "
                         << options_.max_step_tokens << " tokens and " << options_.max_step_rows
                         << " logit rows (--max_batch + --score_chunk): give the workers more "
                            "memory, or lower --max_batch, --score_chunk or --max_context";
  } else if (kv_capacity_tokens_.has_value()) {
    LLMINT8_LOG(INFO) << "the group holds " << *kv_capacity_tokens_ << " KV cache positions";
  }
  draining_ = false;
  for (int i = 0; i < n; ++i) {
    WorkerStatus& status = workers_[members[i]].status;
    status.healthy = true;
    status.weight_bytes = r.responses[i].weight_bytes();
    status.total_bytes = r.responses[i].total_bytes();
  }
  return absl::OkStatus();
}

void WorkerGroup::MonitorLoop() {
  auto sleep = [this](absl::Duration d) {
    absl::MutexLock lock(&mu_);
    mu_.AwaitWithTimeout(absl::Condition(&stop_), d);
    return !stop_;
  };
  std::string waiting_logged;  // what forming waits for, last logged
  std::string reason_logged;   // and why, as logged then
  absl::Time reason_logged_at = absl::InfinitePast();
  absl::Time waiting_since = absl::InfiniteFuture();
  std::string partial_refusal;  // why the answering workers cannot form it, last logged
  // Idle spares are probed every this many rounds while the group is ready (2 s by default).
  constexpr int kIdleProbeRounds = 8;
  int64_t ready_rounds = 0;
  int load_failures = 0;  // consecutive Form()s that failed to load the model
  // The workers away (silent, shutting down, held) when the group was last refused: one away
  // all along (a dead spare) does not make the refusal stale, one gone since does.
  std::vector<int> away_at_refusal;
  auto gone_since = [this](const std::vector<int>& before) {
    const std::vector<int> away = Away();
    return std::any_of(away.begin(), away.end(), [&](int i) {
      return std::find(before.begin(), before.end(), i) == before.end();
    });
  };
  auto refuse = [&](const absl::Status& why) {
    away_at_refusal = Away();
    SetState(GroupState::kRefused, why);
  };
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      if (stop_) break;
    }
    if (state() == GroupState::kReady) {
      if (!Probe(Members(), epoch())) Break(absl::UnavailableError("a worker left the group"));
      // Not while a member's probe is being asked again: a silent spare's probe would add its
      // timeout to the gap the members' lease must outlast (MayMissAProbe).
      if (++ready_rounds % kIdleProbeRounds == 0 && !AMemberMissedAProbe()) Probe(Idle(), -1);
      if (!sleep(options_.probe_interval)) break;
      continue;
    }
    const bool all_answered = Probe(All(), -1);
    absl::Status chosen;
    if (all_answered) {
      chosen = Choose(/*answered_only=*/false);
    } else {
      const absl::Time now = absl::Now();
      if (waiting_since == absl::InfiniteFuture()) waiting_since = now;
      const bool may_form_partial =
          options_.policy == GroupPolicy::kSmallest && now - waiting_since >= options_.join_wait;
      absl::Status partial = absl::UnavailableError("waiting for every worker");
      if (may_form_partial) {
        partial = Choose(/*answered_only=*/true);
        if (partial.code() == absl::StatusCode::kAlreadyExists) {
          // One worker listed twice: no wait mends that.
          refuse(absl::FailedPreconditionError(partial.message()));
          if (!sleep(options_.probe_interval)) break;
          continue;
        }
        if (!partial.ok() && partial.message() != partial_refusal) {
          partial_refusal = std::string(partial.message());
          LLMINT8_LOG(INFO) << "the workers that answered cannot form the group ("
                            << partial_refusal << "); waiting for the others";
        }
      }
      if (!partial.ok()) {
        // A refusal (the model did not load, or did not fit) is stale once a worker is gone
        // since: the requests wait for the workers again instead of failing with it. Not for
        // one away all along (a dead spare), nor one still stopping the refused load.
        if (state() == GroupState::kRefused && gone_since(away_at_refusal)) {
          Break(absl::UnavailableError(absl::StrCat("waiting for ", WaitingFor())));
        }
        // Logged when who is waited for changes, and when why changes (a refused connection
        // becoming a failed handshake) at most every kReasonLogInterval: a reason can change
        // from probe to probe.
        std::string reason;
        std::string waiting = WaitingFor(&reason);
        if (waiting != waiting_logged ||
            (reason != reason_logged && absl::Now() - reason_logged_at >= kReasonLogInterval)) {
          LLMINT8_LOG(INFO) << "waiting for " << reason;
          waiting_logged = std::move(waiting);
          reason_logged = std::move(reason);
          reason_logged_at = absl::Now();
        }
        if (!sleep(options_.probe_interval)) break;
        continue;
      }
      // Those still stopping a broken group's load did answer: they are named apart.
      const std::vector<int> unanswered = Unanswered();
      const std::vector<int> loading =
          WorkersWhere([](const WorkerStatus& s) { return !s.healthy && s.loading; });
      LLMINT8_LOG(WARNING) << "forming without workers " << absl::StrJoin(unanswered, ", ")
                           << " (no answer for " << absl::FormatDuration(now - waiting_since)
                           << (loading.empty() ? ""
                                               : absl::StrCat("; still loading the shard of a "
                                                              "group that broke: ",
                                                              absl::StrJoin(loading, ", ")))
                           << "); the ones that answered hold the model";
      chosen = partial;  // OK here: the answering workers were chosen
    }
    waiting_logged.clear();
    reason_logged.clear();
    waiting_since = absl::InfiniteFuture();
    partial_refusal.clear();
    if (!chosen.ok()) {
      load_failures = 0;  // the backoff is for the same model error again and again
      if (chosen.code() == absl::StatusCode::kFailedPrecondition ||
          chosen.code() == absl::StatusCode::kAlreadyExists) {
        // Logs when the reason changes.
        refuse(absl::FailedPreconditionError(chosen.message()));
      } else {
        Break(chosen);
      }
      if (!sleep(options_.probe_interval)) break;
      continue;
    }
    SetState(GroupState::kForming, absl::OkStatus());
    absl::Status formed = Form();
    if (formed.ok()) {
      load_failures = 0;
      SetState(GroupState::kReady, absl::OkStatus());
    } else if (IsModelLoadError(formed.code())) {
      // The model itself does not load (a bad or missing file, a config its weights do not
      // match, too little memory): trying again at once would fail alike, and requests would
      // wait for ever. Refuse them with the reason, and try again after 1, 2, 4 ... 30 s, in
      // case the files or the memory change.
      ++load_failures;
      refuse(absl::FailedPreconditionError(
          absl::StrCat("the workers cannot load ", options_.model, ": ", formed.message(),
                       " (the coordinator tries again, at least every 30 s)")));
      const absl::Duration backoff = std::min(
          absl::Seconds(1) * (int64_t{1} << std::min(load_failures - 1, 5)), absl::Seconds(30));
      // The workers are probed meanwhile, as at any other time: one lost or shutting down
      // since ends the wait (forming then waits for it, and the refusal gives way). Not one
      // that was away already (a dead spare under --group=smallest), nor one still stopping
      // the refused load.
      LLMINT8_LOG(INFO) << "worker group: load failure " << load_failures << "; trying again in "
                        << absl::FormatDuration(backoff) << ", sooner if a worker goes away";
      const absl::Time retry_at = absl::Now() + backoff;
      bool stopping = false;
      while (absl::Now() < retry_at) {
        if (!sleep(std::min(options_.probe_interval, retry_at - absl::Now()))) {
          stopping = true;
          break;
        }
        Probe(All(), -1);
        if (gone_since(away_at_refusal)) break;
      }
      if (stopping) break;
    } else {
      load_failures = 0;
      {
        absl::MutexLock lock(&mu_);
        if (stop_) break;  // the loads were cancelled because the coordinator stops
      }
      Break(formed);
      if (!sleep(absl::Seconds(1))) break;
    }
  }
  SetState(GroupState::kStopped, absl::OkStatus());
}

absl::StatusOr<v1::StepResponse> WorkerGroup::Step(v1::StepRequest request, int64_t epoch) {
  std::vector<int> members;
  {
    // One look at the group: members_ may change (a re-forming chooses them) before the epoch
    // does, and a step must go to the members of its epoch only.
    absl::MutexLock lock(&mu_);
    if (state_ != GroupState::kReady) return StepNotSentError("the worker group is not ready");
    if (epoch != epoch_) {
      return StepNotSentError(
          "the worker group re-formed after this step was built; retry the request");
    }
    members = members_;
  }
  const int n = static_cast<int>(members.size());
  request.set_epoch(WireEpoch(epoch));
  // Given up on: the group lost or re-formed, or the coordinator stops (CancelSteps too).
  auto step_abandoned = [this, epoch]() -> absl::Status {
    {
      absl::MutexLock lock(&mu_);
      if (steps_cancelled_) return absl::CancelledError("the coordinator is stopping");
    }
    return Abandoned(epoch);
  };
  auto r = FanOutAbandoning<v1::StepResponse>(
      n, options_.step_timeout, FatalFailure, step_abandoned,
      [&](int i, grpc::ClientContext* ctx, v1::StepResponse* resp, auto done) {
        workers_[members[i]].stub->async()->Step(ctx, &request, resp, std::move(done));
      });
  if (r.first_failure < 0) return std::move(r.responses[0]);
  // A bad batch that every rank rejected alike leaves the group usable.
  bool all_same_batch_error = true;
  for (const grpc::Status& s : r.statuses) {
    all_same_batch_error = all_same_batch_error && !s.ok() && IsBatchError(s.error_code()) &&
                           s.error_code() == r.statuses[0].error_code();
  }
  if (all_same_batch_error) {
    // The workers' step errors mostly name the call already.
    const std::string& message = r.statuses[0].error_message();
    return FromGrpcStatus(r.statuses[0], absl::StartsWith(message, "Step:") ? "" : "Step");
  }
  int failed = r.first_failure;
  bool answered = false;         // a worker's own error, not the fan-out's cancellation
  for (int i = 0; i < n; ++i) {  // prefer the root cause over a cancellation
    if (!r.statuses[i].ok() && r.statuses[i].error_code() != grpc::StatusCode::CANCELLED) {
      failed = i;
      answered = true;
      break;
    }
  }
  if (absl::Status gone = step_abandoned(); !gone.ok()) {
    // The coordinator stops (CancelSteps, or Stop): CANCELLED, the group as it was.
    if (gone.code() == absl::StatusCode::kCancelled) return gone;
    // The monitor broke the group (a member stopped answering) or the coordinator stops; a
    // worker's own error (its collective failing, with its rank) says why.
    std::string cause;
    if (answered && r.statuses[failed].error_code() != grpc::StatusCode::DEADLINE_EXCEEDED) {
      cause = absl::StrCat("; worker ", members[failed], " (", workers_[members[failed]].address,
                           ") said: ", r.statuses[failed].error_message());
    }
    return absl::UnavailableError(absl::StrCat(gone.message(), cause, "; retry the request"));
  }
  const bool late = r.statuses[failed].error_code() == grpc::StatusCode::DEADLINE_EXCEEDED;
  absl::Status why = absl::UnavailableError(absl::StrCat(
      "worker ", members[failed], " (", workers_[members[failed]].address, ") ",
      late ? absl::StrCat("did not finish a step within ",
                          absl::FormatDuration(options_.step_timeout),
                          " (the coordinator's --step_timeout)")
           : absl::StrCat("failed during a step: ", r.statuses[failed].error_message()),
      "; the group is re-forming, retry the request"));
  Break(why, epoch);
  return why;
}

absl::Status WorkerGroup::Release(const std::vector<uint64_t>& seq_ids) {
  if (seq_ids.empty() || !ready()) return absl::OkStatus();
  const int64_t epoch = this->epoch();
  v1::ReleaseRequest request;
  request.set_epoch(WireEpoch(epoch));
  for (uint64_t id : seq_ids) request.add_seq_ids(id);
  const std::vector<int> members = Members();
  auto r = FanOutAbandoning<v1::ReleaseResponse>(
      static_cast<int>(members.size()), options_.step_timeout, AnyFailure,
      [this, epoch] { return Abandoned(epoch); },
      [&](int i, grpc::ClientContext* ctx, v1::ReleaseResponse* resp, auto done) {
        workers_[members[i]].stub->async()->Release(ctx, &request, resp, std::move(done));
      });
  if (r.first_failure < 0) return absl::OkStatus();
  const int i = r.first_failure;
  absl::Status why = absl::UnavailableError(absl::StrCat("Release on worker ", members[i], " (",
                                                         workers_[members[i]].address,
                                                         "): ", r.statuses[i].error_message()));
  Break(why, epoch);
  return why;
}

}  // namespace llmint8::coordinator
