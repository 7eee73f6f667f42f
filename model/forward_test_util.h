// Helpers shared by the runtime's tests (model/, tests/golden, tests/tp): small configs,
// argmax, greedy decoding through ShardModel::Step. Header-only, test code only.
#ifndef LLMINT8_MODEL_FORWARD_TEST_UTIL_H_
#define LLMINT8_MODEL_FORWARD_TEST_UTIL_H_

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "common/status_macros.h"
#include "model/config.h"
#include "model/shard_model.h"

namespace llmint8::model::testing {

// A small pre-LN OPT shape for synthetic-weight tests.
inline OptConfig SmallConfig(int64_t hidden = 128, int64_t heads = 4, int64_t layers = 2,
                             int64_t vocab = 512, int64_t max_positions = 128) {
  OptConfig c;
  c.name = "synthetic-small";
  c.hidden_size = hidden;
  c.num_hidden_layers = layers;
  c.num_attention_heads = heads;
  c.ffn_dim = 4 * hidden;
  c.vocab_size = vocab;
  c.max_position_embeddings = max_positions;
  c.word_embed_proj_dim = hidden;
  c.activation = Activation::kRelu;
  return c;
}

inline int32_t ArgMax(std::span<const float> row) {
  return static_cast<int32_t>(std::max_element(row.begin(), row.end()) - row.begin());
}

// NaN when any difference is (a NaN on either side, or infinities): every bound then fails
// (std::max would have kept the finite maximum, and rows of NaN would have passed).
inline double MaxAbsDiff(std::span<const float> a, std::span<const float> b) {
  double m = a.size() == b.size() ? 0.0 : INFINITY;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
    const double d = std::abs(static_cast<double>(a[i]) - b[i]);
    if (std::isnan(d)) return d;
    m = std::max(m, d);
  }
  return m;
}

// The larger of two differences, NaN when either is (std::max would keep a number past it).
inline double WorseDiff(double a, double b) {
  return std::isnan(a) || std::isnan(b) ? NAN : std::max(a, b);
}

struct GreedyResult {
  std::vector<std::vector<int32_t>> tokens;  // per sequence, the generated tokens
  std::vector<std::vector<float>> logits;    // per step, [batch, vocab] flattened
};

// Prefills every prompt in one batch (seq ids first_id, first_id + 1, ...), then decodes
// `steps` greedy tokens for all of them in batched decode steps. With `forced` (per sequence,
// >= steps tokens), those tokens are fed instead of the argmax (teacher forcing); `tokens`
// still records the argmax.
inline absl::StatusOr<GreedyResult> Greedy(
    ShardModel& model, const std::vector<std::vector<int32_t>>& prompts, int steps,
    uint64_t first_id = 1, const std::vector<std::vector<int32_t>>* forced = nullptr) {
  GreedyResult r;
  r.tokens.resize(prompts.size());
  std::vector<ShardModel::SequenceInput> batch(prompts.size());
  for (size_t i = 0; i < prompts.size(); ++i) batch[i] = {first_id + i, prompts[i]};
  std::vector<int32_t> next(prompts.size());
  for (int s = 0; s < steps; ++s) {
    ASSIGN_OR_RETURN(Logits logits, model.Step(batch));
    for (size_t i = 0; i < prompts.size(); ++i) {
      next[i] = ArgMax(logits.row(static_cast<int64_t>(i)));
      r.tokens[i].push_back(next[i]);
      if (forced != nullptr) next[i] = (*forced)[i][s];
    }
    r.logits.push_back(std::move(logits.values));
    for (size_t i = 0; i < prompts.size(); ++i) {
      batch[i] = {first_id + i, std::span<const int32_t>(&next[i], 1)};
    }
  }
  return r;
}

// Chunked prefill as the scheduler does it (--prefill_chunk): `other` (sequence 2) is
// prefilled first, then `prompt` (sequence 1) goes `chunk` tokens a step, each step beside a
// decode token of sequence 2. Returns the last step's logits (row 0: the prompt's last
// position).
inline absl::StatusOr<Logits> ChunkedPrefill(ShardModel& model, std::span<const int32_t> prompt,
                                             size_t chunk, std::span<const int32_t> other) {
  ShardModel::SequenceInput first{2, other};
  RETURN_IF_ERROR(model.Step({&first, 1}).status());
  const int32_t decode_token = 7;
  absl::StatusOr<Logits> last = absl::InvalidArgumentError("empty prompt");
  for (size_t begin = 0; begin < prompt.size(); begin += chunk) {
    const std::vector<ShardModel::SequenceInput> batch = {
        {1, prompt.subspan(begin, std::min(chunk, prompt.size() - begin))},
        {2, {&decode_token, 1}}};
    last = model.Step(batch);
    if (!last.ok()) return last.status();
  }
  return last;
}

// The logits of the prefix tests (SequenceInput::prefix_from), CPU and CUDA alike; in each
// pair the rows are the same sequences' (compare shared.row(i) with own.row(i)).
struct PrefixStepLogits {
  Logits shared;  // sequence 1's decode step; sequences 2, 3 started from its prefixes
  Logits own;     // the same three prefilled in full
  Logits shared_after, own_after;  // sequence 2's next decode; sequence 4 prefilled beside it
};

// `shared` prefills `prompt` as sequence 1, then in one step decodes a token for it while
// sequence 2 starts from its first prompt.size() - 1 positions (with the prompt's last token)
// and sequence 3 from its first `short_prefix` (with `tail`): a source's own new token must go
// to its cache, the others' to their copies. `own` prefills the same tokens in full. Then
// sequence 1 is released and, in one step, sequence 2 decodes a token other than the one
// sequence 1 decoded at that position while a new sequence 4 prefills `fresh`: on the GPU it
// takes the KV pages sequence 1 gave back, so a "copy" that shared them would show.
inline absl::StatusOr<PrefixStepLogits> PrefixSteps(ShardModel& shared, ShardModel& own,
                                                    std::span<const int32_t> prompt,
                                                    std::span<const int32_t> tail,
                                                    int64_t short_prefix,
                                                    std::span<const int32_t> fresh) {
  const int32_t next = 17, other = 23;
  const int64_t long_prefix = static_cast<int64_t>(prompt.size()) - 1;
  ShardModel::SequenceInput first{1, prompt};
  RETURN_IF_ERROR(shared.Step({&first, 1}).status());
  const std::vector<ShardModel::SequenceInput> forked = {{1, {&next, 1}},
                                                         {2, prompt.last(1), false, 1, long_prefix},
                                                         {3, tail, false, 1, short_prefix}};
  PrefixStepLogits out;
  ASSIGN_OR_RETURN(out.shared, shared.Step(forked));
  std::vector<int32_t> source(prompt.begin(), prompt.end());
  source.push_back(next);
  std::vector<int32_t> short_prompt(prompt.begin(), prompt.begin() + short_prefix);
  short_prompt.insert(short_prompt.end(), tail.begin(), tail.end());
  const std::vector<ShardModel::SequenceInput> prefilled = {
      {1, source}, {2, prompt}, {3, short_prompt}};
  ASSIGN_OR_RETURN(out.own, own.Step(prefilled));
  const std::vector<ShardModel::SequenceInput> after = {{2, {&other, 1}}, {4, fresh}};
  for (ShardModel* m : {&shared, &own}) {
    RETURN_IF_ERROR(m->Release(1));
    ASSIGN_OR_RETURN(Logits logits, m->Step(after));
    (m == &shared ? out.shared_after : out.own_after) = std::move(logits);
  }
  return out;
}

// The two largest values of a row (top-1, top-2).
inline std::pair<float, float> TopTwo(std::span<const float> row) {
  float first = -INFINITY, second = -INFINITY;
  for (float v : row) {
    if (v > first) {
      second = first;
      first = v;
    } else if (v > second) {
      second = v;
    }
  }
  return {first, second};
}

// A logits row's top-1 - top-2 gap: how far noise must move the logits to flip the argmax.
inline double Margin(std::span<const float> row) {
  const auto [first, second] = TopTwo(row);
  return static_cast<double>(first) - second;
}

// A logits row's top-1 - top-2 gap divided by the row's standard deviation (scale-free): how
// decided the argmax is. Agreement tests count positions below a fixed band as near-ties.
inline double RelativeGap(std::span<const float> row) {
  const auto [first, second] = TopTwo(row);
  double sum = 0, sum_sq = 0;
  for (float v : row) {
    sum += v;
    sum_sq += static_cast<double>(v) * v;
  }
  const double n = static_cast<double>(row.size());
  const double var = std::max(0.0, sum_sq / n - (sum / n) * (sum / n));
  return var > 0 ? (first - second) / std::sqrt(var) : 0.0;
}

}  // namespace llmint8::model::testing

#endif  // LLMINT8_MODEL_FORWARD_TEST_UTIL_H_
