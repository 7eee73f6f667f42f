// Megatron-style tensor-parallel shard plan for OPT: which slice of every weight a rank holds.
//
// For TP degree `tp` and rank `r` (0 <= r < tp), with h = hidden, H = heads, d = h / H:
//   - q/k/v_proj and fc1 are column-parallel: rank r holds a ROW range of the [out, in] weight
//     (and the same range of the bias): heads [r*H/tp, (r+1)*H/tp), i.e. rows
//     [r*h/tp, (r+1)*h/tp) of q/k/v, and rows [r*ffn/tp, (r+1)*ffn/tp) of fc1. The input is
//     the full (replicated) activation.
//   - out_proj and fc2 are row-parallel: rank r holds a COLUMN range of the weight (the same
//     range as its q/k/v rows, resp. fc1 rows); partial outputs are summed with an all-reduce.
//     Their biases are replicated and added ONCE, after the all-reduce (not on every rank).
//   - embed_tokens and the tied LM head are vocab-parallel, see VocabShard below.
//   - LayerNorms, embed_positions, project_in/out are replicated (full tensors on every rank).
// TP must divide num_attention_heads and ffn_dim (vocab need not: it is padded).
//
// Vocab padding (vocab 50272 = 2^5 * 1571 is not divisible by e.g. 3 or 5):
//   rows_per_rank = ceil(vocab / tp), padded_vocab = rows_per_rank * tp.
//   Rank r owns vocab ids [r*rows_per_rank, min((r+1)*rows_per_rank, vocab)) — the last ranks
//   may own fewer (even zero) real rows. Embedding: a rank contributes the rows it owns and
//   zeros elsewhere; the all-reduce sums. LM head: every rank produces rows_per_rank logits
//   (so AllGather sees equal sizes), the rows past its real range are padding that the
//   runtime sets to -inf; after the all-gather, logits [vocab, padded_vocab) are dropped.
#ifndef LLMINT8_MODEL_SHARD_PLAN_H_
#define LLMINT8_MODEL_SHARD_PLAN_H_

#include <cstdint>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "model/checkpoint.h"
#include "model/config.h"

namespace llmint8::model {

enum class Parallelism {
  kReplicated,  // full tensor on every rank
  kColumn,      // row range of the [out, in] weight (and its bias)
  kRow,         // column range of the [out, in] weight; bias replicated, added after all-reduce
  kVocab,       // row range of embed_tokens / lm_head (vocab ids)
};

struct VocabShard {
  Range rows;             // real vocab ids this rank owns (may be empty on the last ranks)
  int64_t rows_per_rank;  // ceil(vocab / tp): logits each rank produces, padding included
  int64_t padded_vocab;   // rows_per_rank * tp
};

// The slice of one tensor a rank holds, in the [rows, cols] view of checkpoint.h.
struct TensorSlice {
  Parallelism parallelism = Parallelism::kReplicated;
  Range rows;
  Range cols;
};

struct ShardPlan {
  int tp = 1;
  int rank = 0;
  int64_t local_heads = 0;  // num_attention_heads / tp
  Range heads;              // global head indices of this rank
  Range attn_rows;          // rows of q/k/v weight+bias == columns of out_proj.weight
  Range ffn_rows;           // rows of fc1 weight+bias == columns of fc2.weight
  VocabShard vocab;

  // The slice of the canonical (or unprefixed) tensor `name` that this rank loads, given the
  // tensor's full [rows, cols] extent under `config`. InvalidArgument for a name that is not an
  // OPT tensor of this config.
  absl::StatusOr<TensorSlice> SliceFor(const OptConfig& config, std::string_view name) const;
};

// InvalidArgument when tp does not divide heads/ffn ("valid TP degrees for opt-13b: 1, 2, 4, 5,
// 8, 10, 20, 40") or rank is out of [0, tp).
absl::StatusOr<ShardPlan> MakeShardPlan(const OptConfig& config, int tp, int rank);

// Every TP degree that divides both num_attention_heads and ffn_dim, ascending (none for a
// config beyond CheckOptConfigShape's kMaxLayersOrHeads heads).
std::vector<int> ValidTpDegrees(const OptConfig& config);

}  // namespace llmint8::model

#endif  // LLMINT8_MODEL_SHARD_PLAN_H_
