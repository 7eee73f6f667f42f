// The coordinator's Prometheus metrics (prometheus-cpp's registry and text format), served at
// http://<--metrics_listen>/metrics (coordinator/metrics_server.h) when the coordinator is
// started with that flag.
//
//   llmint8_requests_total{code}              sequences (prompt x n; a call refused before
//                                             any was queued: 1) by final gRPC status code
//   llmint8_requests_finished_total{reason}   streams that finished: length, stop, eos,
//                                             cancelled (a queued stream its client
//                                             cancelled or whose deadline passed) (every
//                                             code and reason from 0)
//   llmint8_prompt_tokens_total               prompt tokens of queued requests
//   llmint8_generated_tokens_total            tokens streamed to clients
// The histograms below observe the streams that ran to their end (length, stop, eos).
//   llmint8_request_queue_seconds             arrival -> admitted to a batch      (histogram)
//   llmint8_time_to_first_token_seconds       arrival -> first token (a prompt only
//                                             scored has none)                    (histogram)
//   llmint8_request_duration_seconds          arrival -> last token               (histogram)
//   llmint8_time_per_output_token_seconds     first -> last token over the tokens after the
//                                             first, per stream of 2 or more      (histogram)
//   llmint8_step_seconds                      one batch step on every worker      (histogram)
//   llmint8_step_batch_size                   sequences in a step                 (histogram)
//   llmint8_guided_mask_seconds               the scheduler's time finding a step's allowed
//                                             tokens for its guided sequences, per step
//                                             with one (guided decoding)          (histogram)
//   llmint8_guide_cache_lookups_total{result} guided_regex / guided_json lookups in the kept
//                                             compiled guides: hit, miss (guide_cache.h)
//                                                                                 (counter)
//   llmint8_scheduler_steps_total             batch steps sent to the workers     (counter)
//   llmint8_preemptions_total                 running sequences preempted for KV room (or
//                                             by priority, for a request of a higher
//                                             one; or their group lost, with
//                                             --resume_on_group_loss), to be prefilled
//                                             again later (scheduler.h)
//                                                                                 (counter)
//   llmint8_spec_decode_draft_tokens_total    draft tokens sent with generating sequences
//                                             (speculative decoding by prompt lookup)
//   llmint8_spec_decode_accepted_tokens_total of them, those rank 0 accepted: tokens that
//                                             took no step of their own        (counters)
//   llmint8_queued_requests, llmint8_running_sequences,
//   llmint8_worker_group_ready, llmint8_worker_group_size, llmint8_worker_group_epoch,
//   llmint8_kv_reserved_positions, llmint8_kv_budget_positions, llmint8_draining
//                                             (gauges)
// The last nine are read from the scheduler and the server when scraped.
//
// Thread-safe: records come from gRPC handler threads and the scheduler thread.
#ifndef LLMINT8_COORDINATOR_METRICS_H_
#define LLMINT8_COORDINATOR_METRICS_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "llmint8/v1/generation.pb.h"
#include "prometheus/collectable.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace llmint8::coordinator {

// What the gauges show, read at each scrape.
struct LiveState {
  int queued = 0;
  int running = 0;
  uint64_t steps = 0;
  bool group_ready = false;
  int group_size = 0;
  int64_t group_epoch = 0;
  int64_t kv_reserved = 0;
  int64_t kv_budget = 0;
  int64_t prefix_cached = 0;        // KV positions parked sequences hold (prefix cache)
  int prefix_cached_sequences = 0;  // parked sequences
  uint64_t prefix_hit_tokens = 0;   // prompt positions copied from the prefix cache
  bool draining = false;
  // Workers by state (coordinator/worker_group.h WorkerStateName), every state present.
  std::vector<std::pair<std::string, int>> workers;
};

// One finished Generate call.
struct RequestRecord {
  absl::StatusCode code = absl::StatusCode::kOk;
  int64_t prompt_tokens = 0;     // 0 unless the request was queued
  int64_t generated_tokens = 0;  // tokens streamed, also of a cancelled or failed stream
  // The stream's last message when it finished normally (finish reason, timings).
  std::optional<v1::GenerateResponse> final_message;
  uint64_t sequence_id = 0;  // 0: refused before it was queued
  std::string request_id = {};  // the client's (x-request-id), sanitized; may be empty
  int32_t preemptions = 0;      // times preempted (scheduler.h)
  int32_t draft_tokens = 0;     // speculative decoding: draft tokens sent with it
  int32_t accepted_draft_tokens = 0;  // of them, those that became its output
  int32_t priority = 0;         // GenerateRequest.priority
};

// "length", "stop", "eos", "cancelled" ("" for UNSPECIFIED): the metrics' reason label.
std::string FinishReasonLabel(v1::FinishReason reason);

class ServiceMetrics {
 public:
  // `live` is called at every scrape (from the metrics server thread); it must be thread-safe.
  explicit ServiceMetrics(std::function<LiveState()> live);

  void RecordRequest(const RequestRecord& r);
  void RecordStep(int batch_size, absl::Duration duration);
  void RecordGuidedMasks(absl::Duration duration);
  void RecordGuideLookup(bool hit);
  void RecordPreemptions(int count);
  void RecordSpeculation(int64_t drafts, int64_t accepted);

  // The recorded metrics and the scrape-time gauges in the Prometheus text format: what
  // /metrics returns (coordinator/metrics_server.h).
  std::string Text() const;

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  std::shared_ptr<prometheus::Collectable> live_;
  prometheus::Family<prometheus::Counter>& requests_;
  prometheus::Family<prometheus::Counter>& finished_;
  prometheus::Counter& prompt_tokens_;
  prometheus::Counter& generated_tokens_;
  prometheus::Histogram& queue_seconds_;
  prometheus::Histogram& first_token_seconds_;
  prometheus::Histogram& duration_seconds_;
  prometheus::Histogram& per_output_token_seconds_;
  prometheus::Histogram& step_seconds_;
  prometheus::Histogram& batch_size_;
  prometheus::Histogram& guided_mask_seconds_;
  prometheus::Family<prometheus::Counter>& guide_lookups_;
  prometheus::Counter& guide_hits_;
  prometheus::Counter& guide_misses_;
  prometheus::Counter& preemptions_;
  prometheus::Counter& draft_tokens_;
  prometheus::Counter& accepted_tokens_;
};

}  // namespace llmint8::coordinator

#endif  // LLMINT8_COORDINATOR_METRICS_H_
