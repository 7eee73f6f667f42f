// The ranges of the sampling options: what the Generate API accepts (proto/llmint8/v1/
// generation.proto, checked by the coordinator) and what the workers' sampler enforces
// (kernels/sampling.h), one definition for both.
#ifndef LLMINT8_COMMON_SAMPLING_LIMITS_H_
#define LLMINT8_COMMON_SAMPLING_LIMITS_H_

#include <cstdint>

namespace llmint8 {

// The most top_logprobs candidates per position (vLLM's default max_logprobs).
inline constexpr int32_t kMaxTopLogprobs = 20;
// frequency_penalty and presence_penalty lie in [-kMaxPenalty, kMaxPenalty] (the OpenAI API's).
inline constexpr float kMaxPenalty = 2.0f;
// logit_bias: at most kMaxLogitBiasTokens ids, each bias in [-kMaxLogitBias, kMaxLogitBias]
// (the OpenAI API's range).
inline constexpr int32_t kMaxLogitBiasTokens = 300;
inline constexpr float kMaxLogitBias = 100.0f;
// stop_token_ids: at most this many.
inline constexpr int32_t kMaxStopTokenIds = 64;
// Whether these penalties count a sequence's tokens (a repetition, frequency or presence
// penalty is on): the coordinator's scheduler and prefix cache and the worker's sampler decide
// by this one rule whether a sequence's tokens are kept and a prefix copy needs its source's.
inline bool PenaltiesCountTokens(float repetition_penalty, float frequency_penalty,
                                 float presence_penalty) {
  return repetition_penalty != 1.0f || frequency_penalty != 0.0f || presence_penalty != 0.0f;
}
// Speculative decoding: the most draft tokens one step carries for a sequence (the
// coordinator's --speculative_tokens, SeqStep.draft_token_ids).
inline constexpr int32_t kMaxSpeculativeTokens = 16;
// stop strings: at most this many, each of 1 to kMaxStopBytes bytes.
inline constexpr int32_t kMaxStopSequences = 16;
inline constexpr int32_t kMaxStopBytes = 256;

}  // namespace llmint8

#endif  // LLMINT8_COMMON_SAMPLING_LIMITS_H_
