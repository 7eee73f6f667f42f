#include "coordinator/generation_service.h"

#include <algorithm>
#include <chrono>
#include <utility>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "common/grpc_status.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "coordinator/request_log.h"
#include "coordinator/tokenizer_text_stream.h"

namespace llmint8::coordinator {
namespace {

constexpr absl::Duration kPollInterval = absl::Milliseconds(50);

}  // namespace

GenerationService::GenerationService(model::OptConfig config, const Tokenizer* tokenizer,
                                     ModelLimits limits, Scheduler* scheduler, WorkerGroup* group,
                                     Options options)
    : config_(std::move(config)),
      tokenizer_(tokenizer),
      limits_(limits),
      scheduler_(scheduler),
      group_(group),
      options_(options),
      guides_(options.guide_cache_entries, options.metrics) {}

absl::Status GenerationService::Authorize(const grpc::ServerContext& ctx) const {
  if (options_.api_key == nullptr || !options_.api_key->required()) return absl::OkStatus();
  const auto it = ctx.client_metadata().find("authorization");
  return options_.api_key->Check(it == ctx.client_metadata().end()
                                     ? std::string_view()
                                     : std::string_view(it->second.data(), it->second.size()));
}

absl::Status GenerationService::MakeSequences(GenerationParams params,
                                              const v1::GenerateRequest& prompt_holder, int32_t n,
                                              bool fill_context,
                                              std::vector<std::shared_ptr<Sequence>>& out) {
  if (absl::Status input = ValidatePromptInput(prompt_holder, limits_); !input.ok()) {
    return input;
  }
  std::vector<int32_t> prompt;
  const bool text = prompt_holder.prompt_case() == v1::GenerateRequest::kText;
  if (text) {
    absl::StatusOr<std::vector<int32_t>> ids =
        tokenizer_->Encode(prompt_holder.text(), /*add_bos=*/tokenizer_->bos_id().has_value());
    if (!ids.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("the prompt text could not be tokenized: ", ids.status().message()));
    }
    prompt = *std::move(ids);
  } else {
    prompt.assign(prompt_holder.token_ids().ids().begin(), prompt_holder.token_ids().ids().end());
  }
  if (params.truncate_prompt_tokens > 0 &&
      prompt.size() > static_cast<size_t>(params.truncate_prompt_tokens)) {
    // A text prompt keeps the BOS its encoding put first, as a tokenizer truncating from the
    // left keeps its special tokens (vLLM's text prompts); token ids are cut as they are.
    const size_t keep_first = text && tokenizer_->bos_id().has_value() ? 1 : 0;
    const size_t keep_last = static_cast<size_t>(params.truncate_prompt_tokens) - keep_first;
    prompt.erase(prompt.begin() + static_cast<std::ptrdiff_t>(keep_first),
                 prompt.end() - static_cast<std::ptrdiff_t>(keep_last));
  }
  if (fill_context) {  // at least 1, so a prompt that fills the context is refused as too long
    const int64_t left = limits_.max_context - static_cast<int64_t>(prompt.size());
    params.max_new_tokens =
        static_cast<int32_t>(std::max<int64_t>(1, std::min<int64_t>(params.max_new_tokens, left)));
    // The client asked for a minimum, not for this limit: the context's end comes first.
    params.min_tokens = std::min(params.min_tokens, params.max_new_tokens);
  }
  if (absl::Status valid = ValidatePromptTokens(prompt, params, limits_); !valid.ok()) {
    return valid;
  }
  std::shared_ptr<const TokenVocabulary> vocabulary;
  if (params.guided()) {
    if (tokenizer_ == nullptr) {
      return absl::FailedPreconditionError(
          "guided decoding needs the model's tokenizer, and this model was served without one");
    }
    vocabulary = Vocabulary();
  }
  // Choices after the first start from its cached prompt, all but the last token (which
  // gives each its own first logits), when they sample at all and need no prompt scores.
  const bool share_prompt =
      n > 1 && prompt.size() >= 2 && params.max_new_tokens > 0 && !params.prompt_logprobs;
  const size_t first = out.size();
  for (int32_t j = 0; j < n; ++j) {
    GenerationParams p = params;
    p.seed += static_cast<uint64_t>(j);  // wraps: any seed is valid
    std::unique_ptr<TokenTextStream> text;
    if (tokenizer_ != nullptr) text = std::make_unique<TokenizerTextStream>(*tokenizer_);
    out.push_back(std::make_shared<Sequence>(next_seq_id_.fetch_add(1), prompt, std::move(p),
                                             std::move(text)));
    if (share_prompt && j > 0) out.back()->set_prefix_source(out[first]);
    if (vocabulary != nullptr) {
      std::unique_ptr<OutputConstraint> guide;
      if (params.guided_json_object) {
        guide = OutputConstraint::JsonObject();
      } else if (params.guided_regex != nullptr) {
        guide = params.guided_regex->NewConstraint(params.guided_regex, params.guided_work);
      } else {
        ASSIGN_OR_RETURN(guide, OutputConstraint::Choice(params.guided_choice));
      }
      out.back()->set_guide(std::move(guide), vocabulary);
    }
  }
  return absl::OkStatus();
}

std::shared_ptr<const TokenVocabulary> GenerationService::Vocabulary() {
  absl::MutexLock lock(&vocabulary_mu_);
  if (vocabulary_ == nullptr) {
    vocabulary_ =
        std::make_shared<const TokenVocabulary>(TokenVocabulary::FromTokenizer(*tokenizer_));
  }
  return vocabulary_;
}

grpc::Status GenerationService::Generate(grpc::ServerContext* ctx, const v1::GenerateRequest* req,
                                         grpc::ServerWriter<v1::GenerateResponse>* writer) {
  // The client's request id, if it sent one: logged with the request and sent back.
  std::string request_id;
  if (auto it = ctx->client_metadata().find(kRequestIdKey); it != ctx->client_metadata().end()) {
    request_id = SanitizeRequestId(std::string_view(it->second.data(), it->second.size()));
    ctx->AddInitialMetadata(kRequestIdKey, request_id);
  }
  if (absl::Status auth = Authorize(*ctx); !auth.ok()) {
    RecordRefused(auth, request_id);
    return ToGrpcStatus(auth);
  }
  const absl::Time deadline = ctx->deadline() == std::chrono::system_clock::time_point::max()
                                  ? absl::InfiniteFuture()
                                  : absl::FromChrono(ctx->deadline());
  return ToGrpcStatus(Run(
      *req, deadline, request_id,
      [writer](const v1::GenerateResponse& r) { return writer->Write(r); },
      [ctx] { return ctx->IsCancelled(); }));
}

absl::Status GenerationService::Run(const v1::GenerateRequest& req, absl::Time deadline,
                                    std::string_view request_id,
                                    const std::function<bool(const v1::GenerateResponse&)>& write,
                                    const std::function<bool()>& gone) {
  // The scheduler may ask whether the client is gone while the request waits in its queue.
  auto probe = std::make_shared<ClientProbe>(gone);
  absl::Cleanup detach = [&probe] { probe->Detach(); };
  absl::StatusOr<std::vector<std::shared_ptr<Sequence>>> seqs =
      AdmitAll(req, {&req, 1}, /*n=*/1, deadline, request_id, /*fill_context=*/false, probe);
  if (!seqs.ok()) return seqs.status();
  return FollowAll(
      *seqs, [&write](size_t, const v1::GenerateResponse& r) { return write(r); }, gone);
}

void GenerationService::Record(const absl::Status& status, RequestRecord& record) {
  record.code = status.code();
  if (options_.metrics != nullptr) options_.metrics->RecordRequest(record);
  if (!options_.log_requests) return;
  if (IsServerError(status.code())) {
    LLMINT8_LOG(WARNING) << RequestLogLine(record, status);
  } else {
    LLMINT8_LOG(INFO) << RequestLogLine(record, status);
  }
}

absl::StatusOr<std::vector<std::shared_ptr<Sequence>>> GenerationService::AdmitAll(
    const v1::GenerateRequest& params, std::span<const v1::GenerateRequest> prompts, int32_t n,
    absl::Time deadline, std::string_view request_id, bool fill_context,
    const std::shared_ptr<ClientProbe>& probe) {
  const std::string id(request_id);
  std::vector<std::shared_ptr<Sequence>> seqs;
  absl::Status admitted = [&]() -> absl::Status {
    // What refuses every request is said first, before the work of reading this one (its
    // guide compiled, its prompts tokenized): a server shutting down, a group that cannot hold
    // the model.
    if (absl::Status accepting = scheduler_->Accepting(); !accepting.ok()) return accepting;
    if (absl::Status refusal = group_->refusal(); !refusal.ok()) return refusal;
    if (prompts.empty() || n < 1) {
      return absl::InvalidArgumentError("a request needs at least one prompt and one sequence");
    }
    if (prompts.size() * static_cast<size_t>(n) > static_cast<size_t>(options_.queue_capacity)) {
      return absl::InvalidArgumentError(
          absl::StrCat("this request asks for ", prompts.size(), " prompt(s) x ", n,
                       " sequence(s); this server queues at most ", options_.queue_capacity,
                       " (--queue_capacity): send fewer prompts or a smaller n"));
    }
    // Filling the context: the fields are checked against the most a reply may take (the
    // context less a prompt token, or the request's max_new_tokens, else default_max_tokens);
    // each prompt's sequences then get what that prompt leaves (MakeSequences).
    v1::GenerateRequest filled;
    if (fill_context) {
      filled = params;
      int64_t most = limits_.max_context - 1;
      if (params.max_new_tokens() > 0) {
        most = std::min<int64_t>(most, params.max_new_tokens());
      } else if (options_.default_max_tokens > 0) {
        most = std::min<int64_t>(most, options_.default_max_tokens);
      }
      filled.set_max_new_tokens(static_cast<int32_t>(std::max<int64_t>(1, most)));
    }
    absl::StatusOr<GenerationParams> valid =
        ValidateGenerationParams(fill_context ? filled : params, limits_, &guides_);
    if (!valid.ok()) return valid.status();
    const bool seeded = params.has_seed();
    seqs.reserve(prompts.size() * static_cast<size_t>(n));
    for (size_t i = 0; i < prompts.size(); ++i) {
      if (!seeded) valid->seed = absl::Uniform<uint64_t>(absl::BitGen());
      absl::Status made = MakeSequences(*valid, prompts[i], n, fill_context, seqs);
      if (!made.ok() && prompts.size() > 1) {  // say which prompt of the batch
        made = absl::Status(made.code(), absl::StrCat("prompt ", i, ": ", made.message()));
      }
      if (!made.ok()) return made;
    }
    // Asked again: the group may have been refused while this request was read.
    if (absl::Status refusal = group_->refusal(); !refusal.ok()) return refusal;
    auto signal = std::make_shared<OutputSignal>();
    for (const std::shared_ptr<Sequence>& seq : seqs) {
      seq->set_deadline(deadline);
      seq->set_signal(signal);
      seq->set_request_id(id);
      seq->set_client_probe(probe);
    }
    return scheduler_->EnqueueAll(seqs);
  }();
  if (!admitted.ok()) {
    RequestRecord record;
    record.request_id = id;
    Record(admitted, record);
    return admitted;
  }
  return seqs;
}

absl::Status GenerationService::FollowAll(
    std::span<const std::shared_ptr<Sequence>> seqs,
    const std::function<bool(size_t, const v1::GenerateResponse&)>& write,
    const std::function<bool()>& gone) {
  std::vector<RequestRecord> records(seqs.size());
  for (size_t i = 0; i < seqs.size(); ++i) {
    records[i].sequence_id = seqs[i]->id();
    records[i].request_id = seqs[i]->request_id();
    records[i].prompt_tokens = static_cast<int64_t>(seqs[i]->prompt().size());
    records[i].priority = seqs[i]->params().priority;
  }
  std::vector<std::optional<absl::Status>> finals(seqs.size());
  const absl::Status status = Stream(seqs, write, gone, records, finals);
  // A sequence that ended is recorded with its own status; the rest with the call's.
  for (size_t i = 0; i < seqs.size(); ++i) {
    records[i].preemptions = seqs[i]->preemptions();
    records[i].draft_tokens = seqs[i]->drafts_sent();
    records[i].accepted_draft_tokens = seqs[i]->drafts_accepted();
    Record(finals[i].value_or(status), records[i]);
  }
  return status;
}

void GenerationService::RecordRefused(const absl::Status& status, std::string_view request_id) {
  RequestRecord record;
  record.request_id = SanitizeRequestId(request_id);
  Record(status, record);
}

void GenerationService::AbandonAll(std::span<const std::shared_ptr<Sequence>> seqs,
                                   const absl::Status& why) {
  for (const std::shared_ptr<Sequence>& seq : seqs) {
    scheduler_->Cancel(seq);
    RequestRecord record;
    record.sequence_id = seq->id();
    record.request_id = seq->request_id();
    record.prompt_tokens = static_cast<int64_t>(seq->prompt().size());
    Record(why, record);
  }
}

absl::Status GenerationService::Stream(
    std::span<const std::shared_ptr<Sequence>> seqs,
    const std::function<bool(size_t, const v1::GenerateResponse&)>& write,
    const std::function<bool()>& gone, std::vector<RequestRecord>& records,
    std::vector<std::optional<absl::Status>>& finals) {
  // AdmitAll gave them one signal, notified on every output and end: the waiting is on it.
  const OutputSignal& signal = *seqs.front()->signal();
  auto cancel_open = [&] {
    for (size_t i = 0; i < seqs.size(); ++i) {
      if (!finals[i].has_value()) scheduler_->Cancel(seqs[i]);
    }
  };
  // Past the deadline gRPC cancels the call too (a write fails, the context reads cancelled):
  // the deadline is the reason then, in the metrics and the log. The client's timer fires
  // first and its cancel can arrive before the server's copy of the deadline (set on arrival,
  // so later by the transit time) has passed: a stop within kDeadlineSlack of it is the
  // deadline.
  constexpr absl::Duration kDeadlineSlack = absl::Milliseconds(50);
  auto client_stopped = [&seqs, kDeadlineSlack](absl::string_view cancelled) {
    if (seqs.front()->expired(absl::Now() + kDeadlineSlack)) {
      return absl::DeadlineExceededError(
          "the request's deadline passed; allow more time or ask for fewer tokens");
    }
    return absl::CancelledError(cancelled);
  };
  std::vector<v1::GenerateResponse> out;
  while (true) {
    const uint64_t seen = signal.version();
    size_t open = 0;
    for (size_t i = 0; i < seqs.size(); ++i) {
      if (finals[i].has_value()) continue;
      out.clear();
      std::optional<absl::Status> final = seqs[i]->WaitOutput(absl::ZeroDuration(), out);
      for (const v1::GenerateResponse& r : out) {
        if (!write(i, r)) {
          cancel_open();
          return client_stopped("the client went away");
        }
        if (r.has_token_id()) ++records[i].generated_tokens;
        if (r.finish_reason() != v1::FINISH_REASON_UNSPECIFIED) records[i].final_message = r;
      }
      if (!final.has_value()) {
        ++open;
        continue;
      }
      finals[i] = final;
      if (!final->ok()) {
        cancel_open();
        return *final;
      }
    }
    if (open == 0) return absl::OkStatus();
    if (seqs.front()->expired(absl::Now()) || gone()) {
      cancel_open();
      return client_stopped("the client cancelled the request");
    }
    signal.WaitPast(seen, kPollInterval);
  }
}

grpc::Status GenerationService::Tokenize(grpc::ServerContext* ctx, const v1::TokenizeRequest* req,
                                         v1::TokenizeResponse* resp) {
  if (absl::Status auth = Authorize(*ctx); !auth.ok()) return ToGrpcStatus(auth);
  if (tokenizer_ == nullptr) {
    return ToGrpcStatus(absl::FailedPreconditionError(
        "this model was served without a tokenizer (no vocab.json/merges.txt)"));
  }
  if (absl::Status fits = ValidateTextLength(req->text().size(), limits_, "text to tokenize");
      !fits.ok()) {
    return ToGrpcStatus(fits);
  }
  absl::StatusOr<std::vector<int32_t>> ids = tokenizer_->Encode(req->text(), req->add_bos());
  if (!ids.ok()) return ToGrpcStatus(ids.status());
  for (int32_t id : *ids) {
    resp->add_token_ids(id);
    absl::StatusOr<std::string> bytes = tokenizer_->DecodeBytes({&id, 1});
    resp->add_pieces(bytes.ok() ? *bytes : std::string());
  }
  return grpc::Status::OK;
}

grpc::Status GenerationService::GetModelInfo(grpc::ServerContext* ctx,
                                             const v1::GetModelInfoRequest*, v1::ModelInfo* resp) {
  if (absl::Status auth = Authorize(*ctx); !auth.ok()) return ToGrpcStatus(auth);
  const WorkerGroupOptions& o = group_->options();
  resp->set_model(o.model);
  resp->set_dtype(o.dtype);
  resp->set_threshold(o.threshold);
  resp->set_tensor_parallel(group_->world_size());
  resp->set_backend(o.backend);
  resp->set_vocab_size(static_cast<int32_t>(config_.vocab_size));
  resp->set_max_context(static_cast<int32_t>(limits_.max_context));
  resp->set_eos_token_id(static_cast<int32_t>(config_.eos_token_id));
  if (options_.eos_token_ids.empty()) {
    resp->add_eos_token_ids(static_cast<int32_t>(config_.eos_token_id));
  } else {
    resp->mutable_eos_token_ids()->Add(options_.eos_token_ids.begin(),
                                       options_.eos_token_ids.end());
  }
  *resp->mutable_generation_defaults() = options_.generation_defaults;
  resp->set_bos_token_id(static_cast<int32_t>(config_.bos_token_id));
  resp->set_has_tokenizer(tokenizer_ != nullptr);
  resp->set_num_parameters(config_.NumParameters());
  resp->set_max_batch(options_.max_batch);
  resp->set_queue_capacity(options_.queue_capacity);
  resp->set_kv_budget_positions(scheduler_->kv_budget());
  resp->set_preemption(std::string(PreemptionName(scheduler_->preemption())));
  resp->set_scheduling(std::string(SchedulingName(scheduler_->scheduling())));
  resp->set_resume_on_group_loss_seconds(absl::ToDoubleSeconds(scheduler_->resume_on_group_loss()));
  resp->set_speculative_tokens(scheduler_->speculative_tokens());
  if (scheduler_->speculative_tokens() > 0) {
    resp->set_prompt_lookup_min(scheduler_->prompt_lookup().min_n);
    resp->set_prompt_lookup_max(scheduler_->prompt_lookup().max_n);
  }
  // The refusal first: its status is the refused state's (one lock), the state the others'.
  if (const absl::Status refusal = group_->refusal(); !refusal.ok()) {
    resp->set_group_state(GroupStateName(GroupState::kRefused));
    resp->set_group_error(std::string(refusal.message()));
  } else {
    resp->set_group_state(GroupStateName(group_->state()));
  }
  group_->RefreshStats();
  const std::vector<WorkerStatus> workers = group_->Workers();
  for (size_t i = 0; i < workers.size(); ++i) {
    v1::WorkerInfo* w = resp->add_workers();
    w->set_rank(workers[i].rank);
    w->set_address(workers[i].address);
    w->set_device(workers[i].device);
    w->set_weight_bytes(workers[i].weight_bytes);
    w->set_kv_cache_bytes(workers[i].kv_cache_bytes);
    w->set_total_bytes(workers[i].total_bytes);
    w->set_healthy(workers[i].healthy);
    w->set_held_by_another(workers[i].held_by_another);
    w->set_draining(workers[i].draining);
    w->set_state(WorkerStateName(workers[i]));
  }
  return grpc::Status::OK;
}

}  // namespace llmint8::coordinator
