// Speculative decoding's draft tokens by prompt lookup (vLLM's "ngram" method): a sequence
// whose last n tokens occurred before in its prompt or output is likely to go on as it did
// after them (a quoted passage, a name, code, a loop of a small model). The scheduler sends
// those tokens as drafts (SeqStep.draft_token_ids) beside the sequence's next input; rank 0
// keeps the ones its own samples agree with, so the output is what it would have been.
//
//   std::vector<int32_t> draft;
//   ProposeByPromptLookup(tokens, {.min_n = 2, .max_n = 4}, /*k=*/4, draft);
//
// Thread-safe: pure functions.
#ifndef LLMINT8_COORDINATOR_PROMPT_LOOKUP_H_
#define LLMINT8_COORDINATOR_PROMPT_LOOKUP_H_

#include <cstdint>
#include <span>
#include <vector>

namespace llmint8::coordinator {

struct PromptLookup {
  int32_t min_n = 2;  // shortest suffix looked up (>= 1)
  int32_t max_n = 4;  // longest (>= min_n); the longest that occurred before is used
};

// Replaces `draft` with up to `k` tokens to follow `tokens` (a sequence's prompt and generated
// tokens): for the longest suffix of n tokens (max_n down to min_n) that also occurs earlier,
// its most recent earlier occurrence's continuation, extended periodically when that runs
// into the end (a loop of period p goes on as one: token t is proposed as token t - p was).
// Empty when no such suffix occurs, or k <= 0. One pass over the tokens, O(|tokens| * max_n)
// at worst (a long run of one token), about |tokens| comparisons on text.
void ProposeByPromptLookup(std::span<const int32_t> tokens, const PromptLookup& lookup, int32_t k,
                           std::vector<int32_t>& draft);

}  // namespace llmint8::coordinator

#endif  // LLMINT8_COORDINATOR_PROMPT_LOOKUP_H_
