// The public Generation gRPC service (proto/llmint8/v1/generation.proto): validates and
// tokenizes requests, queues them on the Scheduler and streams each sequence's tokens back.
// A client that cancels, or whose deadline passes, has its sequence freed at the next step
// boundary (the handler notices within ~50 ms). AdmitAll() + FollowAll() are the same call
// without gRPC, for the HTTP API (coordinator/http_api.h).
//
// Thread-safe: gRPC runs each call on its own thread.
#ifndef LLMINT8_COORDINATOR_GENERATION_SERVICE_H_
#define LLMINT8_COORDINATOR_GENERATION_SERVICE_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "coordinator/api_key.h"
#include "coordinator/guide_cache.h"
#include "coordinator/metrics.h"
#include "coordinator/output_constraint.h"
#include "coordinator/request_validation.h"
#include "coordinator/scheduler.h"
#include "coordinator/tokenizer.h"
#include "coordinator/worker_group.h"
#include "llmint8/v1/generation.grpc.pb.h"
#include "model/config.h"

namespace llmint8::coordinator {

// The gRPC metadata key / HTTP header of a client's request id ("x-request-id"): logged with
// each of the request's sequences (request_log.h) and sent back (initial metadata / header).
inline constexpr char kRequestIdKey[] = "x-request-id";

class GenerationService final : public v1::Generation::Service {
 public:
  struct Options {
    int32_t max_batch = 1;              // what GetModelInfo reports
    int32_t queue_capacity = 1;         // the most sequences one call may ask for
    ServiceMetrics* metrics = nullptr;  // null: none
    const ApiKey* api_key = nullptr;    // null: no authentication
    bool log_requests = false;          // a log line per finished sequence (request_log.h)
    // The most tokens a `fill_context` request without a max_new_tokens of its own generates
    // (0: up to the end of the context). With Preemption::kOff each running sequence reserves
    // KV room for its whole limit, so this bounds what a chat request without
    // max_completion_tokens holds.
    int32_t default_max_tokens = 0;
    // GetModelInfo's eos_token_ids (empty: the config's eos_token_id) and generation_defaults.
    std::vector<int32_t> eos_token_ids;
    v1::GenerationDefaults generation_defaults;
    // Compiled guided_regex / guided_json guides kept for later requests (guide_cache.h).
    size_t guide_cache_entries = 16;
  };
  // `tokenizer` may be null (token-id prompts only). All pointers outlive the service.
  GenerationService(model::OptConfig config, const Tokenizer* tokenizer, ModelLimits limits,
                    Scheduler* scheduler, WorkerGroup* group, Options options);

  grpc::Status Generate(grpc::ServerContext* ctx, const v1::GenerateRequest* req,
                        grpc::ServerWriter<v1::GenerateResponse>* writer) override;
  grpc::Status Tokenize(grpc::ServerContext* ctx, const v1::TokenizeRequest* req,
                        v1::TokenizeResponse* resp) override;
  grpc::Status GetModelInfo(grpc::ServerContext* ctx, const v1::GetModelInfoRequest* req,
                            v1::ModelInfo* resp) override;

  // Generate for any transport, in two halves so an HTTP server can answer a refused request
  // with its status before it starts a stream. A call may ask for several sequences (the
  // OpenAI API's prompt batches and `n`), all admitted or none:
  //   AdmitAll   validates, tokenizes and queues `n` sequences for each of `prompts`
  //              (requests of which only the prompt is read), all with the parameters of
  //              `params` (its prompt is not read), until `deadline` (`request_id`: the
  //              client's id for the call, SanitizeRequestId'd, for the request log), in
  //              prompt-major order: sequence i * n + j is prompt i's j-th, and samples with
  //              the request's seed + j (each prompt's first sequence is what a request of
  //              that prompt alone gives). More sequences than the queue holds are
  //              INVALID_ARGUMENT; no room for all of them now, RESOURCE_EXHAUSTED. A refused
  //              call is recorded as one request and its status returned. With
  //              `fill_context` each prompt's sequences may generate up to the end of the
  //              context, or params' max_new_tokens when > 0, else options'
  //              default_max_tokens (params' max_new_tokens is then replaced by what the
  //              prompt, once tokenized, leaves of that). `probe` (optional)
  //              tells the scheduler when the client has gone, to free a full queue's places
  //              at once.
  //   FollowAll  streams AdmitAll's sequences together (waiting on the OutputSignal they
  //              share): hands each response to `write` with its sequence's index, in the
  //              order they come (false: the client is gone), polls `gone` every ~50 ms
  //              (true: the client cancelled) and stops at the deadline
  //              (DEADLINE_EXCEEDED); the first sequence to fail ends the call with its
  //              status, and any end but all sequences finishing cancels the rest; each
  //              sequence is recorded as a request.
  //   AbandonAll for admitted sequences whose client left before FollowAll began (or whose
  //              stream failed in the middle, with the error as `why`): cancels them and
  //              records them with `why`.
  absl::StatusOr<std::vector<std::shared_ptr<Sequence>>> AdmitAll(
      const v1::GenerateRequest& params, std::span<const v1::GenerateRequest> prompts, int32_t n,
      absl::Time deadline, std::string_view request_id, bool fill_context = false,
      const std::shared_ptr<ClientProbe>& probe = nullptr);
  absl::Status FollowAll(
      std::span<const std::shared_ptr<Sequence>> seqs,
      const std::function<bool(size_t index, const v1::GenerateResponse&)>& write,
      const std::function<bool()>& gone);
  void AbandonAll(std::span<const std::shared_ptr<Sequence>> seqs,
                  const absl::Status& why =
                      absl::CancelledError("the client went away before its stream began"));
  // A generation call refused before AdmitAll (UNAUTHENTICATED: no API key): recorded as one
  // request, as AdmitAll records the calls it refuses.
  void RecordRefused(const absl::Status& status, std::string_view request_id);

  // The served model's tokenizer; null when it was served without one.
  const Tokenizer* tokenizer() const { return tokenizer_; }
  const ModelLimits& limits() const { return limits_; }

 private:
  // AdmitAll + FollowAll of one sequence (Generate's body).
  absl::Status Run(const v1::GenerateRequest& req, absl::Time deadline, std::string_view request_id,
                   const std::function<bool(const v1::GenerateResponse&)>& write,
                   const std::function<bool()>& gone);
  // The sequences of one prompt (`prompt_holder`'s) with the validated `params`: `n` of them,
  // seeds params.seed + j; with `fill_context`, max_new_tokens at most what the prompt leaves
  // (and min_tokens at most that).
  absl::Status MakeSequences(GenerationParams params, const v1::GenerateRequest& prompt_holder,
                             int32_t n, bool fill_context,
                             std::vector<std::shared_ptr<Sequence>>& out);
  // FollowAll without the metrics: fills `records` (tokens, the final message) as it streams
  // and `finals` with the status of each sequence that ended.
  absl::Status Stream(std::span<const std::shared_ptr<Sequence>> seqs,
                      const std::function<bool(size_t, const v1::GenerateResponse&)>& write,
                      const std::function<bool()>& gone, std::vector<RequestRecord>& records,
                      std::vector<std::optional<absl::Status>>& finals);
  // Counts the request in the metrics and logs it (Options::log_requests).
  void Record(const absl::Status& status, RequestRecord& record);
  // OK, or UNAUTHENTICATED when the call lacks the API key (coordinator/api_key.h).
  absl::Status Authorize(const grpc::ServerContext& ctx) const;

  const model::OptConfig config_;
  const Tokenizer* const tokenizer_;
  const ModelLimits limits_;
  Scheduler* const scheduler_;
  WorkerGroup* const group_;
  // The tokenizer's token bytes for guided decoding, made by the first guided request.
  std::shared_ptr<const TokenVocabulary> Vocabulary();

  const Options options_;
  std::atomic<uint64_t> next_seq_id_{1};
  absl::Mutex vocabulary_mu_;
  std::shared_ptr<const TokenVocabulary> vocabulary_ ABSL_GUARDED_BY(vocabulary_mu_);
  GuideCache guides_;
};

}  // namespace llmint8::coordinator

#endif  // LLMINT8_COORDINATOR_GENERATION_SERVICE_H_
