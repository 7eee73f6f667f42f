// Perplexity of a token sequence under a ShardModel, with strided windows: the evaluation of the
// LLM.int8() paper and of Hugging Face's "Perplexity of fixed-length models" guide.
//
// Windows over ids[0, N), window length L, stride S (L >= 2, 1 <= S <= L):
//   window k covers [begin, end) with begin = k * S, end = min(begin + L, N); the last window is
//   the first one that reaches N. It scores the tokens at indices
//   [first_target, end) with first_target = max(prev_end, begin + 1) (prev_end: the previous
//   window's end, 0 for the first), each predicted from ids[begin, i) only.
// With S < L every token after the first is scored exactly once (tokens = N - 1), each with at
// least min(i, L - S) tokens of context; with S == L the first token of each window is not
// scored. train/strided_ppl.py computes the same windows with transformers (the reference).
//
// A window is run as one fresh sequence: ids[begin, first_target) in one Step that returns only
// its last row (it predicts ids[first_target]), then ids[first_target, end - 1) with
// all_positions, in chunks of at most max_rows_per_step; the sequence is released after each
// window (also on error). So at most L - 1 positions are cached, and the LM head runs only for
// scored rows. NLL per token: logsumexp(row) - row[target], computed in double.
//
// Tensor parallelism: call Perplexity on every rank of the group with the same arguments (the
// collective contract of ShardModel); every rank returns the same result.
// Thread-compatible, like ShardModel: one caller at a time.
#ifndef LLMINT8_MODEL_PERPLEXITY_H_
#define LLMINT8_MODEL_PERPLEXITY_H_

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "model/shard_model.h"

namespace llmint8::model {

struct PerplexityWindow {
  int64_t begin = 0;         // first id fed to the model
  int64_t first_target = 0;  // first scored id (> begin)
  int64_t end = 0;           // one past the last scored id
  int64_t scored() const { return end - first_target; }
  friend bool operator==(const PerplexityWindow&, const PerplexityWindow&) = default;
};

// The windows above, only those that score at least one token.
// InvalidArgument when window < 2, stride outside [1, window] or num_ids < 2.
absl::StatusOr<std::vector<PerplexityWindow>> PerplexityWindows(int64_t num_ids, int64_t window,
                                                                int64_t stride);

// -log softmax(logits)[target], in double (max-shifted logsumexp). target must be a valid index.
// Non-finite logits give a non-finite result (Perplexity turns that into an error).
double TokenNll(std::span<const float> logits, int32_t target);

struct PerplexityResult {
  double nll_sum = 0;  // sum of -log p(token | context), natural log
  int64_t tokens = 0;  // tokens scored
  double ppl = 0;      // exp(nll_sum / tokens)
  int64_t windows = 0;
};

struct PerplexityOptions {
  // Sequence id used for each window; it must not be live in the model when Perplexity starts.
  uint64_t seq_id = 0x7065706c65786974;  // arbitrary; pick another if the model serves ids
  // Rows of logits per Step (a Step holds rows * vocab floats: 256 rows of OPT's 50272 = 51 MB).
  int64_t max_rows_per_step = 256;
  // Called after each window with the windows done so far and the running sums (for logs).
  std::function<void(int64_t windows_done, int64_t windows_total, double nll_sum, int64_t tokens)>
      progress;
};

// Perplexity of `ids` (token ids, e.g. the tokenizer's Encode of a text with its BOS first).
// Errors, before any Step: InvalidArgument (bad window / stride / too few ids as in
// PerplexityWindows; window - 1 > model.max_context(), since a window feeds up to L - 1 ids; an
// id outside [0, vocab_size), naming its index; max_rows_per_step < 1), FailedPrecondition
// (options.seq_id is live). Later: whatever Step returns (e.g. ResourceExhausted for a KV cache
// over the memory limit), and Internal when the model gives a non-finite logit (naming the token
// index). On error no sequence of this call is left in the model.
absl::StatusOr<PerplexityResult> Perplexity(ShardModel& model, std::span<const int32_t> ids,
                                            int64_t window, int64_t stride,
                                            const PerplexityOptions& options = {});

}  // namespace llmint8::model

#endif  // LLMINT8_MODEL_PERPLEXITY_H_
