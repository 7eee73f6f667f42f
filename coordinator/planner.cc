#include "coordinator/planner.h"

#include <algorithm>
#include <filesystem>
#include <initializer_list>
#include <numeric>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "common/json_text.h"
#include "common/status_macros.h"
#include "model/kv_granule.h"
#include "model/shard_plan.h"
#include "nlohmann/json.hpp"

namespace llmint8::coordinator {
namespace {

using model::OptConfig;

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Debian's abseil has its own string_view type; the public API speaks std::string_view.
absl::string_view Av(std::string_view s) { return absl::string_view(s.data(), s.size()); }

std::string ModelName(const OptConfig& config) {
  return config.name.empty() ? std::string("model") : config.name;
}

absl::Status ValidateConfig(const OptConfig& c) {
  // Every size positive and bounded: the byte counts below multiply some dimensions unchecked
  // (4 * attn * h, ...).
  if (absl::Status shape = model::CheckOptConfigShape(c); !shape.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(ModelName(c), ": ", shape.message()));
  }
  return absl::OkStatus();
}

// Batch and context actually used; context 0 means the model's maximum.
struct ReserveTokens {
  int64_t batch = 0;
  int64_t context = 0;
};

absl::StatusOr<ReserveTokens> ResolveReserve(const OptConfig& c, const Reserve& r) {
  if (r.bytes_per_gpu.has_value()) {
    if (*r.bytes_per_gpu < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("reserve bytes per GPU must be >= 0, got ", *r.bytes_per_gpu));
    }
    return ReserveTokens{0, 0};
  }
  if (r.batch < 1) {
    return absl::InvalidArgumentError(absl::StrCat("batch must be >= 1, got ", r.batch));
  }
  const int64_t context = r.context == 0 ? c.max_position_embeddings : r.context;
  if (context < 1 || context > c.max_position_embeddings) {
    return absl::InvalidArgumentError(absl::StrCat("context must be in [1, ",
                                                   c.max_position_embeddings, "] (", ModelName(c),
                                                   "'s max_position_embeddings), got ", r.context));
  }
  return ReserveTokens{r.batch, context};
}

// Saturating helpers: sizes of absurd configs must not overflow into "fits".
constexpr int64_t kSaturated = int64_t{1} << 62;
int64_t Mul(int64_t a, int64_t b) {
  if (a == 0 || b == 0) return 0;
  if (a > kSaturated / b) return kSaturated;
  return a * b;
}
int64_t Add(int64_t a, int64_t b) { return a > kSaturated - b ? kSaturated : a + b; }

std::string JoinTp(const std::vector<int>& tps) { return absl::StrJoin(tps, ", "); }

// What a CPU worker's activation buffers hold for a step of `tokens` tokens and `rows` logit
// rows: ShardModel::ScratchBytesFor's count (model/shard_model.cc), term for term. Every buffer
// of a layer at once (ids and positions, project_in's and project_out's outputs where the model
// has them, residual / normed / partial sums, q/k/v, the attention and FFN outputs), one
// sequence's attention row, per logits row the head's input and projection, the full
// vocabulary and with TP the slice and the all-gather; for int8 the largest linear's quantized
// input and scale, int32 accumulators and the GEMM's packing buffers.
int64_t CpuWorkspaceBytes(const OptConfig& c, bool int8, int tp, int64_t tokens, int64_t rows,
                          int64_t context) {
  const int64_t h = c.hidden_size;
  const int64_t lw = CeilDiv(h, tp);  // (a valid tp divides both; else the largest rank's)
  const int64_t lf = CeilDiv(c.ffn_dim, tp);
  const int64_t rpr = CeilDiv(c.vocab_size, tp);
  const int64_t proj = c.has_projections() ? c.word_embed_proj_dim : 0;
  int64_t floats = Mul(tokens, 2 + proj + 3 * h + 3 * lw + lw + lf);
  floats = Add(floats, c.head_dim() + context);
  floats = Add(floats, Mul(rows, h + proj + c.vocab_size + (tp > 1 ? rpr + rpr * tp : 0)));
  int64_t bytes = Mul(floats, 4);
  if (int8) {
    const int64_t max_k = std::max({h, lw, lf});
    const int64_t max_n = std::max({3 * lw, h, lf});
    bytes = Add(bytes, Mul(tokens, 3 * max_k + 4 + 4 * max_n));
  }
  return bytes;
}

// A size that may have saturated: past the cap it is no real figure.
std::string SizeText(int64_t bytes) {
  return bytes >= kSaturated ? "more than 4 EiB" : FormatBytes(bytes);
}

std::string FitFailureDetail(const OptConfig& c, const MemoryBreakdown& m) {
  return absl::StrCat("per GPU ", SizeText(m.Total()), ": weights ", SizeText(m.weights),
                      ", scales ", SizeText(m.int8_scales), ", fp16 tensors ",
                      SizeText(m.fp16_tensors), ", KV cache ", SizeText(m.kv_cache), ", workspace ",
                      SizeText(m.workspace), ", runtime ", SizeText(m.runtime), "; TP must divide ",
                      c.num_attention_heads, " heads and ffn_dim ", c.ffn_dim);
}

// A GPU size as given; a decimal one (typed "24GB": 24 x 10^9 bytes) with what it is in GiB,
// since the cards sold as "24 GB" hold 24 GiB (docs/planner.md, "Units").
std::string GpuSizeText(int64_t bytes) {
  std::string text = FormatBytes(bytes);
  if (absl::EndsWith(text, " GB")) {
    absl::StrAppendFormat(&text, " (%.2f GiB)", static_cast<double>(bytes) / kGiB);
  }
  return text;
}

}  // namespace

std::string_view WeightDTypeName(WeightDType dtype) {
  return dtype == WeightDType::kInt8 ? "int8" : "fp16";
}

absl::StatusOr<WeightDType> ParseWeightDType(std::string_view name) {
  const std::string n = absl::AsciiStrToLower(Av(name));
  if (n == "int8" || n == "i8") return WeightDType::kInt8;
  if (n == "fp16" || n == "f16" || n == "float16" || n == "half") return WeightDType::kF16;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown dtype \"", Av(name), "\": use fp16 or int8"));
}

int64_t MemoryBreakdown::Total() const {
  int64_t sum = 0;
  for (const int64_t part : {weights, int8_scales, fp16_tensors, kv_cache, workspace, runtime}) {
    sum = Add(sum, part);
  }
  return sum;
}

absl::StatusOr<MemoryBreakdown> BytesPerGpu(const OptConfig& c, WeightDType dtype, int tp,
                                            const Reserve& reserve, const PlanOptions& options) {
  RETURN_IF_ERROR(ValidateConfig(c));
  if (tp < 1) return absl::InvalidArgumentError(absl::StrCat("TP degree must be >= 1, got ", tp));
  if (options.runtime_overhead_bytes < 0 || options.max_step_tokens < 0 ||
      options.max_step_rows < 0 || options.max_sequences < 0) {
    return absl::InvalidArgumentError(
        "runtime overhead bytes, step tokens and rows, and sequences must be >= 0");
  }
  ASSIGN_OR_RETURN(const ReserveTokens tokens, ResolveReserve(c, reserve));
  const bool int8 = dtype == WeightDType::kInt8;
  const int64_t h = c.hidden_size;
  const int64_t layers = c.num_hidden_layers;
  const int64_t e = c.word_embed_proj_dim > 0 ? c.word_embed_proj_dim : h;
  // This rank's share; rounded up so that a non-divisor tp gives the largest rank's bytes.
  const int64_t attn = CeilDiv(c.num_attention_heads, tp) * c.head_dim();  // q/k/v rows
  const int64_t ffn = CeilDiv(c.ffn_dim, tp);
  const int64_t vocab = CeilDiv(c.vocab_size, tp);

  MemoryBreakdown m;
  // q, k, v: [attn, h] column-parallel; out_proj: [h, attn] row-parallel;
  // fc1: [ffn, h] column-parallel; fc2: [h, ffn] row-parallel.
  const int64_t linear_params = Mul(layers, 4 * attn * h + 2 * ffn * h);
  m.weights = Mul(linear_params, int8 ? 1 : 2);
  // One fp32 scale per output row of each int8 weight (row-parallel outputs are full width).
  m.int8_scales = int8 ? Mul(layers, (3 * attn + h + ffn + h) * 4) : 0;

  // Biases and LayerNorms: fp16 on a GPU, fp32 on a CPU worker.
  int64_t small_elems = 0;
  if (c.enable_bias) small_elems = Add(small_elems, Mul(layers, 3 * attn + h + ffn + h));
  if (c.layer_norm_elementwise_affine) {
    small_elems = Add(small_elems, Mul(layers, 4 * h));                   // 2 LayerNorms x (w, b)
    if (c.has_final_layer_norm()) small_elems = Add(small_elems, 2 * h);  // final LayerNorm
  }
  int64_t fp16_elems = 0;
  fp16_elems = Add(fp16_elems, Mul(vocab, e));                              // embed / tied LM head
  if (!c.tie_word_embeddings) fp16_elems = Add(fp16_elems, Mul(vocab, e));  // separate LM head
  fp16_elems = Add(fp16_elems, Mul(c.max_position_embeddings + 2, h));      // OPT's offset of 2
  if (e != h) fp16_elems = Add(fp16_elems, Mul(2 * e, h));                  // project_in / out
  m.fp16_tensors = Add(Mul(fp16_elems, 2), Mul(small_elems, options.cpu ? 4 : 2));

  if (reserve.bytes_per_gpu.has_value()) {
    m.kv_cache = 0;
    m.workspace = *reserve.bytes_per_gpu;
  } else {
    const int64_t batch = tokens.batch;
    const int64_t context = tokens.context;
    // K and V, every layer, the full context of every sequence: fp16 (fp32 on a CPU worker,
    // whose cache may hold twice a sequence's positions and a granule more while it grows).
    int64_t positions = Mul(batch, context);
    if (options.cpu) {
      const int64_t sequences = options.max_sequences > 0 ? options.max_sequences : batch;
      positions = Mul(Add(positions, Mul(sequences, model::kKvGranule)), 2);
    }
    m.kv_cache = Mul(Mul(2 * layers, positions), attn * (options.cpu ? 4 : 2));
    // The largest step: the one a coordinator's workers keep room for (options.max_step_tokens
    // and max_step_rows), else a prefill of batch x context tokens within the scheduler's
    // default budget (4096, or a whole context) with a logits row per sequence. On a GPU
    // activations are counted at 4 bytes (an upper bound for fp16): residual + normalized
    // input, the widest column-parallel output (QKV or FC1), and for int8 the quantized input
    // (1 byte) and the int32 accumulator of the widest GEMM; a CPU worker's are its runtime's
    // buffers (CpuWorkspaceBytes).
    const int64_t tokens_in_step =
        options.max_step_tokens > 0
            ? options.max_step_tokens
            : std::min(Mul(batch, context), std::max(kDefaultMaxPrefillTokens, context));
    const int64_t rows = options.max_step_rows > 0 ? options.max_step_rows : batch;
    if (options.cpu) {
      m.workspace = CpuWorkspaceBytes(c, int8, tp, tokens_in_step, rows, context);
    } else {
      const int64_t widest_out = std::max(3 * attn, ffn);
      int64_t per_token = 4 * (2 * h + widest_out);
      if (int8) per_token += std::max(h, ffn) + 4 * std::max(widest_out, h);
      // Attention scores of one sequence at a time (local heads x context^2, fp32).
      const int64_t scores = Mul(Mul(CeilDiv(c.num_attention_heads, tp), context), context * 4);
      // Each logits row (the last position of each sequence, every position of a scored
      // chunk): this rank's vocab shard + the gathered row.
      const int64_t logits = Mul(rows, (vocab + c.vocab_size) * 4);
      m.workspace = Add(Add(Mul(tokens_in_step, per_token), scores), logits);
    }
  }
  m.runtime = options.runtime_overhead_bytes;
  return m;
}

absl::StatusOr<PlanResult> Plan(const OptConfig& config, WeightDType dtype, int64_t gpu_bytes,
                                const Reserve& reserve, const PlanOptions& options) {
  RETURN_IF_ERROR(ValidateConfig(config));
  if (gpu_bytes <= 0 || gpu_bytes >= kSaturated) {
    return absl::InvalidArgumentError(
        absl::StrCat("GPU memory must be > 0 and < 2^62 bytes, got ", gpu_bytes));
  }
  if (options.available_gpus < 0) {
    return absl::InvalidArgumentError("available GPUs must be >= 0 (0 = as many as needed)");
  }
  ASSIGN_OR_RETURN(const ReserveTokens tokens, ResolveReserve(config, reserve));

  PlanResult result;
  result.model = ModelName(config);
  result.dtype = dtype;
  result.gpu_bytes = gpu_bytes;
  result.batch = tokens.batch;
  result.context = tokens.context;
  result.valid_tp = model::ValidTpDegrees(config);

  // Fewest GPUs by memory alone (tp may be any integer up to the head count).
  for (int t = 1; t <= config.num_attention_heads; ++t) {
    ASSIGN_OR_RETURN(const MemoryBreakdown m, BytesPerGpu(config, dtype, t, reserve, options));
    if (m.Total() <= gpu_bytes) {
      result.min_gpus_by_memory = t;
      break;
    }
  }
  const std::string what = absl::StrCat(result.model, " ", Av(WeightDTypeName(dtype)));
  for (int t : result.valid_tp) {
    if (t < result.min_gpus_by_memory) continue;
    ASSIGN_OR_RETURN(const MemoryBreakdown m, BytesPerGpu(config, dtype, t, reserve, options));
    if (m.Total() > gpu_bytes) continue;  // per-rank bytes are not monotone in tp; be safe
    result.tp = t;
    result.per_gpu = m;
    result.headroom_bytes = gpu_bytes - m.Total();
    break;
  }
  if (result.tp == 0) {
    const int max_tp = result.valid_tp.empty() ? 1 : result.valid_tp.back();
    ASSIGN_OR_RETURN(const MemoryBreakdown m, BytesPerGpu(config, dtype, max_tp, reserve, options));
    return absl::FailedPreconditionError(
        absl::StrCat(what, " does not fit on ", GpuSizeText(gpu_bytes),
                     " GPUs at any TP degree (at TP=", max_tp, ": ", FitFailureDetail(config, m),
                     "); use GPUs with more memory or a smaller batch / context"));
  }
  if (options.available_gpus > 0 && result.tp > options.available_gpus) {
    std::string why;
    if (result.min_gpus_by_memory != result.tp) {
      why = absl::StrCat("; ", result.min_gpus_by_memory, " would hold it but TP must divide ",
                         config.num_attention_heads, " heads and ffn_dim ", config.ffn_dim,
                         " (valid: ", JoinTp(result.valid_tp), ")");
    }
    return absl::FailedPreconditionError(absl::StrCat(what, " needs ", result.tp, " x ",
                                                      GpuSizeText(gpu_bytes), "; ",
                                                      options.available_gpus, " given", why));
  }
  return result;
}

std::vector<GpuSize> DefaultCompareGpuSizes() {
  return {
      {"24 GB", 24 * kGiB},       // RTX 3090 / 4090 (24576 / 24564 MiB; an A10 has 23028)
      {"40 GB", 40 * kGiB},       // A100 40GB (40960 MiB)
      {"80 GB", 80 * kGiB},       // A100 / H100 80GB (81920 MiB)
      {"141 GB", 143771 * kMiB},  // H200: nvidia-smi reports 143771 MiB (140.4 GiB)
  };
}

absl::StatusOr<CompareTable> Compare(const OptConfig& config, std::span<const GpuSize> gpus,
                                     const Reserve& reserve, const PlanOptions& options) {
  RETURN_IF_ERROR(ValidateConfig(config));
  ASSIGN_OR_RETURN(const ReserveTokens tokens, ResolveReserve(config, reserve));
  CompareTable table;
  table.model = ModelName(config);
  table.batch = tokens.batch;
  table.context = tokens.context;
  PlanOptions unlimited = options;
  unlimited.available_gpus = 0;
  for (const GpuSize& gpu : gpus) {
    CompareRow row{gpu, std::nullopt, std::nullopt};
    for (WeightDType dtype : {WeightDType::kF16, WeightDType::kInt8}) {
      absl::StatusOr<PlanResult> plan = Plan(config, dtype, gpu.bytes, reserve, unlimited);
      if (!plan.ok() && plan.status().code() != absl::StatusCode::kFailedPrecondition) {
        return plan.status();
      }
      auto& slot = dtype == WeightDType::kF16 ? row.fp16 : row.int8;
      if (plan.ok()) slot = *std::move(plan);
    }
    table.rows.push_back(std::move(row));
  }
  return table;
}

absl::StatusOr<GroupDecision> PlanGroup(const OptConfig& config, WeightDType dtype,
                                        std::span<const int64_t> worker_bytes,
                                        const Reserve& reserve, const PlanOptions& options) {
  RETURN_IF_ERROR(ValidateConfig(config));
  RETURN_IF_ERROR(ResolveReserve(config, reserve).status());
  if (worker_bytes.empty()) {
    return absl::InvalidArgumentError("no workers joined: start workers before planning");
  }
  for (size_t i = 0; i < worker_bytes.size(); ++i) {
    if (worker_bytes[i] <= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("worker ", i, " reported ", worker_bytes[i], " bytes of memory"));
    }
  }
  const int joined = static_cast<int>(worker_bytes.size());
  // Largest first; ties keep the lower index.
  std::vector<int> order(worker_bytes.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int a, int b) { return worker_bytes[a] > worker_bytes[b]; });

  auto try_fit = [&](WeightDType d) -> absl::StatusOr<std::optional<GroupDecision>> {
    for (int t : model::ValidTpDegrees(config)) {
      if (t > joined) break;
      const int64_t capacity = worker_bytes[order[t - 1]];
      ASSIGN_OR_RETURN(const MemoryBreakdown m, BytesPerGpu(config, d, t, reserve, options));
      if (m.Total() > capacity) continue;
      PlanOptions exact = options;
      exact.available_gpus = 0;
      // Every smaller valid tp failed with a capacity >= this one, so Plan picks t too.
      ASSIGN_OR_RETURN(PlanResult plan, Plan(config, d, capacity, reserve, exact));
      GroupDecision decision;
      decision.plan = std::move(plan);
      decision.workers.assign(order.begin(), order.begin() + t);
      std::sort(decision.workers.begin(), decision.workers.end());
      decision.summary = absl::StrCat(Av(WeightDTypeName(d)), " fits in ", t, " of ", joined,
                                      " workers (TP=", t, ")");
      return std::optional<GroupDecision>(std::move(decision));
    }
    return std::optional<GroupDecision>();
  };

  ASSIGN_OR_RETURN(std::optional<GroupDecision> fit, try_fit(dtype));
  if (fit.has_value()) return *std::move(fit);

  // Does not fit: say how many workers like the smallest one it would take.
  const int64_t smallest = *std::min_element(worker_bytes.begin(), worker_bytes.end());
  auto need = [&](WeightDType d) -> std::string {
    PlanOptions any_count = options;
    any_count.available_gpus = 0;
    absl::StatusOr<PlanResult> p = Plan(config, d, smallest, reserve, any_count);
    if (!p.ok())
      return absl::StrCat(Av(WeightDTypeName(d)), " does not fit in workers with ",
                          FormatBytes(smallest), " at any TP degree");
    return absl::StrCat(Av(WeightDTypeName(d)), " needs ", p->tp, " workers with ",
                        FormatBytes(smallest));
  };
  std::string message = absl::StrCat(need(dtype), ", ", joined, " joined");
  if (dtype == WeightDType::kF16) {
    ASSIGN_OR_RETURN(std::optional<GroupDecision> int8_fit, try_fit(WeightDType::kInt8));
    if (int8_fit.has_value()) {
      absl::StrAppend(&message, "; int8 fits in ", int8_fit->plan.tp);
    } else {
      absl::StrAppend(&message, "; ", need(WeightDType::kInt8));
    }
  }
  absl::StrAppend(&message, " (", ModelName(config), ")");
  return absl::FailedPreconditionError(message);
}

absl::StatusOr<int64_t> ParseGpuMemory(std::string_view text) {
  absl::StatusOr<int64_t> bytes = ParseByteSize(text, kGiB);
  if (!bytes.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("--gpu-memory: ", bytes.status().message()));
  }
  if (*bytes <= 0) return absl::InvalidArgumentError("--gpu-memory must be more than 0");
  return *bytes;
}

// --- Rendering ------------------------------------------------------------------------------

namespace {

std::string ReserveText(int64_t batch, int64_t context) {
  if (batch == 0) return "explicit KV/workspace reserve";
  return absl::StrCat("reserve batch ", batch, " x context ", context);
}

nlohmann::json BreakdownJson(const MemoryBreakdown& m) {
  return nlohmann::json{
      {"weights", m.weights},   {"int8_scales", m.int8_scales}, {"fp16_tensors", m.fp16_tensors},
      {"kv_cache", m.kv_cache}, {"workspace", m.workspace},     {"runtime", m.runtime},
      {"total", m.Total()}};
}

std::string Cell(const std::optional<PlanResult>& plan) {
  if (!plan.has_value()) return "-";
  return absl::StrCat(plan->tp, " (", FormatBytes(plan->per_gpu.Total()), ")");
}

}  // namespace

std::string PlanToText(const PlanResult& p) {
  std::string out =
      absl::StrFormat("%s %s on %s GPUs: TP=%d (%d %s)\n", p.model, WeightDTypeName(p.dtype),
                      GpuSizeText(p.gpu_bytes), p.tp, p.tp, p.tp == 1 ? "GPU" : "GPUs");
  if (p.min_gpus_by_memory != p.tp) {
    absl::StrAppendFormat(&out, "  %d GPUs would hold it, but TP must be one of: %s\n",
                          p.min_gpus_by_memory, JoinTp(p.valid_tp));
  }
  absl::StrAppendFormat(&out, "  %s\n  bytes per GPU:\n", ReserveText(p.batch, p.context));
  const std::pair<const char*, int64_t> rows[] = {
      {"weights", p.per_gpu.weights},
      {"int8 scales", p.per_gpu.int8_scales},
      {"fp16 tensors", p.per_gpu.fp16_tensors},
      {"KV cache", p.per_gpu.kv_cache},
      {"workspace", p.per_gpu.workspace},
      {"runtime", p.per_gpu.runtime},
      {"total", p.per_gpu.Total()},
      {"headroom", p.headroom_bytes},
  };
  for (const auto& [name, bytes] : rows) {
    absl::StrAppendFormat(&out, "    %-13s %15d  %s\n", name, bytes, FormatBytes(bytes));
  }
  return out;
}

nlohmann::json PlanToJson(const PlanResult& p) {
  return nlohmann::json{
      {"model", p.model},
      {"dtype", std::string(WeightDTypeName(p.dtype))},
      {"gpu_bytes", p.gpu_bytes},
      {"tp", p.tp},
      {"gpus", p.tp},
      {"min_gpus_by_memory", p.min_gpus_by_memory},
      {"batch", p.batch},
      {"context", p.context},
      {"per_gpu", BreakdownJson(p.per_gpu)},
      {"headroom_bytes", p.headroom_bytes},
      {"valid_tp", p.valid_tp},
  };
}

std::string CompareToText(const CompareTable& t) {
  std::string out = absl::StrFormat("%s, %s: GPUs needed (= TP degree) and bytes per GPU\n",
                                    t.model, ReserveText(t.batch, t.context));
  absl::StrAppendFormat(&out, "  %-8s %-20s %-20s %s\n", "GPU", "fp16", "int8", "int8 saves");
  for (const CompareRow& row : t.rows) {
    std::string saves = "-";
    if (row.fp16.has_value() && row.int8.has_value()) {
      const int saved = row.fp16->tp - row.int8->tp;
      const int count = saved < 0 ? -saved : saved;
      saves = absl::StrCat(saved < 0 ? "needs " : "", count, count == 1 ? " GPU" : " GPUs",
                           saved < 0 ? " more" : "");
    } else if (row.int8.has_value()) {
      saves = "fp16 does not fit";
    }
    absl::StrAppendFormat(&out, "  %-8s %-20s %-20s %s\n", row.gpu.label, Cell(row.fp16),
                          Cell(row.int8), saves);
  }
  return out;
}

nlohmann::json CompareToJson(const CompareTable& t) {
  nlohmann::json rows = nlohmann::json::array();
  for (const CompareRow& row : t.rows) {
    rows.push_back({
        {"gpu", row.gpu.label},
        {"gpu_bytes", row.gpu.bytes},
        {"fp16", row.fp16.has_value() ? PlanToJson(*row.fp16) : nlohmann::json(nullptr)},
        {"int8", row.int8.has_value() ? PlanToJson(*row.int8) : nlohmann::json(nullptr)},
    });
  }
  return nlohmann::json{
      {"model", t.model}, {"batch", t.batch}, {"context", t.context}, {"rows", rows}};
}

// --- `llmint8 plan` -------------------------------------------------------------------------

namespace {

absl::StatusOr<OptConfig> ResolveModel(const std::string& model) {
  if (model.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("--model is required: a preset (",
                                                   absl::StrJoin(model::OptPresetNames(), ", "),
                                                   ") or a path to a config.json"));
  }
  std::error_code ec;
  const std::filesystem::path path(model);
  if (absl::EndsWith(model, ".json") || std::filesystem::is_regular_file(path, ec)) {
    ASSIGN_OR_RETURN(OptConfig config, model::LoadOptConfig(model));
    if (config.name.empty()) config.name = model;
    return config;
  }
  if (std::filesystem::is_directory(path, ec)) {
    ASSIGN_OR_RETURN(OptConfig config, model::LoadOptConfig((path / "config.json").string()));
    if (config.name.empty()) config.name = model;
    return config;
  }
  return model::OptPreset(model);
}

}  // namespace

absl::StatusOr<std::string> RunPlanCommand(const PlanCommand& command) {
  ASSIGN_OR_RETURN(const OptConfig config, ResolveModel(command.model));
  const Reserve reserve = Reserve::Tokens(command.batch, command.context);
  if (command.compare) {
    const std::vector<GpuSize> gpus = DefaultCompareGpuSizes();
    ASSIGN_OR_RETURN(const CompareTable table, Compare(config, gpus, reserve));
    return command.json ? JsonText(CompareToJson(table), 2) + "\n" : CompareToText(table);
  }
  ASSIGN_OR_RETURN(const WeightDType dtype, ParseWeightDType(command.dtype));
  ASSIGN_OR_RETURN(const int64_t gpu_bytes, ParseGpuMemory(command.gpu_memory));
  if (command.gpus < 0) return absl::InvalidArgumentError("--gpus must be >= 0");
  PlanOptions options;
  options.available_gpus = command.gpus;
  ASSIGN_OR_RETURN(const PlanResult plan, Plan(config, dtype, gpu_bytes, reserve, options));
  return command.json ? JsonText(PlanToJson(plan), 2) + "\n" : PlanToText(plan);
}

}  // namespace llmint8::coordinator
