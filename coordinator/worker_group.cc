#include "coordinator/worker_group.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "coordinator/fan_out.h"
#include "common/log.h"
#include "worker/grpc_status.h"

namespace llmint8::coordinator {
namespace {

bool IsBatchError(grpc::StatusCode code) {
  return code == grpc::StatusCode::INVALID_ARGUMENT || code == grpc::StatusCode::OUT_OF_RANGE ||
         code == grpc::StatusCode::RESOURCE_EXHAUSTED;
}

bool AnyFailure(const grpc::Status& s) { return !s.ok(); }
bool FatalFailure(const grpc::Status& s) { return !s.ok() && !IsBatchError(s.error_code()); }

const char* StateName(GroupState s) {
  switch (s) {
    case GroupState::kForming:
      return "forming";
    case GroupState::kReady:
      return "ready";
    case GroupState::kBroken:
      return "broken";
    case GroupState::kStopped:
      return "stopped";
  }
  return "?";
}

}  // namespace

WorkerGroup::WorkerGroup(WorkerGroupOptions options,
                         std::function<void(GroupState)> on_state_change)
    : options_(std::move(options)), on_state_change_(std::move(on_state_change)) {
  for (const std::string& address : options_.addresses) {
    grpc::ChannelArguments args;
    // Reconnect quickly to a restarted worker.
    args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
    args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
    Worker w;
    w.address = address;
    w.stub = v1::Worker::NewStub(
        grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args));
    w.status.address = address;
    workers_.push_back(std::move(w));
  }
}

WorkerGroup::~WorkerGroup() { Stop(); }

void WorkerGroup::Start(std::string rendezvous_address) {
  rendezvous_address_ = std::move(rendezvous_address);
  monitor_ = std::thread([this] { MonitorLoop(); });
}

void WorkerGroup::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  if (monitor_.joinable()) monitor_.join();
}

GroupState WorkerGroup::state() const {
  absl::MutexLock lock(&mu_);
  return state_;
}

int64_t WorkerGroup::epoch() const {
  absl::MutexLock lock(&mu_);
  return epoch_;
}

bool WorkerGroup::WaitReady(absl::Duration timeout) const {
  absl::MutexLock lock(&mu_);
  auto ready = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return state_ == GroupState::kReady; };
  return mu_.AwaitWithTimeout(absl::Condition(&ready), timeout);
}

void WorkerGroup::SetState(GroupState state, const absl::Status& why) {
  {
    absl::MutexLock lock(&mu_);
    if (state_ == state || state_ == GroupState::kStopped) return;
    state_ = state;
  }
  if (why.ok()) {
    LLMINT8_LOG(INFO) << "worker group: " << StateName(state);
  } else {
    LLMINT8_LOG(WARNING) << "worker group: " << StateName(state) << ": " << why;
  }
  if (on_state_change_) on_state_change_(state);
}

void WorkerGroup::Break(const absl::Status& why) { SetState(GroupState::kBroken, why); }

std::vector<WorkerStatus> WorkerGroup::Workers() const {
  absl::MutexLock lock(&mu_);
  std::vector<WorkerStatus> out;
  for (const Worker& w : workers_) out.push_back(w.status);
  return out;
}

void WorkerGroup::RefreshStats() {
  auto r = FanOut<v1::StatsResponse>(
      world_size(), options_.probe_timeout, AnyFailure,
      [&](int i, grpc::ClientContext* ctx, v1::StatsResponse* resp, auto done) {
        static const v1::StatsRequest kRequest;
        workers_[i].stub->async()->Stats(ctx, &kRequest, resp, std::move(done));
      });
  absl::MutexLock lock(&mu_);
  for (int i = 0; i < world_size(); ++i) {
    if (!r.statuses[i].ok() || r.responses[i].total_bytes() == 0) continue;
    workers_[i].status.weight_bytes = r.responses[i].weight_bytes();
    workers_[i].status.kv_cache_bytes = r.responses[i].kv_cache_bytes();
    workers_[i].status.total_bytes = r.responses[i].total_bytes();
  }
}

bool WorkerGroup::ProbeAll(int64_t expected_epoch) {
  auto r = FanOut<v1::WorkerInfoResponse>(
      world_size(), options_.probe_timeout, AnyFailure,
      [&](int i, grpc::ClientContext* ctx, v1::WorkerInfoResponse* resp, auto done) {
        static const v1::WorkerInfoRequest kRequest;
        workers_[i].stub->async()->Info(ctx, &kRequest, resp, std::move(done));
      });
  bool all = true;
  absl::MutexLock lock(&mu_);
  for (int i = 0; i < world_size(); ++i) {
    bool healthy = r.statuses[i].ok();
    if (healthy && expected_epoch >= 0) {
      healthy = r.responses[i].epoch() == expected_epoch && r.responses[i].loaded();
    }
    if (r.statuses[i].ok()) workers_[i].status.device = r.responses[i].device();
    if (workers_[i].status.healthy != healthy && expected_epoch >= 0) {
      LLMINT8_LOG(WARNING) << "worker " << i << " (" << workers_[i].address << ") "
                           << (r.statuses[i].ok()
                                   ? "left the group"
                                   : "is unreachable: " + r.statuses[i].error_message());
    }
    workers_[i].status.healthy = healthy;
    all = all && healthy;
  }
  return all;
}

absl::Status WorkerGroup::Form() {
  int64_t epoch;
  {
    absl::MutexLock lock(&mu_);
    epoch = ++epoch_;
  }
  LLMINT8_LOG(INFO) << "forming worker group epoch " << epoch << ": " << world_size()
                    << " workers, " << options_.backend << ", model " << options_.model << " ("
                    << options_.dtype << ")";
  std::vector<v1::LoadShardRequest> requests(world_size());
  for (int i = 0; i < world_size(); ++i) {
    v1::LoadShardRequest& req = requests[i];
    req.set_epoch(epoch);
    req.set_rank(i);
    req.set_world_size(world_size());
    req.set_backend(options_.backend);
    req.set_model(options_.model);
    req.set_dtype(options_.dtype);
    req.set_threshold(options_.threshold);
    req.set_device(options_.device);
    req.set_rendezvous_address(rendezvous_address_);
    req.set_max_batch(options_.max_batch);
    req.set_max_context(options_.max_context);
  }
  auto r = FanOut<v1::LoadShardResponse>(
      world_size(), options_.load_timeout, AnyFailure,
      [&](int i, grpc::ClientContext* ctx, v1::LoadShardResponse* resp, auto done) {
        workers_[i].stub->async()->LoadShard(ctx, &requests[i], resp, std::move(done));
      });
  if (r.first_failure >= 0) {
    const int i = r.first_failure;
    return FromGrpcStatus(r.statuses[i],
                          absl::StrCat("LoadShard on worker ", i, " (", workers_[i].address, ")"));
  }
  absl::MutexLock lock(&mu_);
  for (int i = 0; i < world_size(); ++i) {
    workers_[i].status.healthy = true;
    workers_[i].status.weight_bytes = r.responses[i].weight_bytes();
    workers_[i].status.total_bytes = r.responses[i].total_bytes();
  }
  return absl::OkStatus();
}

void WorkerGroup::MonitorLoop() {
  auto sleep = [this](absl::Duration d) {
    absl::MutexLock lock(&mu_);
    mu_.AwaitWithTimeout(absl::Condition(&stop_), d);
    return !stop_;
  };
  bool waiting_logged = false;
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      if (stop_) break;
    }
    if (state() == GroupState::kReady) {
      if (!ProbeAll(epoch())) Break(absl::UnavailableError("a worker left the group"));
      if (!sleep(options_.probe_interval)) break;
      continue;
    }
    if (!ProbeAll(-1)) {
      if (!waiting_logged) {
        LLMINT8_LOG(INFO) << "waiting for " << world_size() << " workers to answer";
        waiting_logged = true;
      }
      if (!sleep(options_.probe_interval)) break;
      continue;
    }
    waiting_logged = false;
    SetState(GroupState::kForming, absl::OkStatus());
    absl::Status formed = Form();
    if (formed.ok()) {
      SetState(GroupState::kReady, absl::OkStatus());
    } else {
      Break(formed);
      if (!sleep(absl::Seconds(1))) break;
    }
  }
  SetState(GroupState::kStopped, absl::OkStatus());
}

absl::StatusOr<v1::StepResponse> WorkerGroup::Step(v1::StepRequest request) {
  const int64_t epoch = this->epoch();
  if (!ready()) return absl::UnavailableError("the worker group is not ready");
  request.set_epoch(epoch);
  auto r = FanOut<v1::StepResponse>(
      world_size(), options_.step_timeout, FatalFailure,
      [&](int i, grpc::ClientContext* ctx, v1::StepResponse* resp, auto done) {
        workers_[i].stub->async()->Step(ctx, &request, resp, std::move(done));
      });
  if (r.first_failure < 0) return std::move(r.responses[0]);
  // A bad batch that every rank rejected alike leaves the group usable.
  bool all_same_batch_error = true;
  for (const grpc::Status& s : r.statuses) {
    all_same_batch_error = all_same_batch_error && !s.ok() && IsBatchError(s.error_code()) &&
                           s.error_code() == r.statuses[0].error_code();
  }
  if (all_same_batch_error) return FromGrpcStatus(r.statuses[0], "Step");
  int failed = r.first_failure;
  for (int i = 0; i < world_size(); ++i) {  // prefer the root cause over a cancellation
    if (!r.statuses[i].ok() && r.statuses[i].error_code() != grpc::StatusCode::CANCELLED) {
      failed = i;
      break;
    }
  }
  absl::Status why = absl::UnavailableError(absl::StrCat(
      "worker ", failed, " (", workers_[failed].address, ") failed during a step: ",
      r.statuses[failed].error_message(), "; the group is re-forming, retry the request"));
  Break(why);
  return why;
}

absl::Status WorkerGroup::Release(const std::vector<uint64_t>& seq_ids) {
  if (seq_ids.empty() || !ready()) return absl::OkStatus();
  v1::ReleaseRequest request;
  request.set_epoch(epoch());
  for (uint64_t id : seq_ids) request.add_seq_ids(id);
  auto r = FanOut<v1::ReleaseResponse>(
      world_size(), options_.step_timeout, AnyFailure,
      [&](int i, grpc::ClientContext* ctx, v1::ReleaseResponse* resp, auto done) {
        workers_[i].stub->async()->Release(ctx, &request, resp, std::move(done));
      });
  if (r.first_failure < 0) return absl::OkStatus();
  const int i = r.first_failure;
  absl::Status why = absl::UnavailableError(absl::StrCat(
      "Release on worker ", i, " (", workers_[i].address, "): ", r.statuses[i].error_message()));
  Break(why);
  return why;
}

}  // namespace llmint8::coordinator
