#include "coordinator/sequence.h"

#include <algorithm>
#include <utility>

namespace llmint8::coordinator {

Sequence::Sequence(uint64_t id, std::vector<int32_t> prompt, GenerationParams params,
                   std::unique_ptr<TokenTextStream> text)
    : id_(id),
      prompt_(std::move(prompt)),
      params_(std::move(params)),
      text_(std::move(text)),
      stop_(params_.stop) {}

std::optional<absl::Status> Sequence::WaitOutput(absl::Duration timeout,
                                                 std::vector<v1::GenerateResponse>& out) {
  absl::MutexLock lock(&mu_);
  auto has_output = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
    return !outbox_.empty() || final_.has_value();
  };
  mu_.AwaitWithTimeout(absl::Condition(&has_output), timeout);
  while (!outbox_.empty()) {
    out.push_back(std::move(outbox_.front()));
    outbox_.pop_front();
  }
  return final_;
}

std::span<const int32_t> Sequence::TakePrompt(int64_t limit) {
  const int64_t n = std::min(prompt_remaining(), std::max<int64_t>(limit, 1));
  std::span<const int32_t> piece(prompt_.data() + prompt_sent_, static_cast<size_t>(n));
  prompt_sent_ += n;
  return piece;
}

void Sequence::Fail(const absl::Status& status) {
  absl::MutexLock lock(&mu_);
  if (!final_.has_value()) final_ = status;
}

bool Sequence::AddToken(const v1::SeqResult& sampled, int64_t eos_token_id) {
  const absl::Time now = absl::Now();
  const int32_t token_id = sampled.token_id();
  if (generated_.empty()) first_token_ = now;
  generated_.push_back(token_id);
  v1::GenerateResponse response;
  response.set_token_id(token_id);
  if (params_.logprobs) response.set_logprob(sampled.logprob());
  const int top = std::min(sampled.top_size(), params_.top_logprobs);
  for (int i = 0; i < top; ++i) {
    v1::TopLogprob* t = response.add_top_logprobs();
    t->set_token_id(sampled.top(i).token_id());
    t->set_logprob(sampled.top(i).logprob());
    if (text_) t->set_text(text_->TokenText(t->token_id()));
  }

  if (token_id == eos_token_id && !params_.ignore_eos) {
    response.set_text(stop_.Append(text_ ? text_->Flush() : "") + stop_.Flush());
    Finish(std::move(response), v1::FINISH_REASON_EOS);
    return true;
  }
  std::string piece = text_ ? text_->Add(token_id) : std::string();
  std::string emit = stop_.Append(piece);
  if (stop_.stopped()) {
    response.set_text(std::move(emit));
    Finish(std::move(response), v1::FINISH_REASON_STOP);
    return true;
  }
  if (num_generated() >= params_.max_new_tokens) {
    if (text_) emit += stop_.Append(text_->Flush());
    if (stop_.stopped()) {
      response.set_text(std::move(emit));
      Finish(std::move(response), v1::FINISH_REASON_STOP);
      return true;
    }
    emit += stop_.Flush();
    response.set_text(std::move(emit));
    Finish(std::move(response), v1::FINISH_REASON_LENGTH);
    return true;
  }
  response.set_text(std::move(emit));
  absl::MutexLock lock(&mu_);
  outbox_.push_back(std::move(response));
  return false;
}

void Sequence::Finish(v1::GenerateResponse response, v1::FinishReason reason) {
  const absl::Time now = absl::Now();
  response.set_finish_reason(reason);
  response.mutable_usage()->set_prompt_tokens(static_cast<int32_t>(prompt_.size()));
  response.mutable_usage()->set_completion_tokens(num_generated());
  v1::Timings* t = response.mutable_timings();
  const absl::Time admitted = std::min(admitted_, now);
  t->set_queue_ms(absl::ToDoubleMilliseconds(admitted - arrival_));
  t->set_time_to_first_token_ms(absl::ToDoubleMilliseconds(first_token_ - arrival_));
  t->set_total_ms(absl::ToDoubleMilliseconds(now - arrival_));
  const double decode_s = absl::ToDoubleSeconds(now - first_token_);
  t->set_decode_tokens_per_second(
      num_generated() > 1 && decode_s > 0 ? (num_generated() - 1) / decode_s : 0.0);
  absl::MutexLock lock(&mu_);
  outbox_.push_back(std::move(response));
  if (!final_.has_value()) final_ = absl::OkStatus();
}

}  // namespace llmint8::coordinator
