#include "worker/worker_service.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <new>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "comm/make_communicator.h"
#include "common/device_lost.h"
#include "common/grpc_status.h"
#include "common/log.h"
#include "common/sampling_limits.h"
#include "common/status_macros.h"
#include "model/checkpoint_fingerprint.h"
#include "model/generation_config.h"
#include "model/model_spec.h"
#include "model/shard_plan.h"
#include "model/tensor_names.h"
#include "worker/group_epoch.h"
#include "worker/grpc_rendezvous.h"
#include "worker/sequence_samplers.h"
#include "worker/usable_memory.h"

namespace llmint8::worker {
namespace {

// Step errors that leave the group usable (deterministic input validation, identical on
// every rank); anything else means the communicator group is broken.
bool IsInputError(const absl::Status& s) {
  return s.code() == absl::StatusCode::kInvalidArgument ||
         s.code() == absl::StatusCode::kOutOfRange ||
         s.code() == absl::StatusCode::kResourceExhausted;
}

// The lists of a sequence's sampling parameters (logit_bias, min_tokens_banned) are kept
// while it lives and scanned at each of its samples: they are bounded as the coordinator
// bounds what it sends (the OpenAI API's 300 biases; the end-of-sequence ids, config.json's
// and generation_config.json's 64 at most, and the stop ids), or one
// Step could make rank 0 hold memory --memory_limit does not count (60 M banned ids fit the
// message limit: ~0.5 GB a sequence). Checked on every rank. (An id outside the vocabulary
// fails its sequence alone, when rank 0 samples it.)
absl::Status CheckSamplingLists(const v1::SeqStep& seq) {
  if (!seq.has_sampling()) return absl::OkStatus();
  const v1::SamplingParams& p = seq.sampling();
  constexpr int kMaxBanned = 1 + model::kMaxEosTokenIds + kMaxStopTokenIds;
  if (p.logit_bias_size() > kMaxLogitBiasTokens || p.min_tokens_banned_size() > kMaxBanned) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Step: sequence ", seq.seq_id(), " has ", p.logit_bias_size(), " logit biases and ",
        p.min_tokens_banned_size(), " ids banned before min_tokens; at most ", kMaxLogitBiasTokens,
        " and ", kMaxBanned));
  }
  return absl::OkStatus();
}

// A step's draft tokens for a sequence (SeqStep.draft_token_ids) come after a token, only
// where rank 0 samples each position alike: no prompt chunk, score or mask, at most
// kMaxSpeculativeTokens. Checked on every rank before the step, so all refuse alike.
absl::Status CheckDrafts(const v1::SeqStep& seq) {
  const int n = seq.draft_token_ids_size();
  if (n == 0) return absl::OkStatus();
  auto refuse = [&](const std::string& why) {
    return absl::InvalidArgumentError(
        absl::StrCat("Step: sequence ", seq.seq_id(), " carries ", n, " draft tokens ", why));
  };
  if (n > kMaxSpeculativeTokens) {
    return refuse(absl::StrCat("(at most ", kMaxSpeculativeTokens, ")"));
  }
  if (seq.token_ids_size() == 0) return refuse("without a token before them");
  if (seq.prefill_only() || seq.prompt_logprobs() || seq.has_mask()) {
    return refuse("on a step that samples no token, scores a prompt or masks");
  }
  return absl::OkStatus();
}

// Bounds of LoadShard's numbers: far above any real group, low enough that nothing computed
// from them overflows or holds a worker for good.
constexpr int32_t kMaxWorldSize = 4096;
constexpr int64_t kMaxLeaseMs = 3'600'000;           // an hour (coordinators renew every 250 ms)
constexpr int64_t kMaxStepBound = int64_t{1} << 24;  // max_batch, max_step_tokens, max_step_rows

// LoadShard's own fields, checked before anything changes (and before the request counts as
// its coordinator's newest, no file read): a refused request leaves the group the worker serves
// as it is. InvalidArgument names the field.
absl::Status ValidateLoadShard(const v1::LoadShardRequest& req, const std::string& worker_device) {
  if (req.epoch() <= 0) return absl::InvalidArgumentError("LoadShard.epoch must be > 0");
  if (req.world_size() < 1 || req.world_size() > kMaxWorldSize || req.rank() < 0 ||
      req.rank() >= req.world_size()) {
    return absl::InvalidArgumentError(absl::StrCat("LoadShard: rank ", req.rank(),
                                                   " must be in [0, world_size=", req.world_size(),
                                                   ") and world_size in [1, ", kMaxWorldSize, "]"));
  }
  if (req.lease_ms() < 0 || req.lease_ms() > kMaxLeaseMs) {
    return absl::InvalidArgumentError(absl::StrCat("LoadShard.lease_ms is ", req.lease_ms(),
                                                   "; it must be in [0, ", kMaxLeaseMs, "]"));
  }
  const std::pair<const char*, int64_t> bounded[] = {{"max_batch", req.max_batch()},
                                                     {"max_context", req.max_context()},
                                                     {"max_step_tokens", req.max_step_tokens()},
                                                     {"max_step_rows", req.max_step_rows()},
                                                     {"memory_sharers", req.memory_sharers()}};
  for (const auto& [field, value] : bounded) {
    if (value < 0 || value > kMaxStepBound) {
      return absl::InvalidArgumentError(absl::StrCat("LoadShard.", field, " is ", value,
                                                     "; it must be in [0, ", kMaxStepBound, "]"));
    }
  }
  if (!std::isfinite(req.threshold()) || req.threshold() < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("LoadShard.threshold is ", req.threshold(), "; it must be finite and >= 0"));
  }
  RETURN_IF_ERROR(model::ParsePrecision(req.dtype()).status());
  const std::string device = req.device().empty() ? "cpu" : req.device();
  RETURN_IF_ERROR(model::ParseDevice(device).status());
  if (device != worker_device) {
    return absl::InvalidArgumentError(absl::StrCat(
        "LoadShard.device is ", device, ", but this worker runs on ", worker_device,
        " (its --device): start the coordinator and its workers with the same --device"));
  }
  const std::string& backend = req.backend();
  if (!backend.empty() && backend != "gloo" && backend != "nccl" && backend != "local") {
    return absl::InvalidArgumentError(
        absl::StrCat("LoadShard.backend '", backend, "' is not one of gloo, nccl and local"));
  }
  if (backend == "nccl" && device != "cuda") {
    return absl::InvalidArgumentError(
        "LoadShard.backend nccl needs device cuda (NCCL sums GPU memory); CPU workers use gloo");
  }
  if (backend == "local" && req.world_size() > 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("LoadShard.backend local is a group of one; world_size ", req.world_size(),
                     " needs gloo or nccl"));
  }
  return absl::OkStatus();
}

// The model splits into world_size ranks (else the group would form and fail later, or wait
// for ranks that cannot exist). Reads the model's config.json.
absl::Status CheckModelSplits(const v1::LoadShardRequest& req) {
  ASSIGN_OR_RETURN(const model::OptConfig config, model::LoadModelSpecConfig(req.model()));
  return model::MakeShardPlan(config, req.world_size(), req.rank()).status();
}

// The lease's clock: monotonic, so that a step of the wall clock neither ends nor stretches a
// lease.
absl::Time LeaseNow() {
  return absl::UnixEpoch() + absl::FromChrono(std::chrono::steady_clock::now().time_since_epoch());
}

}  // namespace

WorkerService::WorkerService(WorkerOptions options)
    : options_(std::move(options)),
      memory_pool_(MemoryPool(options_.device, options_.cuda_device, options_.memory_limit_bytes)),
      process_id_(absl::Uniform<uint64_t>(absl::IntervalClosed, absl::BitGen(), 1,
                                          std::numeric_limits<uint64_t>::max())) {
  if (options_.abandoned_after != absl::InfiniteDuration()) {
    watcher_ = std::thread([this] { WatchForAbandonment(); });
  }
}

WorkerService::~WorkerService() {
  {
    absl::MutexLock lock(&watch_mu_);
    watch_stop_ = true;
  }
  if (watcher_.joinable()) watcher_.join();
  absl::MutexLock lock(&mu_);
  Unload();
}

void WorkerService::WatchForAbandonment() {
  const absl::Duration period =
      std::clamp(options_.abandoned_after / 4, absl::Milliseconds(10), absl::Seconds(1));
  for (;;) {
    {
      absl::MutexLock lock(&watch_mu_);
      if (watch_mu_.AwaitWithTimeout(absl::Condition(&watch_stop_), period)) return;
    }
    if (!lease_.SilentPast(options_.abandoned_after, LeaseNow())) continue;
    absl::MutexLock lock(&mu_);  // after a Step in progress (which renewed nothing)
    if (model_ == nullptr || !lease_.SilentPast(options_.abandoned_after, LeaseNow())) continue;
    const model::MemoryStats held = model_->memory();
    LLMINT8_LOG(WARNING) << "group epoch " << epoch_ << ": its coordinator has been silent for "
                         << "its lease and " << options_.abandoned_after
                         << " more; dropping the shard (" << held.total() << " bytes, "
                         << model_->num_sequences() << " sequence(s)) to free its memory";
    Unload();
  }
}

void WorkerService::Unload() {
  {
    absl::MutexLock lock(&device_mu_);
    loaded_device_ = LoadedDevice();
  }
  model_.reset();  // the model refers to the communicator: drop it first
  comm_.reset();
  samplers_.Clear();
  epoch_ = 0;
  broken_ = absl::OkStatus();
  lease_.Clear();
  Publish();
}

void WorkerService::Publish() {
  published_epoch_ = epoch_;
  published_loaded_ = model_ != nullptr && broken_.ok();
  published_rank_ = rank_;
  published_world_size_ = world_size_;
  PublishUsage();
}

void WorkerService::PublishUsage() {
  // What the shard holds grows with its KV cache and scratch: Info's held_bytes (and the free
  // memory it adds to) must say so, or a re-forming coordinator plans with stale numbers.
  const model::MemoryStats mem = model_ != nullptr ? model_->memory() : model::MemoryStats();
  published_held_bytes_ = mem.total();
  published_weight_bytes_ = mem.weights();
  published_kv_cache_bytes_ = mem.kv_cache;
  const int64_t sequences = model_ != nullptr ? model_->num_sequences() : 0;
  if (sequences == 0 && published_sequences_ > 0) {
    empty_since_ns_ = absl::ToUnixNanos(LeaseNow());
  }
  published_sequences_ = sequences;
  published_steps_ = steps_;
  published_tokens_ = tokens_;
}

grpc::Status WorkerService::Info(grpc::ServerContext*, const v1::WorkerInfoRequest* req,
                                 v1::WorkerInfoResponse* resp) {
  const absl::Time now = LeaseNow();
  lease_.Renew(req->epoch(), now);
  resp->set_held_by_another(lease_.HeldByAnother(req->epoch(), now));
  resp->set_draining(draining_);
  // The holder's probes learn of the drain (Drained() counts them).
  if (draining_ && req->epoch() != 0 && req->epoch() == published_epoch_) {
    if (drain_seen_epoch_.exchange(req->epoch()) != req->epoch()) {
      drain_probes_ = 1;
    } else {
      ++drain_probes_;
    }
  }
  resp->set_device(options_.device);
  resp->set_process_id(process_id_);
  LoadedDevice loaded;
  {
    absl::MutexLock lock(&device_mu_);
    loaded = loaded_device_;
  }
  const bool rank_device = options_.cuda_device < 0 && loaded.cuda_device >= 0;
  resp->set_memory_bytes(UsableMemoryBytes(options_.device,
                                           rank_device ? loaded.cuda_device : options_.cuda_device,
                                           options_.memory_limit_bytes, published_held_bytes_));
  resp->set_memory_pool(rank_device ? loaded.memory_pool : memory_pool_);
  resp->set_held_bytes(published_held_bytes_);
  resp->set_epoch(published_epoch_);
  resp->set_rank(published_rank_);
  resp->set_world_size(published_world_size_);
  resp->set_loaded(published_loaded_);
  return grpc::Status::OK;
}

void WorkerService::NoteLoadRequested(int64_t epoch) {
  absl::MutexLock lock(&requested_mu_);
  const auto same = [epoch](int64_t e) {
    return CoordinatorInstance(e) == CoordinatorInstance(epoch);
  };
  const auto it = std::find_if(newest_requested_.begin(), newest_requested_.end(), same);
  if (it != newest_requested_.end()) {
    epoch = std::max(epoch, *it);
    newest_requested_.erase(it);
  } else if (newest_requested_.size() == kRememberedCoordinators) {
    newest_requested_.erase(newest_requested_.begin());
  }
  newest_requested_.push_back(epoch);
}

bool WorkerService::LoadSuperseded(int64_t epoch) const {
  absl::MutexLock lock(&requested_mu_);
  return std::any_of(newest_requested_.begin(), newest_requested_.end(), [epoch](int64_t e) {
    return CoordinatorInstance(e) == CoordinatorInstance(epoch) && epoch < e;
  });
}

grpc::Status WorkerService::LoadShard(grpc::ServerContext* ctx, const v1::LoadShardRequest* req,
                                      v1::LoadShardResponse* resp) {
  ++calls_in_flight_;  // as in Step
  absl::Cleanup done = [this] { --calls_in_flight_; };
  // A request refused for its fields asks for no group: it supersedes no load.
  if (absl::Status bad = ValidateLoadShard(*req, options_.device); !bad.ok()) {
    LLMINT8_LOG(WARNING) << "LoadShard (epoch " << req->epoch() << ") refused: " << bad;
    return ToGrpcStatus(bad);
  }
  NoteLoadRequested(req->epoch());
  absl::MutexLock lock(&mu_);
  if (absl::Status lost = DeviceLost(); !lost.ok()) {
    return ToGrpcStatus(absl::UnavailableError(absl::StrCat(
        "this worker's GPU context is lost (", lost.message(), "); it joins no group")));
  }
  if (draining_) {
    return ToGrpcStatus(absl::UnavailableError(
        "this worker is shutting down (draining its running sequences); it joins no group"));
  }
  // Loads wait for mu_ behind a long one (a rendezvous that waits for a rank that never comes):
  // one given up meanwhile would form a group that nobody else joins, and hold the next.
  if (ctx != nullptr && ctx->IsCancelled()) {
    return ToGrpcStatus(absl::CancelledError(absl::StrCat(
        "LoadShard (epoch ", req->epoch(), "): the coordinator gave up on it before it began")));
  }
  if (LoadSuperseded(req->epoch())) {
    return ToGrpcStatus(absl::AbortedError(absl::StrCat(
        "LoadShard (epoch ", req->epoch(), "): the coordinator has asked for a newer group")));
  }
  // Checked under mu_: a load in progress (its coordinator's) finishes before this one is
  // judged. A refusal leaves that group as it is.
  if (absl::Status held = lease_.CheckTake(req->epoch(), LeaseNow()); !held.ok()) {
    LLMINT8_LOG(WARNING) << "LoadShard (epoch " << req->epoch() << ") refused: " << held;
    return ToGrpcStatus(held);
  }
  if (absl::Status bad = CheckModelSplits(*req); !bad.ok()) {
    LLMINT8_LOG(WARNING) << "LoadShard (epoch " << req->epoch() << ") refused: " << bad;
    return ToGrpcStatus(bad);
  }
  absl::Status status;
  try {
    status = DoLoadShard(ctx, *req, *resp);
  } catch (const std::bad_alloc&) {
    status = absl::ResourceExhaustedError(
        absl::StrCat("LoadShard: out of memory loading ", req->model(), " as ", req->dtype(),
                     "; give the worker more memory, serve int8, or form a larger group"));
  }
  if (!status.ok()) {
    LLMINT8_LOG(ERROR) << "LoadShard (epoch " << req->epoch() << ", rank " << req->rank() << "/"
                       << req->world_size() << ") failed: " << status;
    NoteIfDeviceLost(status);
    Unload();
  }
  return ToGrpcStatus(status);
}

absl::Status WorkerService::DoLoadShard(grpc::ServerContext* ctx, const v1::LoadShardRequest& req,
                                        v1::LoadShardResponse& resp) {
  // The request passed ValidateLoadShard.
  ASSIGN_OR_RETURN(model::Precision precision, model::ParsePrecision(req.dtype()));
  ASSIGN_OR_RETURN(model::Device device,
                   model::ParseDevice(req.device().empty() ? "cpu" : req.device()));
  // Without --cuda_device: the rank's device among those this process sees (one process per
  // GPU sees one: device 0 for any rank, as Info reported before the load).
  int cuda_device = options_.cuda_device >= 0 ? options_.cuda_device : req.rank();
  if (options_.cuda_device < 0 && device == model::Device::kCuda) {
    if (const absl::StatusOr<int> gpus = model::CudaDeviceCount(); gpus.ok() && *gpus > 0) {
      cuda_device = req.rank() % *gpus;
    }
  }
  Unload();
  // Info shows the epoch being loaded (not yet `loaded`; steps still need the load to finish):
  // a coordinator whose probe finds another coordinator's epoch here knows it was taken over,
  // which it could not tell from the 0 a long load would otherwise show.
  published_epoch_ = req.epoch();
  const absl::Time start = absl::Now();
  lease_.Grant(req.epoch(), absl::Milliseconds(std::max<int64_t>(req.lease_ms(), 0)), LeaseNow());
  const std::string who = absl::StrCat("shard ", req.rank() + 1, "/", req.world_size());

  ASSIGN_OR_RETURN(model::OpenedModel opened, model::OpenModelSpec(req.model()));
  // What the coordinator compares across the group: the same checkpoint on every worker.
  ASSIGN_OR_RETURN(const std::string fingerprint,
                   model::CheckpointFingerprint(opened.config, *opened.source, [ctx] {
                     return ctx != nullptr && ctx->IsCancelled();
                   }));
  LLMINT8_LOG(INFO) << who << ": " << opened.source->Describe() << ", fingerprint " << fingerprint;
  if (precision != model::Precision::kInt8 && model::IsPreQuantized(opened)) {
    LLMINT8_LOG(WARNING) << who << ": " << model::PreQuantizedAsWarning(req.model(), req.dtype());
  }

  std::string rendezvous_address = options_.coordinator_address.empty()
                                       ? req.rendezvous_address()
                                       : options_.coordinator_address;
  if (req.world_size() > 1 && rendezvous_address.empty()) {
    return absl::InvalidArgumentError(
        "LoadShard: world_size > 1 needs a rendezvous_address (or worker --coordinator)");
  }
  std::string backend = req.backend().empty() ? "gloo" : req.backend();
  if (req.world_size() == 1 && backend == "gloo") backend = "local";
  LLMINT8_LOG(INFO) << who << ": joining group epoch " << req.epoch() << " over " << backend
                    << (req.world_size() > 1 ? " via rendezvous at " + rendezvous_address
                                             : std::string());
  std::optional<GrpcRendezvous> rendezvous;  // one rank needs none
  if (req.world_size() > 1) {
    // Given up (the call cancelled, a newer group asked for): the group's waits end.
    rendezvous.emplace(rendezvous_address, options_.coordinator_credentials,
                       [this, ctx, epoch = req.epoch()] {
                         return (ctx != nullptr && ctx->IsCancelled()) || LoadSuperseded(epoch);
                       });
  }
  comm::CommOptions comm_options;
  comm_options.rank = req.rank();
  comm_options.world_size = req.world_size();
  comm_options.rendezvous = rendezvous.has_value() ? &*rendezvous : nullptr;
  comm_options.key_prefix = absl::StrCat(RendezvousKeyPrefix(req.epoch()), backend, "/");
  comm_options.timeout = absl::Milliseconds(options_.comm_timeout_ms);
  comm_options.gloo_hostname = options_.gloo_hostname;
  comm_options.gloo_interface = options_.gloo_interface;
  // TODO(service): take an owned stream from a host-safe helper once kernels/ or comm/ has one.
  void* const cuda_stream = model::TensorParallelCudaStream(device, req.world_size());
  comm_options.cuda_device = cuda_device;
  comm_options.cuda_stream = cuda_stream;
  ASSIGN_OR_RETURN(comm_, comm::MakeCommunicator(backend, comm_options));
  LLMINT8_LOG(INFO) << who << ": group formed (" << backend << ", " << req.world_size()
                    << " ranks)";

  model::ShardOptions shard_options;
  shard_options.device = device;
  shard_options.cuda_device = cuda_device;
  shard_options.cuda_stream = cuda_stream;
  shard_options.precision = precision;
  shard_options.threshold = req.threshold();
  shard_options.memory_limit_bytes = options_.memory_limit_bytes;
  shard_options.max_context = req.max_context();
  auto progress = [&](int64_t done, int64_t total) {
    LLMINT8_LOG(INFO) << "loading " << who << ": layer " << done << "/" << total << " ["
                      << std::string(20 * done / std::max<int64_t>(total, 1), '#')
                      << std::string(20 - 20 * done / std::max<int64_t>(total, 1), '.') << "]";
    // A coordinator that gave up on this group (a member lost, or it stops) cancelled the call:
    // the rest of the load would be thrown away, and would hold up the next LoadShard.
    if (ctx != nullptr && ctx->IsCancelled()) {
      return absl::CancelledError(
          absl::StrCat(who, ": the coordinator cancelled the load at layer ", done, "/", total));
    }
    return absl::OkStatus();
  };
  absl::StatusOr<std::unique_ptr<model::ShardModel>> loaded =
      model::ShardModel::Load(opened.config, *opened.source, req.world_size(), req.rank(),
                              comm_.get(), shard_options, progress);
  if (loaded.status().code() == absl::StatusCode::kResourceExhausted) {
    return absl::ResourceExhaustedError(absl::StrCat(
        who, " does not fit ",
        options_.memory_limit_bytes > 0
            ? absl::StrCat("this worker's --memory-limit=", options_.memory_limit_bytes, " bytes")
            : std::string("the memory this worker has"),
        ": ", loaded.status().message()));
  }
  if (!loaded.ok()) return loaded.status();
  model_ = *std::move(loaded);
  epoch_ = req.epoch();
  rank_ = req.rank();
  world_size_ = req.world_size();
  steps_ = 0;
  tokens_ = 0;
  // The bounds the room below is kept for, also when unset (worker.proto's defaults): a step
  // past them is refused before it allocates. (Rows are at most tokens: with no max_batch
  // either, the token bound holds them.)
  max_step_tokens_ =
      req.max_step_tokens() > 0 ? req.max_step_tokens() : model_->max_context() + req.max_batch();
  max_step_rows_ = std::max<int64_t>(req.max_batch(), req.max_step_rows());
  lease_.Renew(epoch_, LeaseNow());  // a long load counts as contact
  if (device == model::Device::kCuda && options_.cuda_device < 0) {
    LoadedDevice now{
        .cuda_device = cuda_device,
        .memory_pool = MemoryPool(options_.device, cuda_device, options_.memory_limit_bytes)};
    absl::MutexLock lock(&device_mu_);
    loaded_device_ = std::move(now);
  }
  Publish();
  const model::MemoryStats mem = model_->memory();
  resp.set_weight_bytes(mem.weights());
  resp.set_total_bytes(mem.total());
  resp.set_load_seconds(absl::ToDoubleSeconds(absl::Now() - start));
  resp.set_token_masks(true);
  resp.set_model_fingerprint(fingerprint);
  int64_t usable = UsableMemoryBytes(std::string(model::DeviceName(device)), cuda_device,
                                     options_.memory_limit_bytes, mem.total());
  if (usable > 0) {
    if (options_.memory_limit_bytes <= 0) {
      // Free memory may be shared: by the group's ranks on this host or GPU (the coordinator
      // counts them from their memory_pool; a neighbour may still be loading), and libraries
      // allocate more later. Claim this rank's part of 90% of it, and what it holds.
      const int sharers = req.memory_sharers() > 0 ? req.memory_sharers() : req.world_size();
      usable = SharedUsableBytes(usable, mem.total(), sharers);
    }
    resp.set_kv_capacity_tokens(
        model_->KvCapacityTokens(usable, max_step_tokens_, max_step_rows_, req.max_batch()));
  }
  LLMINT8_LOG(INFO) << who << ": loaded " << opened.source->Describe() << " as " << req.dtype()
                    << " in " << resp.load_seconds() << " s; " << mem.DebugString() << "; room for "
                    << (resp.has_kv_capacity_tokens() ? absl::StrCat(resp.kv_capacity_tokens())
                                                      : std::string("unknown"))
                    << " KV positions";
  return absl::OkStatus();
}

absl::Status WorkerService::CheckEpoch(int64_t epoch) const {
  if (model_ == nullptr) {
    return absl::FailedPreconditionError("worker has no shard loaded; call LoadShard first");
  }
  if (epoch != epoch_) {
    return absl::FailedPreconditionError(
        absl::StrCat("request for group epoch ", epoch, " but this worker is in epoch ", epoch_));
  }
  if (!broken_.ok()) {
    return absl::UnavailableError(
        absl::StrCat("the worker group is broken (", broken_.message(), "); re-form it"));
  }
  return absl::OkStatus();
}

grpc::Status WorkerService::Step(grpc::ServerContext*, const v1::StepRequest* req,
                                 v1::StepResponse* resp) {
  ++calls_in_flight_;  // before the lock: Drained() must not miss a call waiting for it
  absl::Cleanup done = [this] { --calls_in_flight_; };
  absl::MutexLock lock(&mu_);
  absl::Status status;
  step_forwarded_ = false;
  try {
    status = DoStep(*req, *resp);
  } catch (const std::bad_alloc&) {
    resp->Clear();
    if (step_forwarded_) {
      // The sequences' caches hold this step's tokens already: resending it (what a refused
      // step gets) would add them twice. The group re-forms instead.
      status =
          BreakGroup(absl::ResourceExhaustedError("out of memory after the forward pass of a step"),
                     req->step_id());
    } else if (world_size_ > 1) {
      // Out of memory on this rank alone, before the model's vote on room: the others wait
      // in that vote (or the forward's collectives) for it. The group re-forms (BreakGroup
      // aborts the communicator, so they fail at once) instead of hanging to the timeout.
      status =
          BreakGroup(absl::ResourceExhaustedError("out of memory on one rank before a step's vote"),
                     req->step_id());
    } else {
      status = absl::ResourceExhaustedError(
          "Step: out of memory for this batch; send a smaller one (worker --memory_limit "
          "refuses such steps before they allocate)");
    }
  }
  if (!status.ok() && status.code() == absl::StatusCode::kResourceExhausted) {
    LLMINT8_LOG(WARNING) << "step " << req->step_id() << " refused: " << status;
  }
  PublishUsage();
  return ToGrpcStatus(status);
}

absl::Status WorkerService::DeviceLost() const {
  if (!device_lost_) return absl::OkStatus();
  absl::MutexLock lock(&lost_mu_);
  return device_lost_status_;
}

void WorkerService::NoteIfDeviceLost(const absl::Status& status) {
  if (!IsDeviceLost(status)) return;
  absl::MutexLock lock(&lost_mu_);
  if (device_lost_) return;
  device_lost_status_ = status;
  device_lost_ = true;
  LLMINT8_LOG(ERROR) << "the GPU context of this worker is lost: " << status
                     << "; it serves no more (its process stops, for a fresh one to start)";
}

absl::Status WorkerService::BreakGroup(absl::Status why, uint64_t step_id) {
  NoteIfDeviceLost(why);
  broken_ = std::move(why);
  // Peers may be blocked in this step's collectives waiting for this rank: they learn now
  // instead of at their timeout (a no-op when the communicator broke first).
  if (comm_ != nullptr) comm_->Abort(broken_);
  Publish();
  LLMINT8_LOG(ERROR) << "step " << step_id << " failed, group broken: " << broken_;
  return absl::UnavailableError(
      absl::StrCat("rank ", rank_, " lost its group: ", broken_.message()));
}

absl::Status WorkerService::DoStep(const v1::StepRequest& req, v1::StepResponse& resp) {
  RETURN_IF_ERROR(CheckEpoch(req.epoch()));
  lease_.Renew(epoch_, LeaseNow());
  if (req.seqs_size() == 0) return absl::InvalidArgumentError("Step has no sequences");
  std::vector<model::ShardModel::SequenceInput> batch;
  batch.reserve(req.seqs_size());
  // The input of the sequences with draft tokens: token_ids and then the drafts.
  std::vector<std::vector<int32_t>> drafted;
  drafted.reserve(req.seqs_size());
  int64_t new_tokens = 0;
  int64_t rows = 0;  // logits rows: every position of a prompt to score, else the last
  const int64_t vocab = model_->config().vocab_size;
  for (const v1::SeqStep& seq : req.seqs()) {
    // Scores are rank 0's after the collectives and never fail the step: their fields are
    // checked here, before it, on every rank alike (else they scored NaN).
    if (seq.prompt_logprobs() && (seq.top_logprobs() < 0 || seq.top_logprobs() > kMaxTopLogprobs)) {
      return absl::InvalidArgumentError(absl::StrCat("Step: sequence ", seq.seq_id(),
                                                     "'s top_logprobs is ", seq.top_logprobs(),
                                                     "; it must be in [0, ", kMaxTopLogprobs, "]"));
    }
    if (seq.has_next_prompt_token() &&
        (seq.next_prompt_token() < 0 || seq.next_prompt_token() >= vocab)) {
      return absl::InvalidArgumentError(
          absl::StrCat("Step: sequence ", seq.seq_id(), "'s next_prompt_token ",
                       seq.next_prompt_token(), " is not in [0, ", vocab, ")"));
    }
    RETURN_IF_ERROR(CheckDrafts(seq));
    RETURN_IF_ERROR(CheckSamplingLists(seq));
    // A prompt to score needs the logits of every position it brings (the same on every
    // rank: each gets the same request), and draft tokens those of the position before each
    // and of their last; the others only their last.
    std::span<const int32_t> tokens(seq.token_ids().data(), seq.token_ids().size());
    if (seq.draft_token_ids_size() > 0) {
      std::vector<int32_t>& joined = drafted.emplace_back(tokens.begin(), tokens.end());
      joined.insert(joined.end(), seq.draft_token_ids().begin(), seq.draft_token_ids().end());
      tokens = joined;
    }
    const bool all_positions = seq.prompt_logprobs() || seq.draft_token_ids_size() > 0;
    batch.push_back({seq.seq_id(), tokens, all_positions, seq.prefix_from(), seq.prefix_length(),
                     seq.drop_positions()});
    new_tokens += std::ssize(tokens);
    rows += all_positions ? std::ssize(tokens) : 1;
  }
  if (new_tokens > max_step_tokens_) {
    return absl::InvalidArgumentError(
        absl::StrCat("Step carries ", new_tokens, " tokens; this group was loaded for at most ",
                     max_step_tokens_, " a step (LoadShard.max_step_tokens)"));
  }
  if (max_step_rows_ > 0 && rows > max_step_rows_) {
    return absl::InvalidArgumentError(
        absl::StrCat("Step needs ", rows, " logits rows; this group was loaded for at most ",
                     max_step_rows_, " a step (LoadShard.max_batch and max_step_rows)"));
  }
  const absl::Time start = absl::Now();
  absl::StatusOr<model::Logits> logits = model_->Step(batch);
  if (!logits.ok()) {
    if (IsInputError(logits.status())) return logits.status();
    return BreakGroup(logits.status(), req.step_id());
  }
  step_forwarded_ = true;
  ++steps_;
  tokens_ += new_tokens;
  if (rank_ == 0) {
    for (int i = 0; i < req.seqs_size(); ++i) {
      const v1::SeqStep& seq = req.seqs(i);
      samplers_.Observe(seq);
      v1::SeqResult* result = resp.add_results();
      result->set_seq_id(seq.seq_id());
      // Row j of the sequence predicts the token after its j-th new token.
      const int64_t first_row = logits->row_begin[i];
      const int64_t last_row = logits->row_begin[i + 1] - 1;
      if (seq.prompt_logprobs()) {
        // Scores never fail the step: rank 0 alone computes them, after the collectives.
        for (int j = 1; j < seq.token_ids_size(); ++j) {
          *result->add_prompt() =
              ScoreToken(logits->row(first_row + j - 1), seq.token_ids(j), seq.top_logprobs());
        }
        if (seq.has_next_prompt_token()) {
          *result->add_prompt() =
              ScoreToken(logits->row(last_row), seq.next_prompt_token(), seq.top_logprobs());
        }
      }
      if (seq.prefill_only()) {
        result->set_token_id(-1);
        continue;
      }
      // The sample at token_ids' last position, and after each draft it equals at the next.
      const int64_t sample_row = last_row - seq.draft_token_ids_size();
      absl::StatusOr<SequenceSamplers::Verified> token =
          samplers_.SampleDrafts(seq, [&](int j) { return logits->row(sample_row + j); });
      if (!token.ok()) {
        // This sequence's alone: the others of the step keep their tokens.
        result->set_token_id(-1);
        result->set_sample_error(std::string(token.status().message()));
        continue;
      }
      const SampledToken& sampled = token->token;
      result->set_drafts_accepted(token->accepted);
      if (seq.logprobs() || seq.top_logprobs() > 0) {
        for (const SampledToken& draft : token->drafts) {
          v1::DraftScore* score = result->add_drafts();
          if (seq.logprobs()) score->set_logprob(draft.logprob);
          score->mutable_top()->Add(draft.top.begin(), draft.top.end());
        }
      }
      result->set_token_id(sampled.token_id);
      if (seq.logprobs()) result->set_logprob(sampled.logprob);
      result->mutable_top()->Add(sampled.top.begin(), sampled.top.end());
    }
  }
  resp.set_forward_ms(absl::ToDoubleMilliseconds(absl::Now() - start));
  return absl::OkStatus();
}

grpc::Status WorkerService::Release(grpc::ServerContext*, const v1::ReleaseRequest* req,
                                    v1::ReleaseResponse*) {
  // Before the model lock: a long step or a stuck collective must not hold up the let-go.
  if (req->end_lease() && lease_.End(req->epoch())) {
    LLMINT8_LOG(INFO) << "the coordinator of group epoch " << req->epoch()
                      << " let this worker go; another may take it";
  }
  absl::MutexLock lock(&mu_);
  if (model_ == nullptr || req->epoch() != epoch_) {
    return grpc::Status::OK;  // nothing of that group is held here
  }
  if (req->end_lease()) {
    // Nothing will run on the group any more: its memory goes back (a GPU shared with the
    // coordinator's newer group needs it), and the next LoadShard has nothing to unload.
    LLMINT8_LOG(INFO) << "dropping the shard of group epoch " << req->epoch();
    Unload();
    return grpc::Status::OK;
  }
  lease_.Renew(epoch_, LeaseNow());
  absl::Status status;
  for (uint64_t id : req->seq_ids()) {
    samplers_.Release(id);
    absl::Status s = model_->Release(id);
    if (!s.ok() && s.code() != absl::StatusCode::kNotFound) {
      status = s;
      break;
    }
  }
  PublishUsage();
  return ToGrpcStatus(status);
}

void WorkerService::Drain() { draining_ = true; }

bool WorkerService::Drained() const {
  if (lease_.Gone(LeaseNow())) return true;  // nobody will step or release what it holds
  if (calls_in_flight_ > 0) return false;    // a group loading is one about to be stepped
  if (!published_loaded_) return true;       // no group, or a broken one
  return drain_seen_epoch_ == published_epoch_ && drain_probes_ >= 2 && published_sequences_ == 0 &&
         (empty_since_ns_ == 0 ||
          LeaseNow() - absl::FromUnixNanos(empty_since_ns_) >= options_.drain_quiet);
}

grpc::Status WorkerService::Stats(grpc::ServerContext*, const v1::StatsRequest*,
                                  v1::StatsResponse* resp) {
  // As of the last load, step or release (PublishUsage); never waits for the model lock.
  if (published_held_bytes_ > 0) {
    resp->set_weight_bytes(published_weight_bytes_);
    resp->set_kv_cache_bytes(published_kv_cache_bytes_);
    resp->set_total_bytes(published_held_bytes_);
    resp->set_active_sequences(static_cast<int32_t>(published_sequences_));
  }
  resp->set_steps(published_steps_);
  resp->set_tokens(published_tokens_);
  return grpc::Status::OK;
}

}  // namespace llmint8::worker
