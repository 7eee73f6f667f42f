#include "model/perplexity.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace llmint8::model {

absl::StatusOr<std::vector<PerplexityWindow>> PerplexityWindows(int64_t num_ids, int64_t window,
                                                                int64_t stride) {
  if (window < 2) {
    return absl::InvalidArgumentError(absl::StrCat("perplexity window ", window,
                                                   " must be >= 2 (a window scores tokens "
                                                   "after its first)"));
  }
  if (stride < 1 || stride > window) {
    return absl::InvalidArgumentError(
        absl::StrCat("perplexity stride ", stride, " must be in [1, window = ", window, "]"));
  }
  if (num_ids < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("perplexity needs at least 2 token ids, got ", num_ids));
  }
  std::vector<PerplexityWindow> out;
  int64_t prev_end = 0;
  for (int64_t begin = 0;; begin += stride) {
    const int64_t end = std::min(begin + window, num_ids);
    const int64_t first = std::max(prev_end, begin + 1);
    if (first < end) out.push_back({begin, first, end});
    prev_end = end;
    if (end == num_ids) break;
  }
  return out;
}

double TokenNll(std::span<const float> logits, int32_t target) {
  double mx = -std::numeric_limits<double>::infinity();
  for (float v : logits) mx = std::max(mx, static_cast<double>(v));
  double sum = 0;
  for (float v : logits) sum += std::exp(static_cast<double>(v) - mx);
  return mx + std::log(sum) - static_cast<double>(logits[target]);
}

namespace {

// Scores rows of `logits` against ids[first_id, first_id + rows); adds to nll / tokens.
absl::Status Score(const Logits& logits, std::span<const int32_t> ids, int64_t first_id,
                   PerplexityResult& r) {
  for (int64_t row = 0; row < logits.rows; ++row) {
    const int64_t i = first_id + row;
    const double nll = TokenNll(logits.row(row), ids[i]);
    if (!std::isfinite(nll)) {
      return absl::InternalError(absl::StrCat(
          "the model gave a non-finite logit predicting token index ", i,
          " (fp16 overflow or a broken checkpoint); evaluate in f32 precision to tell which"));
    }
    r.nll_sum += nll;
  }
  r.tokens += logits.rows;
  return absl::OkStatus();
}

// Runs one window as a fresh sequence `seq` (see the header); the caller releases it.
absl::Status RunWindow(ShardModel& model, std::span<const int32_t> ids, const PerplexityWindow& w,
                       uint64_t seq, int64_t max_rows, PerplexityResult& r) {
  // Context ids[begin, first_target): the last row predicts ids[first_target].
  const ShardModel::SequenceInput prefix{seq, ids.subspan(w.begin, w.first_target - w.begin)};
  ASSIGN_OR_RETURN(Logits first, model.Step(std::span(&prefix, 1), /*all_positions=*/false));
  RETURN_IF_ERROR(Score(first, ids, w.first_target, r));
  // ids[p] for p in [first_target, end - 1): row p predicts ids[p + 1].
  for (int64_t p = w.first_target; p < w.end - 1; p += max_rows) {
    const int64_t n = std::min(max_rows, w.end - 1 - p);
    const ShardModel::SequenceInput chunk{seq, ids.subspan(p, n)};
    ASSIGN_OR_RETURN(Logits rows, model.Step(std::span(&chunk, 1), /*all_positions=*/true));
    RETURN_IF_ERROR(Score(rows, ids, p + 1, r));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<PerplexityResult> Perplexity(ShardModel& model, std::span<const int32_t> ids,
                                            int64_t window, int64_t stride,
                                            const PerplexityOptions& options) {
  ASSIGN_OR_RETURN(std::vector<PerplexityWindow> windows,
                   PerplexityWindows(static_cast<int64_t>(ids.size()), window, stride));
  if (window - 1 > model.max_context()) {
    return absl::InvalidArgumentError(
        absl::StrCat("perplexity window ", window, " feeds up to ", window - 1,
                     " positions, more than the model's max context ", model.max_context(),
                     "; use a window <= ", model.max_context() + 1));
  }
  if (options.max_rows_per_step < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_rows_per_step ", options.max_rows_per_step, " must be >= 1"));
  }
  const int64_t vocab = model.config().vocab_size;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= vocab) {
      return absl::InvalidArgumentError(absl::StrCat(
          "token id ", ids[i], " at index ", i, " is outside the vocabulary [0, ", vocab, ")"));
    }
  }
  if (model.ContextLength(options.seq_id) > 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("sequence id ", options.seq_id, " is live in the model; pass another seq_id"));
  }

  PerplexityResult r;
  for (const PerplexityWindow& w : windows) {
    absl::Status st = RunWindow(model, ids, w, options.seq_id, options.max_rows_per_step, r);
    if (model.ContextLength(options.seq_id) > 0) {
      absl::Status released = model.Release(options.seq_id);
      if (st.ok()) st = released;
    }
    RETURN_IF_ERROR(st);
    ++r.windows;
    if (options.progress) {
      options.progress(r.windows, static_cast<int64_t>(windows.size()), r.nll_sum, r.tokens);
    }
  }
  r.ppl = std::exp(r.nll_sum / static_cast<double>(r.tokens));
  return r;
}

}  // namespace llmint8::model
