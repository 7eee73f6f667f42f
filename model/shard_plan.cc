#include "model/shard_plan.h"

#include <algorithm>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "model/tensor_names.h"

namespace llmint8::model {
namespace {

bool EndsWith(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

}  // namespace

std::vector<int> ValidTpDegrees(const OptConfig& config) {
  std::vector<int> out;
  if (config.num_attention_heads <= 0 || config.ffn_dim <= 0 ||
      config.num_attention_heads > kMaxLayersOrHeads) {
    return out;
  }
  for (int tp = 1; tp <= config.num_attention_heads; ++tp) {
    if (config.num_attention_heads % tp == 0 && config.ffn_dim % tp == 0) out.push_back(tp);
  }
  return out;
}

absl::StatusOr<ShardPlan> MakeShardPlan(const OptConfig& config, int tp, int rank) {
  const std::string model = config.name.empty() ? "this model" : config.name;
  if (config.num_attention_heads <= 0 || config.ffn_dim <= 0 || config.hidden_size <= 0 ||
      config.vocab_size <= 0 || config.hidden_size % config.num_attention_heads != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("config of ", model, " has no valid shape for a shard plan"));
  }
  if (tp < 1 || config.num_attention_heads % tp != 0 || config.ffn_dim % tp != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "TP degree ", tp, " must divide num_attention_heads (", config.num_attention_heads,
        ") and ffn_dim (", config.ffn_dim, "); valid TP degrees for ", model, ": ",
        absl::StrJoin(ValidTpDegrees(config), ", ")));
  }
  if (rank < 0 || rank >= tp) {
    return absl::InvalidArgumentError(
        absl::StrCat("rank ", rank, " is outside [0, ", tp, ") for TP degree ", tp));
  }
  ShardPlan p;
  p.tp = tp;
  p.rank = rank;
  p.local_heads = config.num_attention_heads / tp;
  p.heads = {rank * p.local_heads, (rank + 1) * p.local_heads};
  const int64_t d = config.head_dim();
  p.attn_rows = {p.heads.begin * d, p.heads.end * d};
  const int64_t f = config.ffn_dim / tp;
  p.ffn_rows = {rank * f, (rank + 1) * f};
  const int64_t per = (config.vocab_size + tp - 1) / tp;
  p.vocab.rows_per_rank = per;
  p.vocab.padded_vocab = per * tp;
  const int64_t vb = std::min<int64_t>(rank * per, config.vocab_size);
  const int64_t ve = std::min<int64_t>((rank + 1) * per, config.vocab_size);
  p.vocab.rows = {vb, ve};
  return p;
}

absl::StatusOr<TensorSlice> ShardPlan::SliceFor(const OptConfig& config,
                                                std::string_view name) const {
  const std::string n = CanonicalTensorName(name);
  const std::vector<int64_t> shape = ExpectedShape(config, n);
  if (shape.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("\"", n, "\" is not a tensor of OPT config ", config.name));
  }
  const int64_t rows = shape[0];
  const int64_t cols = shape.size() > 1 ? shape[1] : 1;
  TensorSlice s{Parallelism::kReplicated, {0, rows}, {0, cols}};
  if (n == kEmbedTokens || n == kLmHead) {
    s.parallelism = Parallelism::kVocab;
    s.rows = vocab.rows;
    return s;
  }
  if (n.find(".layers.") == std::string::npos) return s;  // positions, norms, projections
  for (std::string_view proj : {".self_attn.q_proj.", ".self_attn.k_proj.", ".self_attn.v_proj."}) {
    if (n.find(proj) != std::string::npos) {
      s.parallelism = Parallelism::kColumn;
      s.rows = attn_rows;
      return s;
    }
  }
  if (n.find(".fc1.") != std::string::npos) {
    s.parallelism = Parallelism::kColumn;
    s.rows = ffn_rows;
    return s;
  }
  if (EndsWith(n, ".self_attn.out_proj.weight")) {
    s.parallelism = Parallelism::kRow;
    s.cols = attn_rows;
    return s;
  }
  if (EndsWith(n, ".fc2.weight")) {
    s.parallelism = Parallelism::kRow;
    s.cols = ffn_rows;
    return s;
  }
  return s;  // layer norms, out_proj.bias, fc2.bias: replicated
}

}  // namespace llmint8::model
