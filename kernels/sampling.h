// Next-token selection from the LM head's logits (CPU, fp32 in, run on rank 0 for each sequence
// of a decode step): greedy, temperature, top-k, top-p (nucleus), seeded, with optional logprobs.
//
// Order of operations, as Hugging Face's generate and vLLM do it:
//   token mask (guided decoding): each id it rules out is -inf;
//   logit bias: each listed id's bias added to its logit (the OpenAI API's logit_bias; -inf
//        bans an id);
//   repetition penalty (when != 1) over the ids the sequence has seen (prompt + generated), as
//        Hugging Face's RepetitionPenaltyLogitsProcessor (TGI and vLLM alike): a positive logit
//        is divided by the penalty, a negative one multiplied, once per distinct id;
//   temperature == 0 or top_k == 1 -> greedy: argmax, ties to the lowest id;
//   else z = logits / temperature; keep the top_k largest (0 = all) and every id tied with the
//        k-th (Hugging Face's TopKLogitsWarper and vLLM keep each logit >= the k-th's);
//        p = softmax(z over the kept ids); keep the smallest prefix of the kept ids, by
//        descending p, whose mass reaches top_p (always at least one id); then drop the kept
//        ids whose p is below min_p times the largest p (Hugging Face's MinPLogitsWarper;
//        0 = off); draw from p renormalised over what is kept. (Min-p after top-p is Hugging
//        Face's order; vLLM V1 applies min-p before top-k and top-p, which can keep fewer ids
//        where a request sets both min_p and top_p.)
// The draw is u = Uniform01(seed, step): a counter-based random number of the sequence's seed
// and its step (the index of the token being generated), so a sequence gets the same tokens
// whatever batch it is in and whatever ran before; nothing is stateful.
//
// Logits may contain -inf (masked ids; never chosen); NaN, +inf, an empty row or an all -inf
// row is InvalidArgument. Logprobs are of the model's own distribution, log_softmax(logits)
// before the bias, penalties, temperature and filtering (what the OpenAI and vLLM APIs
// report), with one exception: under a token mask they are of the guided distribution,
// log_softmax of the masked logits (an id ruled out has -inf), as vLLM V1 applies its grammar
// bitmask to the logits before its sampler computes them.
//
// Thread-safety: every function is pure; call from any thread.
#ifndef LLMINT8_KERNELS_SAMPLING_H_
#define LLMINT8_KERNELS_SAMPLING_H_

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/sampling_limits.h"

namespace llmint8::kernels {

struct TokenBias {
  int32_t token;
  float bias;  // finite, or -inf (the id is never sampled)
};

// Guided decoding's mask: a view of ids, valid while the call that reads it runs.
struct TokenMask {
  bool allow = false;            // ids: the only ids that may be sampled; else those that may not
  std::span<const int32_t> ids;  // each in the vocabulary
};

struct SamplingParams {
  float temperature = 1.0f;         // >= 0 and finite; 0 means greedy
  int32_t top_k = 0;                // >= 0; 0 means no limit (values above the vocabulary size too)
  float top_p = 1.0f;               // in (0, 1]
  uint64_t seed = 0;                // per sequence
  bool return_logprob = false;      // fill SampledToken::logprob
  int32_t top_logprobs = 0;         // 0..kMaxTopLogprobs most likely ids to report
  float repetition_penalty = 1.0f;  // > 0 and finite; 1 = off, > 1 discourages repeats
  float frequency_penalty = 0.0f;   // in [-kMaxPenalty, kMaxPenalty]; 0 = off
  float presence_penalty = 0.0f;    // in [-kMaxPenalty, kMaxPenalty]; 0 = off
  float min_p = 0.0f;               // in [0, 1]; 0 = off
  std::vector<TokenBias> logit_bias;  // added to the logits after the mask; ids in the vocabulary
  std::optional<TokenMask> mask;      // applied first; none: every id may come
};

// InvalidArgument naming the field and its allowed range.
absl::Status ValidateSamplingParams(const SamplingParams& params);

struct TokenLogprob {
  int32_t token;
  float logprob;
  friend bool operator==(const TokenLogprob&, const TokenLogprob&) = default;
};

struct SampledToken {
  int32_t token = -1;
  std::optional<float> logprob;   // set when params.return_logprob
  std::vector<TokenLogprob> top;  // params.top_logprobs entries, by descending logprob
                                  // (ties: lowest id first); fewer if the row is shorter
};

// The counter-based generator: a uniform double in [0, 1) with 53 random bits, a pure function
// of (seed, step) (SplitMix64 finalisers over the seed and the counter).
double Uniform01(uint64_t seed, uint64_t step);

// Index of the largest finite-or-(-inf) entry, ties to the lowest id. InvalidArgument on an
// empty row, NaN or +inf, or an all -inf row.
absl::StatusOr<int32_t> Argmax(std::span<const float> logits);

// The repetition penalty in place: every distinct id of `seen` (duplicates count once) gets
// logit / penalty when the logit is > 0, logit * penalty otherwise. InvalidArgument for a
// penalty that is not finite and > 0 or an id outside [0, logits.size()).
absl::Status ApplyRepetitionPenalty(std::span<float> logits, std::span<const int32_t> seen,
                                    float penalty);

// The frequency and presence penalties in place: logit[j] -= frequency * c[j] + presence *
// (c[j] > 0), c[j] the count of j in `generated` (-inf stays -inf). InvalidArgument for a
// penalty outside [-kMaxPenalty, kMaxPenalty] or an id outside [0, logits.size()).
absl::Status ApplyFrequencyPresencePenalties(std::span<float> logits,
                                             std::span<const int32_t> generated, float frequency,
                                             float presence);

// `logits` with every id `mask` rules out at -inf, into `out`. InvalidArgument for an id
// outside [0, logits.size()).
absl::Status ApplyTokenMask(std::span<const float> logits, const TokenMask& mask,
                            std::vector<float>& out);
// Each entry's bias added to its id's logit in place. InvalidArgument for an id outside
// [0, logits.size()) or a bias that is NaN or +inf.
absl::Status ApplyLogitBias(std::span<float> logits, std::span<const TokenBias> bias);

// One sequence: logits is [vocab]; step as above; `seen` the ids the repetition penalty
// applies to (the sequence's prompt and generated tokens; ignored when the penalty is 1);
// `generated` the ids the frequency and presence penalties count (the generated tokens only;
// ignored when both are 0).
absl::StatusOr<SampledToken> SampleToken(std::span<const float> logits,
                                         const SamplingParams& params, uint64_t step,
                                         std::span<const int32_t> seen = {},
                                         std::span<const int32_t> generated = {});

// A given token's logprob under log_softmax(logits) and the `top_logprobs` likeliest ids, as
// SampleToken reports them (for scoring a prompt's tokens). InvalidArgument for a bad row, a
// token outside [0, logits.size()) or top_logprobs outside [0, kMaxTopLogprobs].
absl::StatusOr<SampledToken> ScoreToken(std::span<const float> logits, int32_t token,
                                        int32_t top_logprobs);

// A decode step's batch: logits is [batch, vocab] row-major; params and steps have one entry per
// row. Row r's result equals SampleToken(row r, params[r], steps[r]) (no seen or generated ids:
// no penalty applies; each row's logit_bias and min_p do). The error names the row.
absl::StatusOr<std::vector<SampledToken>> SampleBatch(std::span<const float> logits, int64_t batch,
                                                      int64_t vocab,
                                                      std::span<const SamplingParams> params,
                                                      std::span<const uint64_t> steps);

}  // namespace llmint8::kernels

#endif  // LLMINT8_KERNELS_SAMPLING_H_
