#include "coordinator/coordinator_server.h"

#include <algorithm>
#include <atomic>
#include <limits>
#include <string_view>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "common/health.h"
#include "common/host_port.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "coordinator/generation_defaults.h"
#include "coordinator/generation_service.h"
#include "coordinator/http_api.h"
#include "coordinator/http_server.h"
#include "coordinator/metrics.h"
#include "coordinator/metrics_server.h"
#include "coordinator/openai_api.h"
#include "coordinator/parse_error_interceptor.h"
#include "coordinator/rendezvous_service.h"
#include "coordinator/tokenizer.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "model/model_spec.h"
#include "model/shard_plan.h"
#include "worker/group_epoch.h"

namespace llmint8::coordinator {

struct CoordinatorServer::Impl {
  // The group's monitor and the scheduler call back into members declared after them (the
  // rendezvous, the server's health): they stop first, also when Start fails half-way and no
  // Shutdown runs.
  ~Impl() {
    if (scheduler != nullptr) scheduler->Stop();
    if (group != nullptr) group->Stop();
  }

  CoordinatorOptions options;
  model::OptConfig config;
  std::unique_ptr<Tokenizer> tokenizer;
  std::unique_ptr<WorkerGroup> group;
  std::unique_ptr<ServiceMetrics> metrics;
  std::unique_ptr<Scheduler> scheduler;
  std::unique_ptr<ApiKey> api_key;  // before the services that read it
  std::unique_ptr<GenerationService> generation;
  RendezvousService rendezvous;
  std::unique_ptr<grpc::Server> rendezvous_server;  // null without rendezvous_listen
  int rendezvous_port = 0;
  std::unique_ptr<grpc::Server> server;
  int port = 0;
  std::string address;
  bool shut_down = false;
  std::atomic<bool> draining{false};  // health stays NOT_SERVING once set
  absl::Mutex health_mu;              // orders the group's health updates with the drain's
  // Last: destroyed first, so no scrape or API call reads the scheduler or group while they
  // go (Shutdown stops the scheduler first: that ends every open stream).
  std::unique_ptr<MetricsServer> metrics_server;  // null without metrics_listen
  std::unique_ptr<HttpServer> http_server;        // null without http_listen
};

namespace {

// Readiness ("" and the Generation service) follows the group; "liveness" stays SERVING.
void SetCoordinatorHealth(grpc::Server& server, bool ready) {
  SetHealth(server, ready, {v1::Generation::service_full_name()});
}

}  // namespace

std::string LocalRendezvousAddress(const std::string& listen, int port) {
  absl::StatusOr<HostPort> hp = ParseHostPort(listen, "--listen");
  const std::string host = hp.ok() ? hp->host : "";
  if (host.empty() || host == "0.0.0.0" || host == "::" || host == "*") {
    return absl::StrCat("127.0.0.1:", port);
  }
  return host.find(':') != std::string::npos ? absl::StrCat("[", host, "]:", port)
                                             : absl::StrCat(host, ":", port);
}

namespace {

// CoordinatorOptions::client_keepalive on the public port.
void AddClientKeepalive(absl::Duration keepalive, grpc::ServerBuilder& builder) {
  const int64_t ms =
      std::clamp<int64_t>(absl::ToInt64Milliseconds(keepalive), 1, std::numeric_limits<int>::max());
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, static_cast<int>(ms));
  builder.AddChannelArgument(
      GRPC_ARG_KEEPALIVE_TIMEOUT_MS,
      static_cast<int>(std::min(ms, absl::ToInt64Milliseconds(kClientPingTimeout))));
  // gRPC stops pinging after 2 pings without a data frame: a request waiting in the queue
  // sends none, and its client must stay watched.
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  // Nor may they be spaced wider than the keepalive while the client sends nothing.
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_SENT_PING_INTERVAL_WITHOUT_DATA_MS,
                             static_cast<int>(ms));
  // Clients' own keepalive pings: gRPC closes a connection that pings more often than every
  // 5 min while the server sends nothing ("too_many_pings"), which a request waiting in the
  // queue would trip with a common 10-30 s client keepalive.
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS,
                             static_cast<int>(absl::ToInt64Milliseconds(kClientPingTimeout)));
}

}  // namespace

absl::StatusOr<model::OptConfig> CheckModelForGroup(const CoordinatorOptions& options) {
  ASSIGN_OR_RETURN(model::OptConfig config, model::LoadModelSpecConfig(options.group.model));
  if (options.max_context > config.max_position_embeddings) {
    return absl::InvalidArgumentError(
        absl::StrCat("--max_context=", options.max_context, " is beyond ", options.group.model,
                     "'s max_position_embeddings (", config.max_position_embeddings,
                     "): its learned positions end there; pass at most that, or 0 for all of it"));
  }
  const std::vector<int> valid_tp = model::ValidTpDegrees(config);
  const int tp = static_cast<int>(options.group.addresses.size());
  // --group=smallest may leave workers idle: it needs one valid degree within the workers.
  const bool usable = options.group.policy == GroupPolicy::kSmallest
                          ? !valid_tp.empty() && valid_tp.front() <= tp
                          : std::find(valid_tp.begin(), valid_tp.end(), tp) != valid_tp.end();
  if (!usable) {
    return absl::InvalidArgumentError(
        absl::StrCat(tp, " workers cannot split ", options.group.model, " (",
                     config.num_attention_heads, " heads, FFN ", config.ffn_dim, "): use one of ",
                     absl::StrJoin(valid_tp, ", "), " workers"));
  }
  RETURN_IF_ERROR(LoadServedGenerationConfig(options.generation_config,
                                             options.override_generation_config,
                                             options.group.model, config)
                      .status());
  if (!options.served_model_name.empty()) {
    RETURN_IF_ERROR(openai::CheckServedModelName(options.served_model_name));
  }
  return config;
}

absl::StatusOr<std::unique_ptr<CoordinatorServer>> CoordinatorServer::Start(
    CoordinatorOptions options) {
  auto impl = std::make_unique<Impl>();
  if (options.group.addresses.empty()) {
    return absl::InvalidArgumentError("no workers given; pass --workers=host:port,...");
  }
  ASSIGN_OR_RETURN(const std::optional<TlsServerPem> tls, LoadTlsServer(options.tls));
  if (tls.has_value() && !options.workers_tls.enabled()) {
    LLMINT8_LOG(INFO) << "serving TLS; driving the workers in plaintext (no "
                         "--worker_tls_ca_file: workers under mutual TLS would not answer)";
  }
  if (options.workers_tls.enabled()) {
    ASSIGN_OR_RETURN(options.group.credentials, GrpcChannelCredentials(options.workers_tls));
    if (!options.workers_tls.cert_file.empty()) {
      RETURN_IF_ERROR(CheckCertificateAllowsUse(
          options.workers_tls.cert_file, CertificateUse::kClient,
          "the coordinator presents it to its workers (--worker_tls_ca_file)"));
    }
  }
  ASSIGN_OR_RETURN(impl->config, CheckModelForGroup(options));
  int64_t max_context = impl->config.max_position_embeddings;
  if (options.max_context > 0) max_context = std::min(max_context, options.max_context);
  options.group.max_context = max_context;
  options.scheduler.max_context = max_context;
  ASSIGN_OR_RETURN(
      const std::optional<ServedGenerationConfig> generation_config,
      LoadServedGenerationConfig(options.generation_config, options.override_generation_config,
                                 options.group.model, impl->config));
  const v1::GenerationDefaults generation_defaults = GenerationDefaultsMessage(generation_config);
  options.scheduler.eos_token_ids = EosTokenIds(impl->config, generation_config);
  if (generation_config.has_value()) {
    LLMINT8_LOG(INFO) << "generation config " << generation_config->source << ": eos "
                      << absl::StrJoin(options.scheduler.eos_token_ids, ", ")
                      << "; OpenAI API defaults "
                      << DescribeGenerationDefaults(generation_defaults);
  }
  options.scheduler.vocab_size = impl->config.vocab_size;
  options.group.max_batch = options.scheduler.max_batch;
  options.group.config = impl->config;
  // A planned group (fp16 / int8) guarantees each worker room for reserve_sequences sequences
  // of max_context tokens: prefill no more tokens per step than that, and admit no more KV
  // cache when the workers do not say how much they hold (they do at LoadShard: the KV budget
  // is then what their memory allows beyond the weights; --kv_budget_tokens overrides both).
  const bool planned = options.group.dtype == "fp16" || options.group.dtype == "int8";
  if (planned) {
    const int64_t reserved = options.group.reserve_sequences * max_context;
    options.scheduler.default_kv_budget_tokens = reserved;
    options.scheduler.max_prefill_tokens = std::min(options.scheduler.max_prefill_tokens, reserved);
  }

  // Logit rows: one per sequence, and every position of the scored prompts' chunks (at most
  // score_chunk tokens a step, never more than the context).
  options.scheduler.score_chunk =
      std::clamp<int64_t>(options.scheduler.score_chunk, 1, max_context);
  // A step carries at most a prefill budget of prompt tokens (or one whole prompt), the scored
  // prompts' chunks beside them, and a decode token per sequence with its draft tokens (each
  // of which gets a logits row too).
  const int64_t per_sequence = 1 + int64_t{options.scheduler.speculative_tokens};
  options.group.max_step_tokens = std::max(options.scheduler.max_prefill_tokens, max_context) +
                                  options.scheduler.score_chunk +
                                  options.scheduler.max_batch * per_sequence;
  options.group.max_step_rows =
      options.scheduler.max_batch * per_sequence + options.scheduler.score_chunk;

  TokenizerOptions tok_options;
  tok_options.bos_id = static_cast<int32_t>(impl->config.bos_token_id);
  if (!options.tokenizer.empty()) {
    absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer =
        absl::EndsWith(options.tokenizer, ".json")
            ? Tokenizer::FromTokenizerJsonFile(options.tokenizer, tok_options)
            : Tokenizer::FromDirectory(options.tokenizer, tok_options);
    if (!tokenizer.ok()) {
      return absl::Status(
          tokenizer.status().code(),
          absl::StrCat("--tokenizer=", options.tokenizer, ": ", tokenizer.status().message()));
    }
    impl->tokenizer = *std::move(tokenizer);
    LLMINT8_LOG(INFO) << "tokenizer loaded from " << options.tokenizer;
  } else if (std::optional<std::string> dir = model::ModelSpecDirectory(options.group.model);
             dir.has_value() && Tokenizer::DirectoryHasFiles(*dir)) {
    ASSIGN_OR_RETURN(impl->tokenizer, Tokenizer::FromDirectory(*dir, tok_options));
    LLMINT8_LOG(INFO) << "tokenizer loaded from " << *dir;
  } else {
    LLMINT8_LOG(INFO) << "no tokenizer for " << options.group.model
                      << ": prompts must be token ids (or pass --tokenizer)";
  }
  if (impl->tokenizer != nullptr && impl->tokenizer->vocab_size() > impl->config.vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the tokenizer has ", impl->tokenizer->vocab_size(), " tokens but the model only ",
        impl->config.vocab_size, "; pass the model's own tokenizer"));
  }
  ModelLimits limits;
  limits.vocab_size = impl->config.vocab_size;
  limits.max_context = max_context;
  limits.has_tokenizer = impl->tokenizer != nullptr;
  if (impl->tokenizer != nullptr) limits.max_token_bytes = impl->tokenizer->max_token_bytes();
  limits.priority_scheduling = options.scheduler.scheduling == Scheduling::kPriority;

  Impl* raw = impl.get();
  WorkerGroupOptions group_options = options.group;
  group_options.on_forming = [raw](int64_t epoch) {
    raw->rendezvous.KeepOnlyPrefixed(worker::RendezvousKeyPrefix(epoch));
  };
  impl->group = std::make_unique<WorkerGroup>(std::move(group_options), [raw](GroupState) {
    if (raw->server == nullptr) return;
    // The group's state now, under the lock, not the one passed: a callback delayed past a
    // later change must not write its older state last.
    absl::MutexLock lock(&raw->health_mu);
    if (!raw->draining.load()) SetCoordinatorHealth(*raw->server, raw->group->ready());
  });
  // The gauges read the scheduler and group when scraped: both exist before the metrics server
  // starts and outlive it (Shutdown stops it first).
  impl->metrics = std::make_unique<ServiceMetrics>([raw] {
    LiveState s;
    s.queued = raw->scheduler->queued();
    s.running = raw->scheduler->running();
    s.steps = raw->scheduler->steps();
    s.group_ready = raw->group->ready();
    s.group_size = raw->group->world_size();
    s.group_epoch = raw->group->epoch();
    s.kv_reserved = raw->scheduler->kv_reserved();
    s.kv_budget = raw->scheduler->kv_budget();
    s.prefix_cached = raw->scheduler->prefix_cached_positions();
    s.prefix_cached_sequences = raw->scheduler->prefix_cached_sequences();
    s.prefix_hit_tokens = raw->scheduler->prefix_hit_tokens();
    s.draining = raw->draining.load();
    for (const char* state : kWorkerStateNames) s.workers.emplace_back(state, 0);
    for (const WorkerStatus& w : raw->group->Workers()) {
      const std::string_view state = WorkerStateName(w);
      for (auto& [name, count] : s.workers) count += name == state ? 1 : 0;
    }
    return s;
  });
  impl->scheduler =
      std::make_unique<Scheduler>(options.scheduler, impl->group.get(), impl->metrics.get());
  impl->api_key = std::make_unique<ApiKey>(options.api_key);
  if (impl->api_key->required()) {
    LLMINT8_LOG(INFO) << "API key required on Generation and /v1/ (" << kApiKeyEnv << ")";
  } else if (!options.api_key.empty()) {
    LLMINT8_LOG(WARNING) << kApiKeyEnv << " is set but blank: no API key is required";
  }
  // A chat reply without a limit of its own: the operator's, else the model's.
  const int32_t default_max_tokens = options.default_max_tokens > 0
                                         ? options.default_max_tokens
                                         : generation_defaults.max_new_tokens();
  impl->generation = std::make_unique<GenerationService>(
      impl->config, impl->tokenizer.get(), limits, impl->scheduler.get(), impl->group.get(),
      GenerationService::Options{.max_batch = options.scheduler.max_batch,
                                 .queue_capacity = options.scheduler.queue_capacity,
                                 .metrics = impl->metrics.get(),
                                 .api_key = impl->api_key.get(),
                                 .log_requests = options.log_requests,
                                 .default_max_tokens = default_max_tokens,
                                 .eos_token_ids = options.scheduler.eos_token_ids,
                                 .generation_defaults = generation_defaults,
                                 .guide_cache_entries = options.guide_cache_entries});
  // What /health says on the HTTP ports: the group is ready and the coordinator not draining.
  Impl* const state = impl.get();
  const std::function<bool()> serving = [state] {
    return state->group->ready() && !state->draining.load();
  };
  if (!options.metrics_listen.empty()) {
    ServiceMetrics* metrics = impl->metrics.get();
    ASSIGN_OR_RETURN(impl->metrics_server,
                     MetricsServer::Start(
                         options.metrics_listen, [metrics] { return metrics->Text(); }, serving));
    LLMINT8_LOG(INFO) << "metrics at http://" << options.metrics_listen
                      << "/metrics and /health (port " << impl->metrics_server->port() << ")";
  }

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  // Not gRPC's default SO_REUSEPORT: a second server on this port must fail to start, not
  // share the port and take some of its connections.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.AddListeningPort(options.listen, GrpcServerCredentials(tls), &impl->port);
  builder.SetMaxReceiveMessageSize(options.max_message_bytes);
  builder.experimental().SetInterceptorCreators(ParseErrorInterceptors());
  AddClientKeepalive(options.client_keepalive, builder);
  builder.RegisterService(impl->generation.get());
  if (options.rendezvous_listen.empty()) builder.RegisterService(&impl->rendezvous);
  impl->server = builder.BuildAndStart();
  if (impl->server == nullptr || impl->port == 0) {
    return absl::UnavailableError(
        absl::StrCat("could not listen on ", options.listen, "; pick another --listen port"));
  }
  SetCoordinatorHealth(*impl->server, false);
  impl->address = absl::StrCat("127.0.0.1:", impl->port);
  impl->rendezvous_port = impl->port;
  if (!options.rendezvous_listen.empty()) {
    grpc::ServerBuilder rendezvous;
    rendezvous.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
    rendezvous.AddListeningPort(options.rendezvous_listen, GrpcServerCredentials(tls),
                                &impl->rendezvous_port);
    rendezvous.RegisterService(&impl->rendezvous);
    impl->rendezvous_server = rendezvous.BuildAndStart();
    if (impl->rendezvous_server == nullptr || impl->rendezvous_port == 0) {
      impl->server->Shutdown();
      return absl::UnavailableError(absl::StrCat("could not listen on ", options.rendezvous_listen,
                                                 "; pick another --rendezvous_listen port"));
    }
    LLMINT8_LOG(INFO) << "workers' rendezvous on " << options.rendezvous_listen << " (port "
                      << impl->rendezvous_port << ")";
  }
  std::string advertise =
      !options.advertise.empty()
          ? options.advertise
          : LocalRendezvousAddress(
                options.rendezvous_listen.empty() ? options.listen : options.rendezvous_listen,
                impl->rendezvous_port);
  LLMINT8_LOG(INFO) << "coordinator listening on " << options.listen << " (port " << impl->port
                    << (!tls.has_value()            ? ""
                        : tls->client_roots.empty() ? ", TLS"
                                                    : ", TLS with client certificates")
                    << "); model " << options.group.model << ", " << options.group.dtype << ", "
                    << options.group.addresses.size()
                    << (options.group.addresses.size() == 1 ? " worker" : " workers")
                    << " (group: " << GroupPolicyName(options.group.policy) << ") over "
                    << options.group.backend << ", context " << max_context;
  impl->options = std::move(options);
  impl->scheduler->Start();
  impl->group->Start(advertise);
  // Last, so a request it admits finds the scheduler running.
  if (!impl->options.http_listen.empty()) {
    HttpApiOptions api;
    api.model_id = impl->options.served_model_name.empty()
                       ? openai::ModelId(impl->options.group.model)
                       : impl->options.served_model_name;
    api.max_context = impl->options.scheduler.max_context;
    api.vocab_size = impl->config.vocab_size;
    api.max_body_bytes = impl->options.max_message_bytes;
    api.created = absl::ToUnixSeconds(absl::Now());
    api.serving = serving;
    api.api_key = impl->api_key.get();
    if (generation_config.has_value()) {
      api.defaults = openai::RequestDefaultsFrom(generation_config->config);
    }
    // A thread per open request (every batch slot and queue place may be held over HTTP),
    // plus spares so that a request past them still gets its quick 429 and /health answers.
    const int threads =
        std::min(impl->options.scheduler.max_batch + impl->options.scheduler.queue_capacity, 512) +
        16;
    GenerationService* service = impl->generation.get();
    const WorkerGroup* group = impl->group.get();
    ASSIGN_OR_RETURN(
        impl->http_server,
        HttpServer::Start(
            impl->options.http_listen, "--http_listen", threads,
            [&](httplib::Server& server) { AddHttpApiRoutes(server, service, group, api); },
            impl->options.tls, impl->options.client_keepalive,
            std::min(impl->options.client_keepalive, kClientPingTimeout)));
    LLMINT8_LOG(INFO) << "OpenAI-compatible API at " << (tls.has_value() ? "https://" : "http://")
                      << impl->options.http_listen << "/v1/completions (port "
                      << impl->http_server->port() << "; model id " << api.model_id << ")";
  }

  return std::unique_ptr<CoordinatorServer>(new CoordinatorServer(std::move(impl)));
}

CoordinatorServer::CoordinatorServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

CoordinatorServer::~CoordinatorServer() { Shutdown(); }

int CoordinatorServer::port() const { return impl_->port; }
int CoordinatorServer::metrics_port() const {
  return impl_->metrics_server != nullptr ? impl_->metrics_server->port() : 0;
}
int CoordinatorServer::http_port() const {
  return impl_->http_server != nullptr ? impl_->http_server->port() : 0;
}

int CoordinatorServer::rendezvous_port() const { return impl_->rendezvous_port; }

void CoordinatorServer::EndDrain() { impl_->scheduler->EndDrain(); }

const std::string& CoordinatorServer::address() const { return impl_->address; }

void CoordinatorServer::Wait() { impl_->server->Wait(); }

bool CoordinatorServer::ready() const { return impl_->group->ready(); }

absl::Status CoordinatorServer::refusal() const { return impl_->group->refusal(); }

void CoordinatorServer::Shutdown() {
  if (impl_->shut_down) return;
  impl_->shut_down = true;
  {
    absl::MutexLock lock(&impl_->health_mu);
    impl_->draining.store(true);
    SetCoordinatorHealth(*impl_->server, false);
  }
  LLMINT8_LOG(INFO) << "coordinator draining: " << impl_->scheduler->running() << " running, "
                    << impl_->scheduler->queued() << " queued; new requests are refused (up to "
                    << absl::FormatDuration(impl_->options.drain_timeout) << ")";
  if (!impl_->scheduler->Drain(impl_->options.drain_timeout)) {
    LLMINT8_LOG(WARNING) << "drain ended (timeout, or no worker group to serve the queue): "
                         << impl_->scheduler->running() << " running and "
                         << impl_->scheduler->queued() << " queued requests fail UNAVAILABLE";
  }
  LLMINT8_LOG(INFO) << "coordinator shutting down";
  impl_->metrics_server.reset();  // no scrape reads the scheduler or group from here on
  impl_->scheduler->Stop();       // ends every stream
  impl_->http_server.reset();     // its handlers have returned (their streams ended)
  impl_->group->Stop();
  impl_->server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  if (impl_->rendezvous_server != nullptr) {
    impl_->rendezvous_server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  }
}

}  // namespace llmint8::coordinator
