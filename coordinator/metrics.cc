#include "coordinator/metrics.h"

#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "prometheus/client_metric.h"
#include "prometheus/metric_family.h"
#include "prometheus/text_serializer.h"

namespace llmint8::coordinator {
namespace {

using prometheus::BuildCounter;
using prometheus::BuildHistogram;
using prometheus::Histogram;
using prometheus::MetricFamily;

// Request latencies: 5 ms .. 2 min.
const Histogram::BucketBoundaries& LatencyBuckets() {
  static const auto* b = new Histogram::BucketBoundaries{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                                         1,     2.5,  5,     10,   30,  60,   120};
  return *b;
}

// One batch step (a decode step is the inter-token latency), and the time per output token:
// 1 ms .. 5 s.
const Histogram::BucketBoundaries& StepBuckets() {
  static const auto* b = new Histogram::BucketBoundaries{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                         0.1,   0.25,   0.5,   1,    2.5,   5};
  return *b;
}

// The scans of guided decoding: 0.1 ms .. 1 s.
const Histogram::BucketBoundaries& MaskBuckets() {
  static const auto* b = new Histogram::BucketBoundaries{
      0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1};
  return *b;
}

const Histogram::BucketBoundaries& BatchBuckets() {
  static const auto* b = new Histogram::BucketBoundaries{1, 2, 4, 8, 16, 32, 64, 128, 256};
  return *b;
}

class LiveGauges : public prometheus::Collectable {
 public:
  explicit LiveGauges(std::function<LiveState()> live) : live_(std::move(live)) {}

  std::vector<MetricFamily> Collect() const override {
    const LiveState s = live_();
    std::vector<MetricFamily> out;
    auto add = [&out](prometheus::MetricType type, const char* name, const char* help,
                      double value) {
      MetricFamily f;
      f.name = name;
      f.help = help;
      f.type = type;
      if (type == prometheus::MetricType::Counter) {
        f.metric.emplace_back().counter.value = value;
      } else {
        f.metric.emplace_back().gauge.value = value;
      }
      out.push_back(std::move(f));
    };
    auto gauge = [&add](const char* name, const char* help, double value) {
      add(prometheus::MetricType::Gauge, name, help, value);
    };
    gauge("llmint8_queued_requests", "Requests waiting for a batch slot", s.queued);
    gauge("llmint8_running_sequences", "Sequences in the running batch", s.running);
    add(prometheus::MetricType::Counter, "llmint8_scheduler_steps_total",
        "Batch steps sent to the workers since start", static_cast<double>(s.steps));
    gauge("llmint8_worker_group_ready", "1 while the worker group serves, else 0",
          s.group_ready ? 1 : 0);
    gauge("llmint8_worker_group_size", "Workers (tensor-parallel ranks) in the group",
          s.group_size);
    gauge("llmint8_worker_group_epoch",
          "Times a worker group has been formed or tried (its epoch; a failed try counts)",
          static_cast<double>(s.group_epoch));
    gauge("llmint8_kv_reserved_positions",
          "KV cache positions the running sequences hold after the coming step (with "
          "--preemption=off: prompt + max_new_tokens each), and finished first choices that "
          "later choices still copy",
          static_cast<double>(s.kv_reserved));
    gauge("llmint8_kv_budget_positions",
          "KV cache positions the scheduler admits up to (what the workers can hold)",
          static_cast<double>(s.kv_budget));
    gauge("llmint8_prefix_cache_positions",
          "KV cache positions finished sequences keep for prompts that start alike",
          static_cast<double>(s.prefix_cached));
    gauge("llmint8_prefix_cache_sequences",
          "Finished sequences whose KV cache the workers keep (the prefix cache)",
          s.prefix_cached_sequences);
    add(prometheus::MetricType::Counter, "llmint8_prefix_cache_hit_tokens_total",
        "Prompt tokens copied from a cached prefix (a finished or running sequence's, or "
        "the first choice's of n) instead of prefilled",
        static_cast<double>(s.prefix_hit_tokens));
    gauge("llmint8_draining", "1 while shutting down (serving what is left, refusing new)",
          s.draining ? 1 : 0);
    MetricFamily workers;
    workers.name = "llmint8_workers";
    workers.help =
        "Workers by state: serving (group member), idle (spare), draining (shutting down), "
        "held_by_another (another coordinator's group has it), loading (still loading the shard "
        "of a group that broke), not_answering";
    workers.type = prometheus::MetricType::Gauge;
    for (const auto& [state, count] : s.workers) {
      prometheus::ClientMetric& m = workers.metric.emplace_back();
      m.label.push_back({"state", state});
      m.gauge.value = count;
    }
    out.push_back(std::move(workers));
    return out;
  }

 private:
  std::function<LiveState()> live_;
};

}  // namespace

std::string FinishReasonLabel(v1::FinishReason reason) {
  std::string name = v1::FinishReason_Name(reason);
  constexpr std::string_view kPrefix = "FINISH_REASON_";
  if (reason == v1::FINISH_REASON_UNSPECIFIED || name.rfind(kPrefix, 0) != 0) return "";
  return absl::AsciiStrToLower(name.substr(kPrefix.size()));
}

ServiceMetrics::ServiceMetrics(std::function<LiveState()> live)
    : registry_(std::make_shared<prometheus::Registry>()),
      live_(std::make_shared<LiveGauges>(std::move(live))),
      requests_(BuildCounter()
                    .Name("llmint8_requests_total")
                    .Help("Generated sequences by final gRPC status code (one per prompt and "
                          "choice: an OpenAI request of 2 prompts with n 3 counts 6; a call "
                          "refused before any was queued counts 1)")
                    .Register(*registry_)),
      finished_(BuildCounter()
                    .Name("llmint8_requests_finished_total")
                    .Help("Generate streams that finished, by finish reason")
                    .Register(*registry_)),
      prompt_tokens_(BuildCounter()
                         .Name("llmint8_prompt_tokens_total")
                         .Help("Prompt tokens of the requests that were queued")
                         .Register(*registry_)
                         .Add({})),
      generated_tokens_(BuildCounter()
                            .Name("llmint8_generated_tokens_total")
                            .Help("Tokens streamed to clients")
                            .Register(*registry_)
                            .Add({})),
      queue_seconds_(BuildHistogram()
                         .Name("llmint8_request_queue_seconds")
                         .Help("Time from arrival until the request joined a batch")
                         .Register(*registry_)
                         .Add({}, LatencyBuckets())),
      first_token_seconds_(BuildHistogram()
                               .Name("llmint8_time_to_first_token_seconds")
                               .Help("Time from arrival to the first generated token")
                               .Register(*registry_)
                               .Add({}, LatencyBuckets())),
      duration_seconds_(BuildHistogram()
                            .Name("llmint8_request_duration_seconds")
                            .Help("Time from arrival to the last generated token")
                            .Register(*registry_)
                            .Add({}, LatencyBuckets())),
      per_output_token_seconds_(BuildHistogram()
                                    .Name("llmint8_time_per_output_token_seconds")
                                    .Help("Time from a stream's first to its last token over "
                                          "the tokens after the first (streams of 2 or more)")
                                    .Register(*registry_)
                                    .Add({}, StepBuckets())),
      step_seconds_(BuildHistogram()
                        .Name("llmint8_step_seconds")
                        .Help("One batch step on every worker (prefill and/or one decode "
                              "token per sequence)")
                        .Register(*registry_)
                        .Add({}, StepBuckets())),
      batch_size_(BuildHistogram()
                      .Name("llmint8_step_batch_size")
                      .Help("Sequences in a batch step")
                      .Register(*registry_)
                      .Add({}, BatchBuckets())),
      guided_mask_seconds_(BuildHistogram()
                               .Name("llmint8_guided_mask_seconds")
                               .Help("The scheduler's time finding a step's allowed tokens for "
                                     "its guided sequences, per step with one")
                               .Register(*registry_)
                               .Add({}, MaskBuckets())),
      guide_lookups_(BuildCounter()
                         .Name("llmint8_guide_cache_lookups_total")
                         .Help("Guided requests' regex or JSON schema lookups in the kept "
                               "compiled guides: hit (kept) or miss (compiled)")
                         .Register(*registry_)),
      guide_hits_(guide_lookups_.Add({{"result", "hit"}})),
      guide_misses_(guide_lookups_.Add({{"result", "miss"}})),
      preemptions_(BuildCounter()
                       .Name("llmint8_preemptions_total")
                       .Help("Running sequences preempted to make KV cache room for others "
                             "(or, scheduling by priority, a batch slot for a request of a "
                             "higher priority; or, with --resume_on_group_loss, because their "
                             "worker group was lost): their cache dropped, their prompt and "
                             "output prefilled again when they are admitted again")
                       .Register(*registry_)
                       .Add({})),
      draft_tokens_(BuildCounter()
                        .Name("llmint8_spec_decode_draft_tokens_total")
                        .Help("Draft tokens sent with generating sequences (speculative "
                              "decoding by prompt lookup, --speculative_tokens)")
                        .Register(*registry_)
                        .Add({})),
      accepted_tokens_(BuildCounter()
                           .Name("llmint8_spec_decode_accepted_tokens_total")
                           .Help("Draft tokens the workers accepted: generated tokens that "
                                 "took no step of their own")
                           .Register(*registry_)
                           .Add({})) {
  // Every series at 0 from the start: a rate over the first error of a kind sees it (a series
  // that appears at 1 has no increase).
  for (int code = 0; code <= static_cast<int>(absl::StatusCode::kUnauthenticated); ++code) {
    requests_.Add({{"code", absl::StatusCodeToString(static_cast<absl::StatusCode>(code))}});
  }
  for (int reason = v1::FinishReason_MIN; reason <= v1::FinishReason_MAX; ++reason) {
    if (!v1::FinishReason_IsValid(reason)) continue;
    const std::string label = FinishReasonLabel(static_cast<v1::FinishReason>(reason));
    if (!label.empty()) finished_.Add({{"reason", label}});
  }
}

void ServiceMetrics::RecordRequest(const RequestRecord& r) {
  requests_.Add({{"code", absl::StatusCodeToString(r.code)}}).Increment();
  prompt_tokens_.Increment(static_cast<double>(r.prompt_tokens));
  generated_tokens_.Increment(static_cast<double>(r.generated_tokens));
  if (!r.final_message.has_value()) {
    // A queued stream the client cancelled or let its deadline end finished "cancelled" (it
    // has no last message; the histograms are of streams that ran to their end).
    const bool queued = r.prompt_tokens > 0;
    if (queued &&
        (r.code == absl::StatusCode::kCancelled || r.code == absl::StatusCode::kDeadlineExceeded)) {
      finished_.Add({{"reason", FinishReasonLabel(v1::FINISH_REASON_CANCELLED)}}).Increment();
    }
    return;
  }
  const std::string reason = FinishReasonLabel(r.final_message->finish_reason());
  if (!reason.empty()) finished_.Add({{"reason", reason}}).Increment();
  const v1::Timings& t = r.final_message->timings();
  queue_seconds_.Observe(t.queue_ms() / 1e3);
  // A prompt only scored (max_new_tokens 0: echo) has no first token.
  if (r.generated_tokens > 0) first_token_seconds_.Observe(t.time_to_first_token_ms() / 1e3);
  duration_seconds_.Observe(t.total_ms() / 1e3);
  if (r.generated_tokens >= 2) {
    per_output_token_seconds_.Observe((t.total_ms() - t.time_to_first_token_ms()) / 1e3 /
                                      static_cast<double>(r.generated_tokens - 1));
  }
}

void ServiceMetrics::RecordStep(int batch_size, absl::Duration duration) {
  step_seconds_.Observe(absl::ToDoubleSeconds(duration));
  batch_size_.Observe(batch_size);
}

void ServiceMetrics::RecordGuidedMasks(absl::Duration duration) {
  guided_mask_seconds_.Observe(absl::ToDoubleSeconds(duration));
}

void ServiceMetrics::RecordGuideLookup(bool hit) {
  (hit ? guide_hits_ : guide_misses_).Increment();
}

void ServiceMetrics::RecordPreemptions(int count) {
  preemptions_.Increment(static_cast<double>(count));
}

void ServiceMetrics::RecordSpeculation(int64_t drafts, int64_t accepted) {
  draft_tokens_.Increment(static_cast<double>(drafts));
  accepted_tokens_.Increment(static_cast<double>(accepted));
}

std::string ServiceMetrics::Text() const {
  std::vector<MetricFamily> families = registry_->Collect();
  for (MetricFamily& f : live_->Collect()) families.push_back(std::move(f));
  return prometheus::TextSerializer().Serialize(families);
}

}  // namespace llmint8::coordinator
