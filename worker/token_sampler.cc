#include "worker/token_sampler.h"

#include "kernels/sampling.h"

namespace llmint8::worker {

absl::StatusOr<SampledToken> SampleToken(std::span<const float> logits,
                                         const v1::SamplingParams& params, int32_t sample_index) {
  kernels::SamplingParams p;
  p.temperature = params.temperature();
  p.top_k = params.top_k();
  p.top_p = params.top_p() == 0.0f ? 1.0f : params.top_p();  // proto default: disabled
  p.seed = params.seed();
  p.return_logprob = true;
  absl::StatusOr<kernels::SampledToken> sampled =
      kernels::SampleToken(logits, p, static_cast<uint64_t>(sample_index));
  if (!sampled.ok()) return sampled.status();
  SampledToken out;
  out.token_id = sampled->token;
  out.logprob = sampled->logprob.value_or(0.0f);
  return out;
}

}  // namespace llmint8::worker
