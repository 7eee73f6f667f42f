// worker, coordinator and serve: the long-running subcommands.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "comm/shared_gpu_env.h"
#include "common/byte_size.h"
#include "common/health.h"
#include "common/host_port.h"
#include "common/log.h"
#include "common/sampling_limits.h"
#include "common/status_macros.h"
#include "coordinator/api_key.h"
#include "coordinator/coordinator_server.h"
#include "coordinator/guide_cache.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/impl/server_builder_option.h"
#include "model/model_spec.h"
#include "model/shard_model.h"
#include "tools/bundled_model.h"
#include "tools/client_auth.h"
#include "tools/flags.h"
#include "tools/gpu_placement.h"
#include "tools/link_identity.h"
#include "tools/subcommands.h"
#include "tools/worker_supervisor.h"
#include "worker/worker_service.h"

namespace llmint8::tools {
namespace {

// Blocks SIGINT/SIGTERM/SIGHUP in this thread and every thread it starts later, so that
// WaitSignal receives them synchronously: a closed terminal (SIGHUP) stops the servers as
// SIGTERM does (serve's link certificate directory goes too), not at once.
sigset_t BlockShutdownSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  return set;
}

int WaitSignal(const sigset_t& set) {
  int sig = 0;
  sigwait(&set, &sig);
  return sig;
}

// A signal of `set` if one comes within `timeout`, else 0.
int WaitSignalFor(const sigset_t& set, absl::Duration timeout) {
  const timespec ts = absl::ToTimespec(timeout);
  const int sig = sigtimedwait(&set, nullptr, &ts);
  return sig > 0 ? sig : 0;
}

// Shuts `server` down after the first signal: drains, unless a second signal comes first,
// which ends the drain at once (the requests left fail UNAVAILABLE), as a worker's does.
// Whether the second signal came.
bool ShutdownUnlessSignalledAgain(coordinator::CoordinatorServer& server, const sigset_t& signals) {
  bool again_signalled = false;
  std::atomic<bool> done{false};
  std::thread shutdown([&] {
    server.Shutdown();
    done = true;
  });
  while (!done) {
    if (const int again = WaitSignalFor(signals, absl::Milliseconds(100)); again != 0) {
      LLMINT8_LOG(WARNING) << strsignal(again) << " again: stopping now, without the drain";
      server.EndDrain();
      again_signalled = true;
      break;
    }
  }
  shutdown.join();
  return again_signalled;
}

// --memory_limit: common/byte_size.h's syntax; 0 (the default) is no limit.
absl::StatusOr<int64_t> ParseMemoryLimit() {
  absl::StatusOr<int64_t> bytes = ParseByteSize(absl::GetFlag(FLAGS_memory_limit));
  if (bytes.ok()) return bytes;
  return absl::InvalidArgumentError(
      absl::StrCat("--memory_limit: ", bytes.status().message(), "; 0 is no limit"));
}

std::string DefaultBackend() {
  std::string backend = absl::GetFlag(FLAGS_backend);
  if (!backend.empty()) return backend;
  return absl::GetFlag(FLAGS_device) == "cuda" ? "nccl" : "gloo";
}

absl::Status ValidateDevice() {
  const std::string device = absl::GetFlag(FLAGS_device);
  if (device != "cpu" && device != "cuda") {
    return absl::InvalidArgumentError(
        absl::StrCat("--device=", device, " is not supported; use cpu or cuda"));
  }
  return absl::OkStatus();
}

// --backend=local has no collectives: every worker it joins would refuse a group of two.
absl::Status CheckBackendFits(int workers) {
  if (DefaultBackend() != "local" || workers <= 1) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("--backend=local runs one worker alone, and there are ", workers,
                   " workers: use gloo (cpu) or nccl (cuda), or leave --backend unset (a group "
                   "of one worker runs without collectives on either)"));
}

// A client's keepalive pings (tools/client_auth.h) must be no more frequent than the
// coordinator takes while it sends nothing (a queued request), or gRPC closes the connection
// (too_many_pings).
static_assert(absl::Milliseconds(kClientKeepaliveMs) >= coordinator::kClientPingTimeout);

// --tls_cert_file and --tls_key_file go together (the files are read at start: --check_flags
// runs where they may not be mounted yet).
absl::Status CheckTlsPairFlags() {
  if (absl::GetFlag(FLAGS_tls_cert_file).empty() != absl::GetFlag(FLAGS_tls_key_file).empty()) {
    return absl::InvalidArgumentError(
        "set both --tls_cert_file and --tls_key_file (a certificate and its key), or neither");
  }
  return absl::OkStatus();
}

absl::Status ValidateCommonFlags() {
  const std::string dtype = absl::GetFlag(FLAGS_dtype);
  if (!dtype.empty() && dtype != "fp16" && dtype != "int8" && dtype != "fp32") {
    return absl::InvalidArgumentError(
        absl::StrCat("--dtype=", dtype, " is not supported; use fp16, int8 or fp32"));
  }
  RETURN_IF_ERROR(ValidateDevice());
  const std::string backend = DefaultBackend();
  if (backend != "gloo" && backend != "nccl" && backend != "local") {
    return absl::InvalidArgumentError(absl::StrCat(
        "--backend=", backend, " is not supported; use gloo, nccl or local (one worker alone)"));
  }
  if (backend == "nccl" && absl::GetFlag(FLAGS_device) != "cuda") {
    return absl::InvalidArgumentError(
        "--backend=nccl needs --device=cuda (NCCL sums GPU memory); CPU workers use gloo");
  }
  // TLS flags that go together (the files themselves are read at start: --check_flags runs
  // where they may not be mounted yet).
  RETURN_IF_ERROR(CheckTlsPairFlags());
  if (!absl::GetFlag(FLAGS_tls_client_ca_file).empty() &&
      absl::GetFlag(FLAGS_tls_cert_file).empty()) {
    return absl::InvalidArgumentError(
        "--tls_client_ca_file needs TLS: set --tls_cert_file and --tls_key_file too");
  }
  if (!absl::GetFlag(FLAGS_worker_tls_ca_file).empty() &&
      absl::GetFlag(FLAGS_tls_cert_file).empty()) {
    return absl::InvalidArgumentError(
        "--worker_tls_ca_file: set --tls_cert_file and --tls_key_file too: workers under "
        "mutual TLS (their --tls_client_ca_file) take only a coordinator that presents a "
        "certificate");
  }
  if (absl::GetFlag(FLAGS_model).empty()) {
    // The bundled model (tools/bundled_model.h) is the default.
    char self[4096];
    const ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    const std::optional<std::string> bundled =
        n > 0 ? FindBundledModel(std::string(self, static_cast<size_t>(n))) : std::nullopt;
    if (!bundled.has_value()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--model is required: a model directory or synthetic:<preset> (the bundled ",
                       kBundledModelName, " was not found next to this binary or under ./models)"));
    }
    LLMINT8_LOG(INFO) << "no --model: serving the bundled model " << *bundled;
    absl::SetFlag(&FLAGS_model, *bundled);
  }
  if (absl::StatusOr<coordinator::GroupPolicy> p =
          coordinator::ParseGroupPolicy(absl::GetFlag(FLAGS_group));
      !p.ok()) {
    return p.status();
  }
  if (absl::StatusOr<coordinator::Preemption> p =
          coordinator::ParsePreemption(absl::GetFlag(FLAGS_preemption));
      !p.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("--", p.status().message()));
  }
  if (absl::StatusOr<coordinator::Scheduling> s =
          coordinator::ParseScheduling(absl::GetFlag(FLAGS_scheduling));
      !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("--", s.status().message()));
  }
  if (absl::GetFlag(FLAGS_prefill_chunk) < 0) {
    return absl::InvalidArgumentError("--prefill_chunk must be >= 0 (0: whole prompts)");
  }
  if (absl::GetFlag(FLAGS_prefix_cache_entries) < 0) {
    return absl::InvalidArgumentError("--prefix_cache_entries must be >= 0 (0: off)");
  }
  if (const int32_t n = absl::GetFlag(FLAGS_guide_cache_entries);
      n < 0 || n > static_cast<int32_t>(coordinator::kMaxGuideCacheEntries)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--guide_cache_entries must be in [0, ", coordinator::kMaxGuideCacheEntries,
                     "] (0: off; each kept guide may hold up to ~24 MiB)"));
  }
  if (absl::GetFlag(FLAGS_default_max_tokens) < 0) {
    return absl::InvalidArgumentError("--default_max_tokens must be >= 0 (0: fill the context)");
  }
  if (const float t = absl::GetFlag(FLAGS_threshold); !(t >= 0.0f) || std::isinf(t)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--threshold=", t,
                     " must be a finite value >= 0 (LLM.int8()'s outlier threshold: 6 as in "
                     "the paper; 0 quantizes every column)"));
  }
  if (absl::GetFlag(FLAGS_score_chunk) < 1) {
    return absl::InvalidArgumentError("--score_chunk must be >= 1");
  }
  // The limit holds the workers' rendezvous messages too (a few hundred bytes each).
  if (const int32_t m = absl::GetFlag(FLAGS_max_message_bytes); m < 64 * 1024) {
    return absl::InvalidArgumentError(
        absl::StrCat("--max_message_bytes=", m, " must be at least 65536 (64 KiB)"));
  }
  if (absl::GetFlag(FLAGS_max_context) < 0 || absl::GetFlag(FLAGS_kv_budget_tokens) < 0) {
    return absl::InvalidArgumentError(
        "--max_context and --kv_budget_tokens must be >= 0 (0: the model's / the workers')");
  }
  if (absl::GetFlag(FLAGS_kv_budget_recovery) < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        "--kv_budget_recovery must be >= 0 (0: a lowered KV budget stays until the group "
        "re-forms)");
  }
  if (absl::GetFlag(FLAGS_drain_timeout) < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("--drain_timeout must be >= 0 (0: stop at once)");
  }
  if (const absl::Duration r = absl::GetFlag(FLAGS_resume_on_group_loss);
      r < absl::ZeroDuration() ||
      (r > absl::ZeroDuration() && absl::GetFlag(FLAGS_preemption) == "off")) {
    return absl::InvalidArgumentError(
        "--resume_on_group_loss must be >= 0 (0: off), and needs --preemption=recompute");
  }
  if (const int32_t k = absl::GetFlag(FLAGS_speculative_tokens);
      k < 0 || k > kMaxSpeculativeTokens) {
    return absl::InvalidArgumentError(absl::StrCat("--speculative_tokens=", k, " must be in [0, ",
                                                   kMaxSpeculativeTokens, "] (0: off)"));
  }
  if (const int32_t lo = absl::GetFlag(FLAGS_prompt_lookup_min),
      hi = absl::GetFlag(FLAGS_prompt_lookup_max);
      lo < 1 || hi < lo || hi > 64) {
    return absl::InvalidArgumentError(absl::StrCat("--prompt_lookup_min=", lo,
                                                   " and --prompt_lookup_max=", hi,
                                                   " must satisfy 1 <= min <= max <= 64"));
  }
  if (absl::GetFlag(FLAGS_join_wait) < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("--join_wait must be >= 0 (e.g. 3s; inf waits for all)");
  }
  if (absl::GetFlag(FLAGS_worker_lease) > absl::Hours(1)) {
    return absl::InvalidArgumentError(
        "--worker_lease must be at most 1h (workers refuse longer leases: a coordinator that "
        "vanished would hold them that long)");
  }
  for (const auto& [name, value] :
       {std::pair{"--step_timeout", absl::GetFlag(FLAGS_step_timeout)},
        std::pair{"--load_timeout", absl::GetFlag(FLAGS_load_timeout)}}) {
    if (value < absl::Seconds(1) || value > absl::Hours(24)) {
      return absl::InvalidArgumentError(
          absl::StrCat(name, "=", absl::FormatDuration(value), " must be in [1s, 24h]"));
    }
  }
  if (const absl::Duration k = absl::GetFlag(FLAGS_client_keepalive);
      k < absl::Seconds(1) || k > absl::Hours(1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--client_keepalive=", absl::FormatDuration(k),
                     " must be in [1s, 1h]: clients that do not answer a ping are cut off"));
  }
  if (absl::GetFlag(FLAGS_worker_lease) < absl::Seconds(2)) {
    return absl::InvalidArgumentError(
        "--worker_lease must be at least 2s: probes renew it every 250ms and may wait 1s");
  }
  if (absl::GetFlag(FLAGS_reserve_sequences) < 1) {
    return absl::InvalidArgumentError(
        "--reserve_sequences must be >= 1: the group plan keeps room for at least one sequence");
  }
  if (absl::GetFlag(FLAGS_max_batch) < 1 || absl::GetFlag(FLAGS_queue_capacity) < 1) {
    return absl::InvalidArgumentError("--max_batch and --queue_capacity must be >= 1");
  }
  return absl::OkStatus();
}

coordinator::CoordinatorOptions CoordinatorOptionsFromFlags(
    std::vector<std::string> worker_addresses) {
  coordinator::CoordinatorOptions o;
  o.listen = absl::GetFlag(FLAGS_listen).empty() ? "0.0.0.0:50051" : absl::GetFlag(FLAGS_listen);
  o.advertise = absl::GetFlag(FLAGS_advertise);
  o.rendezvous_listen = absl::GetFlag(FLAGS_rendezvous_listen);
  o.metrics_listen = absl::GetFlag(FLAGS_metrics_listen);
  o.http_listen = absl::GetFlag(FLAGS_http_listen);
  o.tls = {.cert_file = absl::GetFlag(FLAGS_tls_cert_file),
           .key_file = absl::GetFlag(FLAGS_tls_key_file),
           .client_ca_file = absl::GetFlag(FLAGS_tls_client_ca_file)};
  o.workers_tls = {.ca_file = absl::GetFlag(FLAGS_worker_tls_ca_file),
                   .cert_file = absl::GetFlag(FLAGS_tls_cert_file),
                   .key_file = absl::GetFlag(FLAGS_tls_key_file),
                   .ca_flag = "--worker_tls_ca_file"};
  const char* key = std::getenv(coordinator::kApiKeyEnv);
  if (key != nullptr) o.api_key = key;
  o.drain_timeout = absl::GetFlag(FLAGS_drain_timeout);
  o.client_keepalive = absl::GetFlag(FLAGS_client_keepalive);
  o.log_requests = absl::GetFlag(FLAGS_log_requests);
  o.group.addresses = std::move(worker_addresses);
  o.group.backend = DefaultBackend();
  o.group.model = absl::GetFlag(FLAGS_model);
  o.group.dtype = absl::GetFlag(FLAGS_dtype);
  o.group.threshold = absl::GetFlag(FLAGS_threshold);
  o.group.device = absl::GetFlag(FLAGS_device);
  o.group.policy = coordinator::ParseGroupPolicy(absl::GetFlag(FLAGS_group))
                       .value_or(coordinator::GroupPolicy::kAllWorkers);  // validated before
  o.group.reserve_sequences = absl::GetFlag(FLAGS_reserve_sequences);
  o.group.join_wait = absl::GetFlag(FLAGS_join_wait);
  o.group.lease = absl::GetFlag(FLAGS_worker_lease);
  o.group.step_timeout = absl::GetFlag(FLAGS_step_timeout);
  o.group.load_timeout = absl::GetFlag(FLAGS_load_timeout);
  o.scheduler.max_batch = absl::GetFlag(FLAGS_max_batch);
  o.scheduler.queue_capacity = absl::GetFlag(FLAGS_queue_capacity);
  o.scheduler.kv_budget_tokens = absl::GetFlag(FLAGS_kv_budget_tokens);
  o.scheduler.kv_budget_recovery = absl::GetFlag(FLAGS_kv_budget_recovery);
  o.scheduler.preemption = coordinator::ParsePreemption(absl::GetFlag(FLAGS_preemption))
                               .value_or(coordinator::Preemption::kRecompute);  // validated before
  o.scheduler.resume_on_group_loss = absl::GetFlag(FLAGS_resume_on_group_loss);
  o.scheduler.scheduling = coordinator::ParseScheduling(absl::GetFlag(FLAGS_scheduling))
                               .value_or(coordinator::Scheduling::kFcfs);  // likewise
  o.scheduler.prefill_chunk = absl::GetFlag(FLAGS_prefill_chunk);
  o.scheduler.score_chunk = absl::GetFlag(FLAGS_score_chunk);
  o.scheduler.prefix_cache_entries = absl::GetFlag(FLAGS_prefix_cache_entries);
  o.scheduler.speculative_tokens = absl::GetFlag(FLAGS_speculative_tokens);
  o.scheduler.prompt_lookup = {.min_n = absl::GetFlag(FLAGS_prompt_lookup_min),
                               .max_n = absl::GetFlag(FLAGS_prompt_lookup_max)};
  o.max_context = absl::GetFlag(FLAGS_max_context);
  o.max_message_bytes = absl::GetFlag(FLAGS_max_message_bytes);
  o.default_max_tokens = absl::GetFlag(FLAGS_default_max_tokens);
  o.guide_cache_entries = static_cast<size_t>(absl::GetFlag(FLAGS_guide_cache_entries));
  o.tokenizer = absl::GetFlag(FLAGS_tokenizer);
  o.generation_config = absl::GetFlag(FLAGS_generation_config);
  o.override_generation_config = absl::GetFlag(FLAGS_override_generation_config);
  o.served_model_name = absl::GetFlag(FLAGS_served_model_name);
  return o;
}

// A worker whose GPU context is lost stops with this, for its supervisor to start a fresh one.
constexpr int kExitDeviceLost = 3;

int Fail(const absl::Status& status) {
  LLMINT8_LOG(ERROR) << status;
  return 1;
}

// --check_flags: the flags passed; nothing is started.
int FlagsOk(const char* subcommand) {
  std::printf("llmint8 %s: flags OK\n", subcommand);
  return 0;
}

// A server option that drops the builder's plugins (gRPC reflection's).
class NoServerPlugins final : public grpc::ServerBuilderOption {
 public:
  void UpdateArguments(grpc::ChannelArguments*) override {}
  void UpdatePlugins(std::vector<std::unique_ptr<grpc::ServerBuilderPlugin>>* plugins) override {
    plugins->clear();
  }
};

// --dtype unset (""): a pre-quantized checkpoint (`llmint8 quantize`) is served int8, as fp16
// would dequantize its weights, at twice the memory and none of the precision back; anything
// else fp16. Telling needs the weights' headers: a coordinator that cannot read them (one
// given only config.json) says so and serves fp16.
void DefaultDtypeForModel() {
  if (!absl::GetFlag(FLAGS_dtype).empty()) return;
  const std::string spec = absl::GetFlag(FLAGS_model);
  absl::SetFlag(&FLAGS_dtype, "fp16");
  if (!model::ModelSpecDirectory(spec).has_value()) return;
  const absl::StatusOr<model::OpenedModel> opened = model::OpenModelSpec(spec);
  if (!opened.ok()) {
    LLMINT8_LOG(WARNING) << "cannot tell whether " << spec
                         << " is a pre-quantized int8 checkpoint (" << opened.status()
                         << "): serving fp16; pass --dtype to choose";
    return;
  }
  if (!model::IsPreQuantized(*opened)) return;
  absl::SetFlag(&FLAGS_dtype, "int8");
  LLMINT8_LOG(INFO) << spec
                    << " is a pre-quantized int8 checkpoint (llmint8 quantize): serving it int8 "
                       "(--dtype=fp16 would dequantize it)";
}

// Each (flag, host:port) that is set parses (common/host_port.h).
absl::Status CheckAddresses(const std::vector<std::pair<std::string, std::string>>& addresses) {
  for (const auto& [flag, address] : addresses) {
    if (address.empty()) continue;
    RETURN_IF_ERROR(ParseHostPort(address, flag).status());
  }
  return absl::OkStatus();
}

// Whether a server could listen on 127.0.0.1:`port` now: a bind with SO_REUSEADDR, as gRPC's
// (so a port another process listens on fails, one in TIME_WAIT does not).
bool LoopbackPortFree(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return true;  // cannot tell: let the worker try
  const int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  const bool free = bind(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) == 0;
  close(fd);
  return free;
}

}  // namespace

int RunWorker() {
  const sigset_t signals = BlockShutdownSignals();
  absl::StatusOr<int64_t> memory_limit = ParseMemoryLimit();
  if (!memory_limit.ok()) return Fail(memory_limit.status());
  if (absl::Status s = ValidateDevice(); !s.ok()) return Fail(s);
  worker::WorkerOptions options;
  options.device = absl::GetFlag(FLAGS_device);
  options.cuda_device = absl::GetFlag(FLAGS_cuda_device);
  options.memory_limit_bytes = *memory_limit;
  options.coordinator_address = absl::GetFlag(FLAGS_coordinator);
  options.gloo_hostname = absl::GetFlag(FLAGS_gloo_hostname);
  options.gloo_interface = absl::GetFlag(FLAGS_gloo_interface);
  const std::string listen =
      absl::GetFlag(FLAGS_listen).empty() ? "127.0.0.1:50061" : absl::GetFlag(FLAGS_listen);
  const std::string health_listen = absl::GetFlag(FLAGS_health_listen);
  if (absl::Status s = CheckAddresses({{"--listen", listen},
                                       {"--coordinator", absl::GetFlag(FLAGS_coordinator)},
                                       {"--health_listen", health_listen}});
      !s.ok()) {
    return Fail(s);
  }
  options.abandoned_after = absl::GetFlag(FLAGS_abandoned_group_timeout);
  if (options.abandoned_after < absl::ZeroDuration()) {
    return Fail(absl::InvalidArgumentError(
        "--abandoned_group_timeout must be >= 0 (inf: keep a silent coordinator's group)"));
  }
  if (absl::GetFlag(FLAGS_drain_timeout) < absl::ZeroDuration()) {
    return Fail(absl::InvalidArgumentError("--drain_timeout must be >= 0 (0: stop at once)"));
  }
  if (options.cuda_device < -1) {
    return Fail(absl::InvalidArgumentError(
        absl::StrCat("--cuda_device=", options.cuda_device,
                     " must be a device index >= 0, or -1 for the rank the coordinator assigns")));
  }
  if (absl::Status s = CheckTlsPairFlags(); !s.ok()) return Fail(s);
  if (!absl::GetFlag(FLAGS_tls_client_ca_file).empty() &&
      absl::GetFlag(FLAGS_tls_cert_file).empty()) {
    return Fail(absl::InvalidArgumentError(
        "--tls_client_ca_file makes the Worker port serve TLS: set --tls_cert_file and "
        "--tls_key_file too (this worker's certificate, naming the host the coordinator dials)"));
  }
  if (!absl::GetFlag(FLAGS_tls_client_ca_file).empty() &&
      absl::GetFlag(FLAGS_tls_ca_file).empty()) {
    // A coordinator that can present a client certificate has one of its own, so its
    // rendezvous serves TLS, where this worker presents --tls_cert_file too.
    return Fail(absl::InvalidArgumentError(
        "--tls_client_ca_file: set --tls_ca_file too (the roots of the coordinator's "
        "certificate): a coordinator driving workers under mutual TLS serves its rendezvous "
        "over TLS, and this worker presents its --tls_cert_file there as well"));
  }
  if (!health_listen.empty() && health_listen == listen) {
    return Fail(absl::InvalidArgumentError(absl::StrCat(
        "--health_listen=", health_listen, " is the --listen address: give it a port of its own")));
  }
  if (absl::GetFlag(FLAGS_check_flags)) return FlagsOk("worker");
  if (options.device == "cuda") {
    // Refused here, not by every LoadShard of a group that can never form.
    const absl::StatusOr<int> usable = UsableGpus(model::CudaDeviceCount());
    if (!usable.ok()) return Fail(usable.status());
    if (options.cuda_device >= *usable) {
      return Fail(absl::InvalidArgumentError(
          absl::StrCat("--cuda_device=", options.cuda_device, ", but this machine shows ", *usable,
                       " CUDA device", *usable == 1 ? "" : "s", " (0..", *usable - 1, ")")));
    }
  }
  absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> credentials =
      ClientCredentialsFromFlags();
  if (!credentials.ok()) return Fail(credentials.status());
  options.coordinator_credentials = *std::move(credentials);
  // Mutual TLS on the Worker port with --tls_client_ca_file: only a coordinator holding a
  // certificate those roots signed drives this worker.
  absl::StatusOr<std::optional<TlsServerPem>> tls = std::optional<TlsServerPem>();
  if (!absl::GetFlag(FLAGS_tls_client_ca_file).empty()) {
    tls = LoadTlsServer({.cert_file = absl::GetFlag(FLAGS_tls_cert_file),
                         .key_file = absl::GetFlag(FLAGS_tls_key_file),
                         .client_ca_file = absl::GetFlag(FLAGS_tls_client_ca_file)});
    if (!tls.ok()) return Fail(tls.status());
  }
  SetLogPrefix(absl::StrCat("worker ", listen));
  if (!absl::GetFlag(FLAGS_tls_cert_file).empty() && !tls->has_value()) {
    LLMINT8_LOG(INFO) << "--tls_cert_file without --tls_client_ca_file: the certificate is "
                         "presented to the coordinator's rendezvous only; the Worker port "
                         "serves plaintext to any caller";
  }
  worker::WorkerService service(options);

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);  // as the coordinator's
  builder.AddListeningPort(listen, GrpcServerCredentials(*tls), &port);
  builder.SetMaxReceiveMessageSize(64 << 20);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    return Fail(absl::UnavailableError(
        absl::StrCat("could not listen on ", listen, "; pick another --listen address")));
  }
  // --health_listen: grpc.health.v1 alone (no service is registered there), plaintext.
  // Every other method there answers UNIMPLEMENTED (gRPC needs a service to poll for).
  grpc::CallbackGenericService unimplemented;
  std::unique_ptr<grpc::Server> health_server;
  int health_port = 0;
  if (!health_listen.empty()) {
    grpc::ServerBuilder health_builder;
    // No plugins: reflection's (registered for every builder once linked) would hand out the
    // Worker service's schema there.
    health_builder.SetOption(std::make_unique<NoServerPlugins>());
    health_builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
    health_builder.RegisterCallbackGenericService(&unimplemented);
    health_builder.AddListeningPort(health_listen, grpc::InsecureServerCredentials(), &health_port);
    health_server = health_builder.BuildAndStart();
    if (health_server == nullptr || health_port == 0) {
      server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
      return Fail(absl::UnavailableError(absl::StrCat("could not listen on ", health_listen,
                                                      "; pick another --health_listen address")));
    }
  }
  const auto set_health = [&](bool ready) {
    SetHealth(*server, ready);
    if (health_server != nullptr) SetHealth(*health_server, ready);
  };
  const auto shutdown = [&] {
    const auto deadline = std::chrono::system_clock::now() + std::chrono::seconds(1);
    server->Shutdown(deadline);
    if (health_server != nullptr) health_server->Shutdown(deadline);
  };
  set_health(true);  // ready to join a group until it drains
  LLMINT8_LOG(INFO) << "worker listening on " << listen << " (port " << port << "), device "
                    << options.device << (tls->has_value() ? ", mutual TLS" : "")
                    << (health_server != nullptr ? absl::StrCat("; health on ", health_listen,
                                                                " (port ", health_port, ")")
                                                 : "")
                    << "; waiting for the coordinator";
  // A signal, or a GPU context lost (nothing this process runs on the GPU can work again).
  int sig = 0;
  absl::Status lost;
  while (sig == 0 && (lost = service.DeviceLost()).ok()) {
    sig = WaitSignalFor(signals, absl::Milliseconds(200));
  }
  if (!lost.ok()) {
    set_health(false);
    LLMINT8_LOG(ERROR) << "worker: stopping, for a fresh process to take over: " << lost;
    shutdown();
    return kExitDeviceLost;
  }
  set_health(false);  // readiness off: it joins no new group
  // The group's running requests finish first (the coordinator admits no new ones once its
  // probe sees the drain); a second signal, or --drain_timeout, ends the wait.
  service.Drain();
  const absl::Duration drain_timeout = absl::GetFlag(FLAGS_drain_timeout);
  const absl::Time drain_end = absl::Now() + drain_timeout;
  if (service.Drained()) {
    LLMINT8_LOG(INFO) << "worker: " << strsignal(sig) << ", shutting down";
  } else {
    LLMINT8_LOG(INFO) << "worker: " << strsignal(sig)
                      << ", draining: its group's running requests finish first (up to "
                      << absl::FormatDuration(drain_timeout) << "; a second signal stops now)";
    int again = 0;
    while (!service.Drained() && absl::Now() < drain_end && again == 0) {
      again = WaitSignalFor(signals, absl::Milliseconds(50));
    }
    LLMINT8_LOG(INFO) << "worker: "
                      << (again != 0          ? std::string(strsignal(again)) + ", "
                          : service.Drained() ? std::string("drained, ")
                                              : std::string("drain timed out, "))
                      << "shutting down";
  }
  shutdown();
  return 0;
}

int RunCoordinator() {
  const sigset_t signals = BlockShutdownSignals();
  SetLogPrefix("coordinator");
  if (absl::Status s = ValidateCommonFlags(); !s.ok()) return Fail(s);
  if (absl::GetFlag(FLAGS_workers).empty()) {
    return Fail(absl::InvalidArgumentError(
        "--workers is required: the worker addresses in rank order, e.g. "
        "--workers=10.0.0.1:50061,10.0.0.2:50061"));
  }
  std::vector<std::pair<std::string, std::string>> addresses = {
      {"--listen", absl::GetFlag(FLAGS_listen)},
      {"--metrics_listen", absl::GetFlag(FLAGS_metrics_listen)},
      {"--http_listen", absl::GetFlag(FLAGS_http_listen)},
      {"--advertise", absl::GetFlag(FLAGS_advertise)},
      {"--rendezvous_listen", absl::GetFlag(FLAGS_rendezvous_listen)}};
  const std::vector<std::string> workers = absl::GetFlag(FLAGS_workers);
  for (size_t i = 0; i < workers.size(); ++i) {
    // Each one dialled: an empty entry (a stray comma) or port 0 would be a rank that never
    // answers, and the group would wait for it.
    const absl::StatusOr<HostPort> w = ParseHostPort(workers[i], "--workers");
    if (workers[i].empty() || (w.ok() && (w->host.empty() || w->port == 0))) {
      return Fail(absl::InvalidArgumentError(
          absl::StrCat("--workers entry ", i + 1, " is '", workers[i],
                       "': each worker is a host:port to dial (no empty entries, no port 0)")));
    }
    addresses.push_back({"--workers", workers[i]});
  }
  if (absl::Status s = CheckAddresses(addresses); !s.ok()) return Fail(s);
  for (size_t i = 1; i < workers.size(); ++i) {
    if (std::find(workers.begin(), workers.begin() + static_cast<std::ptrdiff_t>(i), workers[i]) !=
        workers.begin() + static_cast<std::ptrdiff_t>(i)) {
      // One process would be asked for two ranks, and the group would wait for the second.
      return Fail(absl::InvalidArgumentError(
          absl::StrCat("--workers lists ", workers[i], " twice: each worker is one rank")));
    }
  }
  if (absl::Status s = CheckBackendFits(static_cast<int>(workers.size())); !s.ok()) return Fail(s);
  if (absl::GetFlag(FLAGS_check_flags)) return FlagsOk("coordinator");
  DefaultDtypeForModel();
  absl::StatusOr<std::unique_ptr<coordinator::CoordinatorServer>> server =
      coordinator::CoordinatorServer::Start(
          CoordinatorOptionsFromFlags(absl::GetFlag(FLAGS_workers)));
  if (!server.ok()) return Fail(server.status());
  const int sig = WaitSignal(signals);
  LLMINT8_LOG(INFO) << strsignal(sig);
  ShutdownUnlessSignalledAgain(**server, signals);
  return 0;
}

int RunServe(const char* argv0) {
  const sigset_t signals = BlockShutdownSignals();
  SetLogPrefix("serve");
  if (absl::Status s = ValidateCommonFlags(); !s.ok()) return Fail(s);
  absl::StatusOr<int64_t> memory_limit = ParseMemoryLimit();
  if (!memory_limit.ok()) return Fail(memory_limit.status());
  const int tp = absl::GetFlag(FLAGS_tp);
  if (tp < 1) return Fail(absl::InvalidArgumentError("--tp must be >= 1"));
  if (absl::Status s = CheckBackendFits(tp); !s.ok()) return Fail(s);
  std::string listen =
      absl::GetFlag(FLAGS_listen).empty() ? "0.0.0.0:50051" : absl::GetFlag(FLAGS_listen);
  const absl::StatusOr<HostPort> listen_address = ParseHostPort(listen, "--listen");
  if (!listen_address.ok()) return Fail(listen_address.status());
  if (absl::Status s = CheckAddresses({{"--metrics_listen", absl::GetFlag(FLAGS_metrics_listen)},
                                       {"--http_listen", absl::GetFlag(FLAGS_http_listen)}});
      !s.ok()) {
    return Fail(s);
  }
  if (absl::GetFlag(FLAGS_tls_cert_file).empty() && !absl::GetFlag(FLAGS_tls_ca_file).empty()) {
    return Fail(absl::InvalidArgumentError(
        "serve: --tls_ca_file is what its workers trust when it serves TLS: set --tls_cert_file "
        "and --tls_key_file too"));
  }
  const int listen_port = listen_address->port;
  int base_port = absl::GetFlag(FLAGS_worker_base_port);
  if (base_port == 0) {
    if (listen_port == 0) {
      return Fail(absl::InvalidArgumentError("with --listen port 0, set --worker_base_port"));
    }
    base_port = listen_port + 10;
  }
  if (base_port < 1 || base_port > 65535 - (tp - 1)) {  // (no int overflow for any flag)
    return Fail(absl::InvalidArgumentError(absl::StrCat(
        "workers would listen on ports ", base_port, "..", static_cast<int64_t>(base_port) + tp - 1,
        "; pick --worker_base_port (or --listen) so that they lie in 1..65535")));
  }
  // serve's own ports: a worker on one of them would lose the race to bind it and be
  // restarted over and over.
  for (const auto& [flag, address] : {std::pair<const char*, std::string>{"--listen", listen},
                                      {"--http_listen", absl::GetFlag(FLAGS_http_listen)},
                                      {"--metrics_listen", absl::GetFlag(FLAGS_metrics_listen)}}) {
    if (address.empty()) continue;
    const absl::StatusOr<HostPort> own = ParseHostPort(address, flag);
    if (own.ok() && own->port >= base_port && own->port < base_port + tp) {
      return Fail(absl::InvalidArgumentError(
          absl::StrCat(flag, "'s port ", own->port, " is one of the workers' ports ", base_port,
                       "..", base_port + tp - 1,
                       " (--worker_base_port, default the --listen port + 10): pick "
                       "another")));
    }
  }
  if (absl::GetFlag(FLAGS_check_flags)) return FlagsOk("serve");
  DefaultDtypeForModel();
  // The workers' ports are checked here: a worker that cannot listen would be restarted over
  // and over, and the coordinator could reach another serve's worker on that port instead.
  for (int rank = 0; rank < tp; ++rank) {
    if (!LoopbackPortFree(base_port + rank)) {
      return Fail(absl::UnavailableError(absl::StrCat(
          "serve: worker ", rank, "'s port 127.0.0.1:", base_port + rank,
          " is taken (another serve's workers?); workers listen on --worker_base_port + 0..",
          tp - 1, " (default: the --listen port + 10): pick free ports with --worker_base_port")));
    }
  }
  // CPU workers share this machine's cores: give each its share of OpenMP threads (oneDNN's
  // GEMMs) and let idle threads sleep, or ranks spin against each other in every all-reduce.
  // Set before any thread exists (setenv is not thread-safe); the workers inherit it.
  if (absl::GetFlag(FLAGS_device) == "cpu") {
    setenv("OMP_WAIT_POLICY", "PASSIVE", /*overwrite=*/0);
    const long cores = sysconf(_SC_NPROCESSORS_ONLN);
    setenv("OMP_NUM_THREADS", absl::StrCat(std::max<long>(1, cores / tp)).c_str(), 0);
  }
  // GPU placement (tools/gpu_placement.h): rank r on device r % (visible devices); ranks that
  // share a device get their own NCCL_HOSTID.
  int cuda_devices = 0;
  if (absl::GetFlag(FLAGS_device) == "cuda") {
    const absl::StatusOr<int> usable = UsableGpus(model::CudaDeviceCount());
    if (!usable.ok()) return Fail(usable.status());
    cuda_devices = *usable;
    const std::string shared = SharedGpuWarning(tp, cuda_devices);
    if (!shared.empty()) LLMINT8_LOG(WARNING) << shared;
  }
  // Environment of worker `rank` (built here: the child only calls async-signal-safe execve).
  auto worker_env = [&](int rank) {
    std::vector<std::string> env;
    for (char** e = environ; *e != nullptr; ++e) env.emplace_back(*e);
    if (cuda_devices > 0 && PlaceRank(rank, tp, cuda_devices).shares_gpu) {
      env = comm::WithSharedGpuNcclEnv(std::move(env), rank);
    }
    return env;
  };
  // Re-execute this very binary as the workers: the file running now, through /proc/self/exe,
  // even when the path was replaced (an upgrade) or deleted since; its path names them.
  char self[4096];
  ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
  const std::string exe = n > 0 ? std::string(self, n) : std::string(argv0);

  std::vector<std::string> addresses;
  for (int i = 0; i < tp; ++i) addresses.push_back(absl::StrCat("127.0.0.1:", base_port + i));
  coordinator::CoordinatorOptions coordinator_options = CoordinatorOptionsFromFlags(addresses);
  // A model that cannot be read, or that --tp workers cannot split, is refused before any
  // worker starts (the coordinator would refuse it too, after the workers had started).
  if (absl::StatusOr<model::OptConfig> config =
          coordinator::CheckModelForGroup(coordinator_options);
      !config.ok()) {
    return Fail(config.status());
  }
  // With TLS the workers reach the rendezvous over it at the --listen host (127.0.0.1 when
  // that is a wildcard, coordinator::LocalRendezvousAddress): they trust
  // --tls_ca_file (default: the certificate itself, for a self-signed one). Checked here, or
  // the group would never form and say only that the rendezvous timed out.
  std::vector<std::string> worker_tls;
  std::unique_ptr<LinkIdentity> link;  // with TLS; outlives the workers and the coordinator
  if (const std::string cert = absl::GetFlag(FLAGS_tls_cert_file); !cert.empty()) {
    const std::string ca = absl::GetFlag(FLAGS_tls_ca_file);
    const std::string client_ca = absl::GetFlag(FLAGS_tls_client_ca_file);
    // The files themselves first (the coordinator checks them again when it starts).
    const absl::StatusOr<std::optional<TlsServerPem>> pem =
        LoadTlsServer({.cert_file = cert,
                       .key_file = absl::GetFlag(FLAGS_tls_key_file),
                       .client_ca_file = client_ca});
    if (!pem.ok()) return Fail(pem.status());
    const std::string dialled =
        ParseHostPort(coordinator::LocalRendezvousAddress(listen, 1), "--listen")->host;
    for (absl::Status s :
         {CheckCertificateNames(cert, dialled),
          ca.empty()
              ? CheckCertificateSignedBy(cert, cert, "--tls_cert_file (as its own root)",
                                         CertificateUse::kServer)
              : CheckCertificateSignedBy(cert, ca, "--tls_ca_file", CertificateUse::kServer)}) {
      if (!s.ok()) {
        return Fail(absl::InvalidArgumentError(absl::StrCat(
            "serve: its workers reach the coordinator at ", dialled,
            " over TLS, trusting --tls_ca_file (default: the certificate itself): ", s.message(),
            ". Or run `llmint8 coordinator` and `llmint8 worker` with their own flags")));
      }
    }
    // The links between serve's own processes under TLS too, with an identity of their own
    // (tools/link_identity.h): the workers serve their port with it and take only the
    // coordinator's calls, which presents it; they present it to the rendezvous, whose client
    // roots (with --tls_client_ca_file) take it beside the clients'.
    absl::StatusOr<std::unique_ptr<LinkIdentity>> made = LinkIdentity::Create();
    if (!made.ok()) return Fail(made.status());
    link = *std::move(made);
    worker_tls = {absl::StrCat("--tls_ca_file=", ca.empty() ? cert : ca),
                  absl::StrCat("--tls_cert_file=", link->cert_file()),
                  absl::StrCat("--tls_key_file=", link->key_file()),
                  absl::StrCat("--tls_client_ca_file=", link->cert_file())};
    coordinator_options.workers_tls = {.ca_file = link->cert_file(),
                                       .cert_file = link->cert_file(),
                                       .key_file = link->key_file(),
                                       .ca_flag = "serve's link certificate"};
    if (!client_ca.empty()) {
      // From the roots read above: a file read again (a pipe) could come back empty.
      absl::StatusOr<std::string> roots = link->RootsWith((*pem)->client_roots);
      if (!roots.ok()) return Fail(roots.status());
      coordinator_options.tls.client_ca_file = *roots;
    }
  }

  WorkerSupervisor::Options workers;
  workers.exe = n > 0 ? "/proc/self/exe" : exe;
  workers.addresses = addresses;
  workers.respawn = absl::GetFlag(FLAGS_respawn);
  workers.env = worker_env;
  workers.args = [&](int rank) {
    std::vector<std::string> args = {
        exe,
        "worker",
        absl::StrCat("--listen=", addresses[rank]),
        absl::StrCat("--device=", absl::GetFlag(FLAGS_device)),
        absl::StrCat("--cuda_device=",
                     cuda_devices > 0 ? PlaceRank(rank, tp, cuda_devices).cuda_device : 0),
        absl::StrCat("--memory_limit=", *memory_limit),
        absl::StrCat("--drain_timeout=", absl::FormatDuration(absl::GetFlag(FLAGS_drain_timeout)))};
    for (const std::string& flag : worker_tls) args.push_back(flag);
    return args;
  };
  absl::StatusOr<std::unique_ptr<WorkerSupervisor>> supervisor =
      WorkerSupervisor::Start(std::move(workers));
  if (!supervisor.ok()) return Fail(supervisor.status());

  absl::StatusOr<std::unique_ptr<coordinator::CoordinatorServer>> server =
      coordinator::CoordinatorServer::Start(std::move(coordinator_options));
  int code = 0;
  bool stop_now = false;  // a second signal came: the workers are not waited for either
  if (!server.ok()) {
    code = Fail(server.status());
  } else {
    // Until a signal; or, when the group is refused before it ever served (the workers this
    // command started cannot load or hold the model: nothing here will change that), or a
    // worker is lost for good, with the reason and exit status 1 rather than refusing every
    // request for ever.
    int sig = 0;
    bool served = false;  // the group has been ready once
    while (sig == 0) {
      sig = WaitSignalFor(signals, absl::Milliseconds(200));
      if (!served && (*server)->ready()) {
        served = true;
        (*supervisor)->MarkServed();
      }
      if (const absl::Status refused = (*server)->refusal(); sig == 0 && !served && !refused.ok()) {
        code = Fail(
            absl::Status(refused.code(), absl::StrCat("serve: ", refused.message(), "; stopping")));
        break;
      }
      if (const std::string why = (*supervisor)->Lost(); sig == 0 && !why.empty()) {
        code = Fail(absl::UnavailableError(why));
        break;
      }
    }
    if (sig != 0) LLMINT8_LOG(INFO) << strsignal(sig);
    stop_now = ShutdownUnlessSignalledAgain(**server, signals);
  }
  // The workers drain their groups' requests (the coordinator has ended its own); one stuck
  // in a collective or a driver call is killed after --drain_timeout + 5 s, or at once on
  // another signal, or at once when the second signal already ended the coordinator's drain.
  (*supervisor)
      ->Stop(stop_now ? absl::Now()
                      : absl::Now() + absl::GetFlag(FLAGS_drain_timeout) + absl::Seconds(5),
             [&](absl::Duration wait) { return WaitSignalFor(signals, wait) != 0; });
  return code;
}

}  // namespace llmint8::tools
