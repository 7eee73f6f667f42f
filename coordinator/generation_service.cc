#include "coordinator/generation_service.h"

#include <chrono>
#include <utility>
#include <vector>

#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "worker/grpc_status.h"

namespace llmint8::coordinator {
namespace {

class TokenizerTextStream : public TokenTextStream {
 public:
  explicit TokenizerTextStream(const Tokenizer& tokenizer)
      : tokenizer_(tokenizer), stream_(tokenizer) {}
  std::string Add(int32_t token_id) override {
    absl::StatusOr<std::string> piece = stream_.Next(token_id);
    return piece.ok() ? *std::move(piece) : std::string();
  }
  std::string Flush() override { return stream_.Finish(); }
  std::string TokenText(int32_t token_id) const override {
    // Special tokens too ("</s>"): a candidate must say which token it is.
    absl::StatusOr<std::string> text = tokenizer_.Decode({token_id});
    return text.ok() ? *std::move(text) : std::string();
  }
  std::vector<std::string> Pieces(std::span<const int32_t> ids) const override {
    DecodeStream stream(tokenizer_);
    std::vector<std::string> pieces;
    pieces.reserve(ids.size());
    for (int32_t id : ids) {
      absl::StatusOr<std::string> piece = stream.Next(id);
      pieces.push_back(piece.ok() ? *std::move(piece) : std::string());
    }
    if (!pieces.empty()) pieces.back() += stream.Finish();
    return pieces;
  }

 private:
  const Tokenizer& tokenizer_;
  DecodeStream stream_;
};

constexpr absl::Duration kPollInterval = absl::Milliseconds(50);

}  // namespace

GenerationService::GenerationService(model::OptConfig config, const Tokenizer* tokenizer,
                                     ModelLimits limits, Scheduler* scheduler, WorkerGroup* group,
                                     int32_t max_batch, int32_t queue_capacity,
                                     ServiceMetrics* metrics, const ApiKey* api_key)
    : config_(std::move(config)),
      tokenizer_(tokenizer),
      limits_(limits),
      scheduler_(scheduler),
      group_(group),
      max_batch_(max_batch),
      queue_capacity_(queue_capacity),
      metrics_(metrics),
      api_key_(api_key) {}

absl::Status GenerationService::Authorize(const grpc::ServerContext& ctx) const {
  if (api_key_ == nullptr || !api_key_->required()) return absl::OkStatus();
  const auto it = ctx.client_metadata().find("authorization");
  return api_key_->Check(it == ctx.client_metadata().end()
                             ? std::string_view()
                             : std::string_view(it->second.data(), it->second.size()));
}

absl::StatusOr<std::shared_ptr<Sequence>> GenerationService::MakeSequence(
    const v1::GenerateRequest& req) {
  absl::StatusOr<GenerationParams> params = ValidateGenerationParams(req, limits_);
  if (!params.ok()) return params.status();
  std::vector<int32_t> prompt;
  if (req.prompt_case() == v1::GenerateRequest::kText) {
    absl::StatusOr<std::vector<int32_t>> ids =
        tokenizer_->Encode(req.text(), /*add_bos=*/tokenizer_->bos_id().has_value());
    if (!ids.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("the prompt text could not be tokenized: ", ids.status().message()));
    }
    prompt = *std::move(ids);
  } else {
    prompt.assign(req.token_ids().ids().begin(), req.token_ids().ids().end());
  }
  absl::Status valid = ValidatePromptTokens(prompt, *params, limits_);
  if (!valid.ok()) return valid;
  if (!req.has_seed()) params->seed = absl::Uniform<uint64_t>(absl::BitGen());
  std::unique_ptr<TokenTextStream> text;
  if (tokenizer_ != nullptr) text = std::make_unique<TokenizerTextStream>(*tokenizer_);
  return std::make_shared<Sequence>(next_seq_id_.fetch_add(1), std::move(prompt),
                                    *std::move(params), std::move(text));
}

grpc::Status GenerationService::Generate(grpc::ServerContext* ctx, const v1::GenerateRequest* req,
                                         grpc::ServerWriter<v1::GenerateResponse>* writer) {
  if (absl::Status auth = Authorize(*ctx); !auth.ok()) return ToGrpcStatus(auth);
  const absl::Time deadline = ctx->deadline() == std::chrono::system_clock::time_point::max()
                                  ? absl::InfiniteFuture()
                                  : absl::FromChrono(ctx->deadline());
  return ToGrpcStatus(Run(
      *req, deadline, [writer](const v1::GenerateResponse& r) { return writer->Write(r); },
      [ctx] { return ctx->IsCancelled(); }));
}

absl::Status GenerationService::Run(const v1::GenerateRequest& req, absl::Time deadline,
                                    const std::function<bool(const v1::GenerateResponse&)>& write,
                                    const std::function<bool()>& gone) {
  absl::StatusOr<std::shared_ptr<Sequence>> seq = Admit(req, deadline);
  if (!seq.ok()) return seq.status();
  return Follow(*seq, write, gone);
}

void GenerationService::Record(absl::StatusCode code, RequestRecord& record) {
  if (metrics_ == nullptr) return;
  record.code = code;
  metrics_->RecordRequest(record);
}

absl::StatusOr<std::shared_ptr<Sequence>> GenerationService::Admit(const v1::GenerateRequest& req,
                                                                   absl::Time deadline) {
  absl::StatusOr<std::shared_ptr<Sequence>> seq = MakeSequence(req);
  absl::Status admitted = seq.status();
  // The workers cannot hold the model: say so instead of queueing forever.
  if (admitted.ok()) admitted = group_->refusal();
  if (admitted.ok()) {
    (*seq)->set_deadline(deadline);
    admitted = scheduler_->Enqueue(*seq);
  }
  if (!admitted.ok()) {
    RequestRecord record;
    Record(admitted.code(), record);
    return admitted;
  }
  return seq;
}

absl::Status GenerationService::Follow(
    const std::shared_ptr<Sequence>& seq,
    const std::function<bool(const v1::GenerateResponse&)>& write,
    const std::function<bool()>& gone) {
  RequestRecord record;
  record.prompt_tokens = static_cast<int64_t>(seq->prompt().size());
  const absl::Status status = Stream(seq, write, gone, record);
  Record(status.code(), record);
  return status;
}

void GenerationService::Abandon(const std::shared_ptr<Sequence>& seq) {
  scheduler_->Cancel(seq);
  RequestRecord record;
  record.prompt_tokens = static_cast<int64_t>(seq->prompt().size());
  Record(absl::StatusCode::kCancelled, record);
}

absl::Status GenerationService::Stream(
    const std::shared_ptr<Sequence>& seq,
    const std::function<bool(const v1::GenerateResponse&)>& write,
    const std::function<bool()>& gone, RequestRecord& record) {
  std::vector<v1::GenerateResponse> out;
  while (true) {
    out.clear();
    std::optional<absl::Status> final = seq->WaitOutput(kPollInterval, out);
    for (const v1::GenerateResponse& r : out) {
      if (!write(r)) {
        scheduler_->Cancel(seq);
        return absl::CancelledError("the client went away");
      }
      if (r.has_token_id()) ++record.generated_tokens;
      if (r.finish_reason() != v1::FINISH_REASON_UNSPECIFIED) record.final_message = r;
    }
    if (final.has_value()) return *final;
    const bool expired = seq->expired(absl::Now());
    if (expired || gone()) {
      scheduler_->Cancel(seq);
      if (expired) {
        return absl::DeadlineExceededError(
            "the request's deadline passed; allow more time or ask for fewer tokens");
      }
      return absl::CancelledError("the client cancelled the request");
    }
  }
}

grpc::Status GenerationService::Tokenize(grpc::ServerContext* ctx, const v1::TokenizeRequest* req,
                                         v1::TokenizeResponse* resp) {
  if (absl::Status auth = Authorize(*ctx); !auth.ok()) return ToGrpcStatus(auth);
  if (tokenizer_ == nullptr) {
    return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                        "this model was served without a tokenizer (no vocab.json/merges.txt)");
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
  resp->set_bos_token_id(static_cast<int32_t>(config_.bos_token_id));
  resp->set_has_tokenizer(tokenizer_ != nullptr);
  resp->set_num_parameters(config_.NumParameters());
  resp->set_max_batch(max_batch_);
  resp->set_queue_capacity(queue_capacity_);
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
  }
  return grpc::Status::OK;
}

}  // namespace llmint8::coordinator
