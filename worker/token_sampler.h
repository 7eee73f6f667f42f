// Picks the next token of one sequence from its logits row on rank 0 (repetition, frequency
// and presence penalties, greedy, temperature, top-k, top-p; seeded so that (seed,
// sample_index) reproduce the same choice), with its logprob and the top candidates.
#ifndef LLMINT8_WORKER_TOKEN_SAMPLER_H_
#define LLMINT8_WORKER_TOKEN_SAMPLER_H_

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/sampling.h"
#include "llmint8/v1/worker.pb.h"

namespace llmint8::worker {

struct SampledToken {
  int32_t token_id = 0;
  float logprob = 0.0f;  // log p(token) under the model's distribution (kernels/sampling.h)
  std::vector<v1::TokenCandidate> top;  // `top_logprobs` candidates, most likely first
};

// The kernels' form of the parameters a sequence's first step brings (proto defaults: top_p
// and repetition_penalty 0 are off, as 1). What a step returns beside the token (its logprob,
// candidates) and the min_tokens bans are not in it: SequenceSamplers sets them.
kernels::SamplingParams ToKernelParams(const v1::SamplingParams& params);
// Whether `params` count the sequence's tokens (a repetition, frequency or presence penalty):
// rank 0 then keeps them, and a prefix copy needs its source's (common/sampling_limits.h's
// PenaltiesCountTokens, the coordinator's rule too).
bool CountsTokens(const kernels::SamplingParams& params);

// `seen`: the sequence's tokens so far (prompt and generated), which the repetition penalty
// applies to; its last `sample_index` are the generated ones that the frequency and presence
// penalties count. InvalidArgument for an empty row or parameters outside their ranges.
absl::StatusOr<SampledToken> SampleToken(std::span<const float> logits,
                                         const kernels::SamplingParams& params,
                                         int32_t sample_index, std::span<const int32_t> seen = {});

// The score of a given token (a prompt's next token) in its logits row: its logprob under the
// model's distribution and the `top_logprobs` likeliest candidates. Never an error: it runs on
// rank 0 alone after the step's collectives, where an error would break the group. A row it
// cannot score (NaN or +inf, a token outside it) gives a NaN logprob and no candidates.
v1::PromptScore ScoreToken(std::span<const float> logits, int32_t token_id, int32_t top_logprobs);

}  // namespace llmint8::worker

#endif  // LLMINT8_WORKER_TOKEN_SAMPLER_H_
