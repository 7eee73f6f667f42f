#include "worker/token_sampler.h"

#include "kernels/sampling.h"

namespace llmint8::worker {

absl::StatusOr<SampledToken> SampleToken(std::span<const float> logits,
                                         const v1::SamplingParams& params, int32_t sample_index,
                                         std::span<const int32_t> seen) {
  kernels::SamplingParams p;
  p.temperature = params.temperature();
  p.top_k = params.top_k();
  p.top_p = params.top_p() == 0.0f ? 1.0f : params.top_p();  // proto default: disabled
  p.seed = params.seed();
  // proto default 0: off, as 1
  p.repetition_penalty = params.repetition_penalty() == 0.0f ? 1.0f : params.repetition_penalty();
  p.return_logprob = true;
  absl::StatusOr<kernels::SampledToken> sampled =
      kernels::SampleToken(logits, p, static_cast<uint64_t>(sample_index), seen);
  if (!sampled.ok()) return sampled.status();
  SampledToken out;
  out.token_id = sampled->token;
  out.logprob = sampled->logprob.value_or(0.0f);
  return out;
}

}  // namespace llmint8::worker
