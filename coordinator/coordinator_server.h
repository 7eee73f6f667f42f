// The coordinator process: one gRPC server carrying the public Generation service, the
// Rendezvous its workers form groups through, grpc.health.v1 (SERVING only while the worker
// group is ready) and server reflection; plus the WorkerGroup and the Scheduler behind them, and
// optionally a Prometheus /metrics endpoint and an OpenAI-compatible HTTP API (HTTP servers of
// their own).
#ifndef LLMINT8_COORDINATOR_COORDINATOR_SERVER_H_
#define LLMINT8_COORDINATOR_COORDINATOR_SERVER_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/tls.h"
#include "coordinator/scheduler.h"
#include "coordinator/worker_group.h"
#include "model/config.h"

namespace llmint8::coordinator {

// How long a client has to answer the coordinator's keepalive ping (at most).
inline constexpr absl::Duration kClientPingTimeout = absl::Seconds(10);

// Where workers on this host reach a rendezvous listening on `listen` (host:port) at `port`,
// when no --advertise says: 127.0.0.1 when it listens on every address (0.0.0.0, ::, or no
// host), else that address ("[::1]:50051" for an IPv6 one): 127.0.0.1 would find nothing there.
std::string LocalRendezvousAddress(const std::string& listen, int port);

struct CoordinatorOptions {
  std::string listen = "0.0.0.0:50051";  // port 0 picks a free port (see port())
  // Address workers reach the rendezvous at; default 127.0.0.1:<port> (one host; the
  // rendezvous port when rendezvous_listen is set).
  std::string advertise;
  // host:port of a second gRPC port that serves only the workers' Rendezvous (NCCL unique id,
  // Gloo store), with the same TLS; the --listen port then no longer does, so a network policy
  // can keep it to the workers while clients reach --listen. Empty: --listen serves both.
  std::string rendezvous_listen;
  // addresses, model, dtype, backend, group policy and plan reserve. With fp16 / int8 the
  // scheduler's KV budget (when 0) and prefill tokens per step are capped at the plan's reserve,
  // group.reserve_sequences x max_context tokens.
  WorkerGroupOptions group;
  SchedulerOptions scheduler;       // max_context / eos are filled from the model
  int64_t max_context = 0;          // 0: the model's max_position_embeddings
  int max_message_bytes = 4 << 20;  // larger requests get RESOURCE_EXHAUSTED
  // Chat completions that set no max_completion_tokens / max_tokens generate up to this many
  // tokens (0: to the end of the context; with Preemption::kOff each reserves KV room for its
  // whole limit).
  int32_t default_max_tokens = 0;
  // Compiled guided_regex / guided_json guides kept for later requests (guide_cache.h).
  size_t guide_cache_entries = 16;
  // host:port for Prometheus metrics (coordinator/metrics.h) at /metrics; empty: none.
  std::string metrics_listen;
  // host:port for the OpenAI-compatible HTTP API (coordinator/http_api.h); empty: none.
  std::string http_listen;
  // The model's id in the HTTP API (vLLM's --served-model-name); empty: openai::ModelId of
  // group.model. 1 to 256 bytes of UTF-8, no spaces or control characters.
  std::string served_model_name;
  // TLS on the gRPC port (Generation, health, reflection, and the workers' rendezvous) and
  // the HTTP API, with client certificates when tls.client_ca_file is set (common/tls.h).
  // Metrics stay plain HTTP (scraped inside the cluster).
  TlsServerConfig tls;
  // TLS to the workers' Worker service when workers_tls.ca_file is set (the roots of their
  // certificates), presenting workers_tls.cert_file to workers that ask for a client
  // certificate; plaintext otherwise.
  TlsClientConfig workers_tls;
  // Clients must send "authorization: Bearer <api_key>" when non-empty (coordinator/api_key.h);
  // the binary reads it from LLMINT8_API_KEY.
  std::string api_key;
  // Shutdown serves what is queued and running for up to this long (health NOT_SERVING, new
  // requests UNAVAILABLE) before it fails what is left.
  absl::Duration drain_timeout = absl::Seconds(20);
  // A connection with requests open is pinged after this long without a frame from its
  // client; one that does not answer within kClientPingTimeout (or this, if shorter) is cut
  // off, and its requests end CANCELLED, freeing their queue slots and sequences. A client
  // host that vanished sends no reset, and a stream that only receives would otherwise wait
  // for TCP to give up (many minutes). Clamped to at least 1 ms.
  absl::Duration client_keepalive = absl::Seconds(30);
  // A log line per finished request: id, status, finish reason, token counts, queue /
  // first-token / total time (coordinator/request_log.h); never the text.
  bool log_requests = true;
  // A tokenizer.json file or a directory with vocab.json + merges.txt (or tokenizer.json);
  // default: the model directory's, when it has one.
  std::string tokenizer;
  // The model's generation_config.json (coordinator/generation_defaults.h): "auto" (the model
  // directory's, when it has one), "none", or a file or directory. Its eos_token_id list ends
  // every sequence; its sampling fields are the OpenAI API's defaults.
  std::string generation_config = "auto";
  // Fields that replace the file's, as a generation_config.json's text (vLLM's
  // --override-generation-config); empty: none.
  std::string override_generation_config;
};

// The model's config, if the workers of `options.group` can split it (their number is a
// valid TP degree, or with --group=smallest at least the smallest one) and its
// generation_config.json reads; else the error Start would give. Reads those two files only:
// `serve` calls it before it starts its workers.
absl::StatusOr<model::OptConfig> CheckModelForGroup(const CoordinatorOptions& options);

class CoordinatorServer {
 public:
  // Opens the model's config (and tokenizer when the model directory has one), starts
  // listening, and starts forming the worker group in the background.
  static absl::StatusOr<std::unique_ptr<CoordinatorServer>> Start(CoordinatorOptions options);
  ~CoordinatorServer();  // Shutdown()

  int port() const;
  int metrics_port() const;            // 0 without metrics_listen
  int http_port() const;               // 0 without http_listen
  int rendezvous_port() const;         // the port serving the Rendezvous (port() without
                                       // rendezvous_listen)
  const std::string& address() const;  // host:port as clients on this host reach it
  void Wait();                         // until Shutdown (from another thread)
  // Whether the worker group serves now; why it refuses to form (the workers cannot hold or
  // load the model: FailedPrecondition), OK when it does not (coordinator/worker_group.h).
  bool ready() const;
  absl::Status refusal() const;
  // Drains (see drain_timeout), then stops serving. Idempotent.
  void Shutdown();
  // Ends a Shutdown's drain now (from another thread): what is queued or running fails
  // UNAVAILABLE. For a second shutdown signal.
  void EndDrain();

 private:
  struct Impl;
  explicit CoordinatorServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace llmint8::coordinator

#endif  // LLMINT8_COORDINATOR_COORDINATOR_SERVER_H_
