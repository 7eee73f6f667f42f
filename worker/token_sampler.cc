#include "worker/token_sampler.h"

#include <algorithm>
#include <limits>

#include "absl/strings/str_cat.h"
#include "common/sampling_limits.h"
#include "common/status_macros.h"
#include "kernels/sampling.h"

namespace llmint8::worker {

kernels::SamplingParams ToKernelParams(const v1::SamplingParams& params) {
  kernels::SamplingParams p;
  p.temperature = params.temperature();
  p.top_k = params.top_k();
  p.top_p = params.top_p() == 0.0f ? 1.0f : params.top_p();  // proto default: disabled
  p.seed = params.seed();
  // proto default 0: off, as 1
  p.repetition_penalty = params.repetition_penalty() == 0.0f ? 1.0f : params.repetition_penalty();
  p.frequency_penalty = params.frequency_penalty();
  p.presence_penalty = params.presence_penalty();
  p.min_p = params.min_p();
  p.logit_bias.reserve(static_cast<size_t>(params.logit_bias_size()));
  for (const v1::TokenBias& b : params.logit_bias())
    p.logit_bias.push_back({b.token_id(), b.bias()});
  return p;
}

bool CountsTokens(const kernels::SamplingParams& params) {
  return PenaltiesCountTokens(params.repetition_penalty, params.frequency_penalty,
                              params.presence_penalty);
}

absl::StatusOr<SampledToken> SampleToken(std::span<const float> logits,
                                         const kernels::SamplingParams& p, int32_t sample_index,
                                         std::span<const int32_t> seen) {
  if (sample_index < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("sample_index is ", sample_index, "; it must be >= 0"));
  }
  // The generated tokens close `seen`; fewer are there only if the caller kept none.
  const std::span<const int32_t> generated =
      seen.last(std::min(seen.size(), static_cast<size_t>(sample_index)));
  absl::StatusOr<kernels::SampledToken> sampled =
      kernels::SampleToken(logits, p, static_cast<uint64_t>(sample_index), seen, generated);
  if (!sampled.ok()) return sampled.status();
  SampledToken out;
  out.token_id = sampled->token;
  out.logprob = sampled->logprob.value_or(0.0f);
  out.top.reserve(sampled->top.size());
  for (const kernels::TokenLogprob& t : sampled->top) {
    v1::TokenCandidate& c = out.top.emplace_back();
    c.set_token_id(t.token);
    c.set_logprob(t.logprob);
  }
  return out;
}

v1::PromptScore ScoreToken(std::span<const float> logits, int32_t token_id, int32_t top_logprobs) {
  v1::PromptScore out;
  absl::StatusOr<kernels::SampledToken> scored =
      kernels::ScoreToken(logits, token_id, top_logprobs);
  if (!scored.ok()) {  // a row with NaN or +inf: this token's score is unknown
    out.set_logprob(std::numeric_limits<float>::quiet_NaN());
    return out;
  }
  out.set_logprob(scored->logprob.value_or(0.0f));
  for (const kernels::TokenLogprob& t : scored->top) {
    v1::TokenCandidate* c = out.add_top();
    c->set_token_id(t.token);
    c->set_logprob(t.logprob);
  }
  return out;
}

}  // namespace llmint8::worker
