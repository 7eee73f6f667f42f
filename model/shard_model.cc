#include "model/shard_model.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <new>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/grow_to.h"
#include "common/status_macros.h"
#include "kernels/activation.h"
#include "kernels/attention.h"
#include "kernels/embedding.h"
#include "kernels/int8_linear.h"
#include "kernels/layer_norm.h"
#include "model/checkpoint.h"
#include "model/forward_weights.h"
#include "model/kv_cache.h"
#include "model/shard_backend.h"
#include "model/shard_plan.h"
#include "model/tensor_names.h"

namespace llmint8::model {

// Activation buffers, grown to the largest step seen and reused (no per-step allocation once
// warm). Sizes in floats; M = new tokens of the step, R = logit rows.
struct ForwardScratch {
  int64_t tokens = 0;              // M the buffers hold
  int64_t logit_rows = 0;          // R the buffers hold
  // The step's result (Logits, [R, vocab]) is allocated per step and handed out, not held here;
  // it is counted at R, as the budget (ShardModel::ScratchBytesFor) counts it, so that a step
  // checked against the limit finds room for it.
  int64_t result_bytes = 0;
  std::vector<int32_t> ids;        // [M]
  std::vector<int32_t> positions;  // [M]
  std::vector<float> embed;        // [M, proj]
  std::vector<float> x;            // [M, hidden]: the residual stream
  std::vector<float> normed;       // [M, hidden]
  std::vector<float> qkv;          // [M, 3 * local_width]
  std::vector<float> attn;         // [M, local_width]
  std::vector<float> partial;      // [M, hidden]: a row-parallel output before the reduce
  std::vector<float> ffn;          // [M, local_ffn]
  std::vector<float> attn_scratch;
  std::vector<float> head_in;       // [R, hidden]
  std::vector<float> head_proj;     // [R, proj]
  std::vector<float> local_logits;  // [R, rows_per_rank]
  std::vector<float> gathered;      // [tp, R, rows_per_rank]
  // Per-step bookkeeping, sized by the batch.
  std::vector<int64_t> first_row;                     // [B + 1]
  std::vector<int64_t> logit_row_begin;               // [B + 1]: PlanLogitRows
  std::vector<int32_t> head_rows;                     // [R]: the token row of each logits row
  std::vector<int64_t> past;                          // [B]: cached positions before the step
  std::vector<uint64_t> sorted_ids;                   // [B]
  std::vector<kernels::AttentionSequence> attention;  // [B]
  kernels::Int8LinearScratch int8;

  int64_t bytes() const {
    auto f = [](const auto& v) {
      return static_cast<int64_t>(v.capacity() *
                                  sizeof(typename std::decay_t<decltype(v)>::value_type));
    };
    return f(ids) + f(positions) + f(embed) + f(x) + f(normed) + f(qkv) + f(attn) + f(partial) +
           f(ffn) + f(attn_scratch) + f(head_in) + f(head_proj) + f(local_logits) + f(gathered) +
           f(int8.acc) + f(int8.outlier_w) + f(int8.act.q) + f(int8.act.absmax) +
           f(int8.act.outlier_cols) + f(int8.act.outliers) + result_bytes;
  }
};

ShardModel::ShardModel(const OptConfig& config, const ShardOptions& options, int tp, int rank,
                       comm::Communicator* comm)
    : config_(config),
      options_(options),
      tp_(tp),
      rank_(rank),
      comm_(comm),
      max_context_(options.max_context > 0 ? options.max_context : config.max_position_embeddings) {
}

ShardModel::~ShardModel() = default;

absl::StatusOr<std::unique_ptr<ShardModel>> ShardModel::Load(const OptConfig& config,
                                                             CheckpointSource& source, int tp,
                                                             int rank, comm::Communicator* comm,
                                                             const ShardOptions& options,
                                                             const LoadProgressFn& progress) {
  ASSIGN_OR_RETURN(ShardPlan plan, MakeShardPlan(config, tp, rank));
  if (tp > 1 && (comm == nullptr || comm->size() != tp || comm->rank() != rank)) {
    return absl::InvalidArgumentError(
        absl::StrCat("ShardModel::Load: tp=", tp, " rank=", rank,
                     " needs a communicator of that size and "
                     "rank, got ",
                     comm == nullptr ? std::string("none")
                                     : absl::StrCat(comm->size(), " ranks, rank ", comm->rank())));
  }
  if (options.max_context < 0 || options.max_context > config.max_position_embeddings) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_context ", options.max_context, " must be in [0, ",
                     config.max_position_embeddings, "] (max_position_embeddings)"));
  }
  if (!(options.threshold >= 0.0f)) {
    return absl::InvalidArgumentError(
        absl::StrCat("threshold ", options.threshold, " must be >= 0 (0: no outliers)"));
  }
  if (options.memory_limit_bytes < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "memory_limit_bytes ", options.memory_limit_bytes, " must be >= 0 (0: no limit)"));
  }
  std::unique_ptr<ShardModel> m(new ShardModel(config, options, tp, rank, comm));
  if (options.device == Device::kCuda) {
    ASSIGN_OR_RETURN(m->backend_, MakeCudaShardBackend(config, source, plan, comm, options,
                                                       m->max_context_, progress));
    return m;
  }
  if (comm != nullptr && comm->on_device()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "ShardModel (CPU) needs a host-memory communicator, got backend ", comm->backend()));
  }
  m->scratch_ = std::make_unique<ForwardScratch>();
  if (options.memory_limit_bytes > 0) {
    MemoryStats need = EstimateShardWeightBytes(config, plan, options.precision);
    need.scratch = m->ScratchBytesFor(1, 1);
    if (need.total() > options.memory_limit_bytes) {
      return absl::ResourceExhaustedError(
          absl::StrCat("shard ", rank, "/", tp, " of ", config.name, " in ",
                       std::string(PrecisionName(options.precision)), " needs ", need.DebugString(),
                       " before any KV cache; memory_limit_bytes is ", options.memory_limit_bytes,
                       ". Use a higher TP degree, int8, or more memory"));
    }
  }
  ASSIGN_OR_RETURN(m->weights_,
                   LoadShardWeights(config, source, plan, options.precision, progress));
  m->kv_ =
      std::make_unique<KvCache>(config.num_hidden_layers, config.hidden_size / tp, m->max_context_);
  RETURN_IF_ERROR(m->EnsureScratch(1, 1));
  return m;
}

int64_t ShardModel::ScratchBytesFor(int64_t tokens, int64_t logit_rows) const {
  const int64_t h = config_.hidden_size;
  const int64_t lw = h / tp_;
  const int64_t lf = config_.ffn_dim / tp_;
  const int64_t rpr = (config_.vocab_size + tp_ - 1) / tp_;
  // project_in's output and project_out's, only where the model has them (else unused).
  const int64_t proj_buf = config_.has_projections() ? config_.word_embed_proj_dim : 0;
  const int64_t floats =
      tokens * (2 + proj_buf + 3 * h + 3 * lw + lw + lf) + config_.head_dim() + max_context_ +
      // Per logits row: the head's input and projection, the step's result
      // (the full vocabulary), and with TP the slice and the all-gather.
      logit_rows * (h + proj_buf + config_.vocab_size + (tp_ > 1 ? rpr + rpr * tp_ : 0));
  int64_t int8 = 0;
  if (options_.precision == Precision::kInt8) {
    // The largest linear's quantized activations (k bytes and a scale per token), its int32
    // accumulators (4 n per token) and the AVX2 GEMM's packing buffers (about 2 k per token,
    // held during the call; kernels/int8_gemm.h). Not the outlier buffers (an fp32 value per
    // token and a dequantized weight column per outlier column): they grow with the outliers
    // found, a handful at threshold 6, and may take the shard past its limit, after which
    // steps that grow nothing still run (Step).
    const int64_t max_k = std::max({h, lw, lf});
    const int64_t max_n = std::max({3 * lw, h, lf});
    int8 = tokens * (3 * max_k + 4 + 4 * max_n);
  }
  return floats * 4 + int8;
}

absl::Status ShardModel::EnsureScratch(int64_t tokens, int64_t logit_rows) {
  ForwardScratch& s = *scratch_;
  const int64_t h = config_.hidden_size;
  const int64_t proj_buf = config_.has_projections() ? config_.word_embed_proj_dim : 0;
  const int64_t lw = h / tp_;
  const int64_t lf = config_.ffn_dim / tp_;
  const int64_t rpr = weights_->rows_per_rank;
  // The sizes are recorded only once every buffer has them: a resize that throws (no memory)
  // must not leave a size the buffers do not have (later steps would write past them).
  try {
    if (tokens > s.tokens) {
      GrowTo(s.ids, tokens);
      GrowTo(s.positions, tokens);
      GrowTo(s.embed, tokens * proj_buf);
      GrowTo(s.x, tokens * h);
      GrowTo(s.normed, tokens * h);
      GrowTo(s.qkv, tokens * 3 * lw);
      GrowTo(s.attn, tokens * lw);
      GrowTo(s.partial, tokens * h);
      GrowTo(s.ffn, tokens * lf);
      if (options_.precision == Precision::kInt8) {
        // The largest linear's quantized input, row scales and int32 accumulators (the
        // kernels grow them to each call's size, within this capacity).
        const int64_t max_k = std::max({h, lw, lf});
        const int64_t max_n = std::max({3 * lw, h, lf});
        s.int8.act.q.reserve(static_cast<size_t>(tokens * max_k));
        s.int8.act.absmax.reserve(static_cast<size_t>(tokens));
        s.int8.acc.reserve(static_cast<size_t>(tokens * max_n));
      }
      s.tokens = tokens;
    }
    const int64_t att = config_.head_dim() + max_context_;
    if (static_cast<int64_t>(s.attn_scratch.size()) < att) GrowTo(s.attn_scratch, att);
    if (logit_rows > s.logit_rows) {
      GrowTo(s.head_in, logit_rows * h);
      GrowTo(s.head_proj, logit_rows * proj_buf);
      if (tp_ > 1) {  // TP 1 writes the logits straight into the result
        GrowTo(s.local_logits, logit_rows * rpr);
        GrowTo(s.gathered, logit_rows * rpr * tp_);
      }
      s.logit_rows = logit_rows;
      s.result_bytes = logit_rows * config_.vocab_size * static_cast<int64_t>(sizeof(float));
    }
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "Step: no memory for the activations of ", tokens, " tokens and ", logit_rows,
        " rows of logits; send a smaller batch (or start the worker with --memory_limit, which "
        "refuses such steps before they allocate)"));
  }
  return absl::OkStatus();
}

absl::Status ShardModel::ValidateBatch(std::span<const SequenceInput> batch) const {
  return ValidateStepBatch(
      batch, config_.vocab_size, max_context_, [this](uint64_t id) { return kv_->Length(id); },
      &scratch_->sorted_ids);
}

absl::StatusOr<Logits> ShardModel::Step(std::span<const SequenceInput> batch, bool all_positions) {
  if (backend_ != nullptr) return backend_->Step(batch, all_positions);
  // Make room for the per-batch bookkeeping first, so validation allocates nothing later.
  ForwardScratch& s = *scratch_;
  // Every allocation before the vote below is caught: a rank out of memory here refuses the
  // step through the vote, with the others (a rank failing alone would leave them waiting in
  // it). Validation is the same on every rank: its errors return at once.
  absl::Status room = absl::OkStatus();
  int64_t tokens = 0;
  int64_t rows = 0;
  try {
    RETURN_IF_ERROR(ValidateBatch(batch));
    int64_t kv_growth = 0;
    for (const SequenceInput& in : batch) {
      tokens += static_cast<int64_t>(in.tokens.size());
      kv_growth +=
          kv_->GrowthBytes(in.seq_id, PastLength(in, kv_->Length(in.seq_id)) + in.tokens.size());
    }
    rows = PlanLogitRows(batch, all_positions, &s.logit_row_begin, &s.head_rows);
    const int64_t scratch_growth = std::max<int64_t>(
        0, ScratchBytesFor(std::max(tokens, s.tokens), std::max(rows, s.logit_rows)) -
               ScratchBytesFor(s.tokens, s.logit_rows));
    // Only growth needs room: a step that grows nothing runs even when what the shard holds
    // is past the limit (outlier buffers may take it there), as the CUDA backend's does.
    const bool grows = kv_growth > 0 || scratch_growth > 0;
    if (grows && options_.memory_limit_bytes > 0) {
      const MemoryStats now = memory();
      if (now.total() + kv_growth + scratch_growth > options_.memory_limit_bytes) {
        room = absl::ResourceExhaustedError(absl::StrCat(
            "Step: the batch needs ", kv_growth, " more bytes of KV cache and ", scratch_growth,
            " of activations; the shard holds ", now.DebugString(), " of memory_limit_bytes ",
            options_.memory_limit_bytes, ". Release finished sequences or send a smaller batch"));
      }
    }
    s.past.resize(batch.size());
    s.first_row.resize(batch.size() + 1);
    s.attention.resize(batch.size());
    int64_t row = 0;
    for (size_t i = 0; i < batch.size(); ++i) {
      s.past[i] = PastLength(batch[i], kv_->Length(batch[i].seq_id));
      s.first_row[i] = row;
      row += static_cast<int64_t>(batch[i].tokens.size());
    }
    s.first_row[batch.size()] = row;
  } catch (const std::bad_alloc&) {
    room = absl::ResourceExhaustedError(
        "Step: out of memory for the batch's bookkeeping; release finished sequences or send a "
        "smaller batch");
  }
  // The step's allocations come before the vote: a rank that cannot make them refuses the step
  // with the others, instead of failing alone once they are inside the forward's collectives.
  std::vector<uint64_t> created;  // grown inside the try below
  Logits out;
  if (room.ok()) room = EnsureScratch(tokens, rows);
  if (room.ok()) {
    try {
      for (size_t i = 0; i < batch.size(); ++i) {
        if (!kv_->Contains(batch[i].seq_id)) created.push_back(batch[i].seq_id);
        kv_->Reserve(batch[i].seq_id, s.past[i] + batch[i].tokens.size());
      }
      out.values.resize(static_cast<size_t>(rows * config_.vocab_size));  // the result
    } catch (const std::bad_alloc&) {
      room = absl::ResourceExhaustedError(
          "Step: out of memory for the batch's KV cache and logits; release finished sequences "
          "or send a smaller batch (--memory_limit refuses such steps before they allocate)");
    }
  }
  // Every rank votes on every step: a rank that allocated before a vote that failed keeps what
  // it allocated, so growth alone no longer says the same on every rank which steps vote, and
  // a rank voting alone would pair its vote with another's layer all-reduce.
  if (tp_ > 1) {
    room = AgreeOnRoom(room, rank_, [this](float mine) -> absl::StatusOr<float> {
      float sum = mine;
      RETURN_IF_ERROR(comm_->AllReduceSum(std::span<float>(&sum, 1)));
      return sum;
    });
  }
  if (!room.ok()) {
    for (uint64_t id : created) kv_->Release(id).IgnoreError();
    return room;
  }
  absl::Status st;
  try {
    for (const SequenceInput& in : batch) {
      if (in.prefix_length > 0) kv_->CopyPrefix(in.prefix_from, in.seq_id, in.prefix_length);
    }
    st = Forward(batch, &out);
  } catch (const std::bad_alloc&) {
    st = absl::ResourceExhaustedError(
        "Step: out of memory inside the forward (the int8 outlier buffers grow with the "
        "outliers found; the int8 GEMM packs its operands per call; a collective's buffers)");
  }
  // Past the vote memory can still run out (above): refused alone, a broken group with TP.
  st = ForwardError(std::move(st), rank_, tp_);
  if (!st.ok()) {
    for (uint64_t id : created) kv_->Release(id).IgnoreError();
    return st;
  }
  for (size_t i = 0; i < batch.size(); ++i) {
    kv_->SetLength(batch[i].seq_id, s.past[i] + batch[i].tokens.size());
  }
  return out;
}

namespace {

absl::Status Norm(const NormWeights& w, std::span<const float> x, int64_t m, int64_t n,
                  std::span<float> y) {
  return kernels::LayerNorm(x, m, n, w.gain, w.shift, kernels::kLayerNormEps, y);
}

// x[i, :] += y[i, :] + bias (bias may be empty).
void AddResidual(std::span<float> x, std::span<const float> y, std::span<const float> bias,
                 int64_t m, int64_t n) {
  for (int64_t i = 0; i < m; ++i) {
    float* xi = x.data() + i * n;
    const float* yi = y.data() + i * n;
    if (bias.empty()) {
      for (int64_t j = 0; j < n; ++j) xi[j] += yi[j];
    } else {
      for (int64_t j = 0; j < n; ++j) xi[j] += yi[j] + bias[j];
    }
  }
}

absl::Status Lookup(std::span<const int32_t> ids, const WeightMatrix& table, int64_t row_begin,
                    std::span<float> out, bool accumulate) {
  if (table.empty()) {  // this rank owns no vocabulary rows
    if (!accumulate) std::fill(out.begin(), out.end(), 0.0f);
    return absl::OkStatus();
  }
  if (table.transposed()) {  // the tied embedding, laid out as the LM head (forward_weights.h)
    if (accumulate) return absl::InternalError("Lookup: accumulating from a transposed table");
    return table.precision() == Precision::kF32
               ? kernels::EmbeddingLookupTransposed(ids, table.f32(), row_begin, table.n(),
                                                    table.k(), out)
               : kernels::EmbeddingLookupTransposed(ids, table.f16(), row_begin, table.n(),
                                                    table.k(), out);
  }
  if (table.precision() == Precision::kF32) {
    return accumulate
               ? kernels::EmbeddingAccumulate(ids, table.f32(), row_begin, table.n(), table.k(),
                                              out)
               : kernels::EmbeddingLookup(ids, table.f32(), row_begin, table.n(), table.k(), out);
  }
  return accumulate
             ? kernels::EmbeddingAccumulate(ids, table.f16(), row_begin, table.n(), table.k(), out)
             : kernels::EmbeddingLookup(ids, table.f16(), row_begin, table.n(), table.k(), out);
}

}  // namespace

absl::Status ShardModel::Forward(std::span<const SequenceInput> batch, Logits* result) {
  ForwardScratch& s = *scratch_;
  const ShardWeights& w = *weights_;
  const int64_t h = config_.hidden_size;
  const int64_t proj = config_.word_embed_proj_dim;
  const int64_t lw = h / tp_;
  const int64_t lf = config_.ffn_dim / tp_;
  const int64_t heads = config_.num_attention_heads / tp_;
  const int64_t hd = config_.head_dim();
  const int64_t m = s.first_row[batch.size()];
  const bool pre_ln = config_.do_layer_norm_before;
  const float threshold = options_.threshold;
  auto span_of = [](std::vector<float>& v, int64_t n) { return std::span<float>(v.data(), n); };
  std::span<float> x = span_of(s.x, m * h);
  std::span<float> normed = span_of(s.normed, m * h);
  std::span<float> qkv = span_of(s.qkv, m * 3 * lw);
  std::span<float> attn = span_of(s.attn, m * lw);
  std::span<float> partial = span_of(s.partial, m * h);
  std::span<float> ffn = span_of(s.ffn, m * lf);
  std::span<int32_t> ids(s.ids.data(), m);
  std::span<int32_t> positions(s.positions.data(), m);

  for (size_t i = 0; i < batch.size(); ++i) {
    const int64_t n = static_cast<int64_t>(batch[i].tokens.size());
    for (int64_t j = 0; j < n; ++j) {
      ids[s.first_row[i] + j] = batch[i].tokens[j];
      positions[s.first_row[i] + j] = static_cast<int32_t>(s.past[i] + j + kPositionOffset);
    }
  }

  // Embeddings: vocab-parallel tokens (+ all-reduce), project_in, learned positions.
  std::span<float> embed = config_.has_projections() ? span_of(s.embed, m * proj) : x;
  RETURN_IF_ERROR(Lookup(ids, w.embed, w.vocab_rows.begin, embed, false));
  if (tp_ > 1) RETURN_IF_ERROR(comm_->AllReduceSum(embed));
  if (config_.has_projections()) {
    RETURN_IF_ERROR(w.project_in.Apply(embed, m, x, threshold, &s.int8));
  }
  RETURN_IF_ERROR(Lookup(positions, w.positions, 0, x, true));

  const kernels::AttentionShape shape{
      heads, hd, 3 * lw, lw, lw, static_cast<float>(1.0 / std::sqrt(static_cast<double>(hd)))};
  for (size_t li = 0; li < w.layers.size(); ++li) {
    const LayerWeights& l = w.layers[li];
    // Self-attention block.
    std::span<const float> in = x;
    if (pre_ln) {
      RETURN_IF_ERROR(Norm(l.attn_norm, x, m, h, normed));
      in = normed;
    }
    RETURN_IF_ERROR(l.qkv.Apply(in, m, qkv, threshold, &s.int8));
    for (size_t i = 0; i < batch.size(); ++i) {
      const uint64_t id = batch[i].seq_id;
      std::span<float> k = kv_->Keys(id, li);
      std::span<float> v = kv_->Values(id, li);
      const int64_t n = s.first_row[i + 1] - s.first_row[i];
      for (int64_t j = 0; j < n; ++j) {
        const float* src = qkv.data() + (s.first_row[i] + j) * 3 * lw;
        std::memcpy(k.data() + (s.past[i] + j) * lw, src + lw, lw * sizeof(float));
        std::memcpy(v.data() + (s.past[i] + j) * lw, src + 2 * lw, lw * sizeof(float));
      }
      s.attention[i] = {s.first_row[i], n, s.past[i] + n, k, v};
    }
    RETURN_IF_ERROR(kernels::CausalAttention(qkv, shape, s.attention, attn, s.attn_scratch));
    RETURN_IF_ERROR(l.out_proj.Apply(attn, m, partial, threshold, &s.int8));
    if (tp_ > 1) RETURN_IF_ERROR(comm_->AllReduceSum(partial));
    AddResidual(x, partial, l.out_bias, m, h);
    if (!pre_ln) RETURN_IF_ERROR(Norm(l.attn_norm, x, m, h, x));

    // Feed-forward block.
    in = x;
    if (pre_ln) {
      RETURN_IF_ERROR(Norm(l.ffn_norm, x, m, h, normed));
      in = normed;
    }
    RETURN_IF_ERROR(l.fc1.Apply(in, m, ffn, threshold, &s.int8));
    if (config_.activation == Activation::kRelu) {
      kernels::ReluInPlace(ffn);
    } else {
      kernels::GeluInPlace(ffn);
    }
    RETURN_IF_ERROR(l.fc2.Apply(ffn, m, partial, threshold, &s.int8));
    if (tp_ > 1) RETURN_IF_ERROR(comm_->AllReduceSum(partial));
    AddResidual(x, partial, l.fc2_bias, m, h);
    if (!pre_ln) RETURN_IF_ERROR(Norm(l.ffn_norm, x, m, h, x));
  }

  // Rows that get logits (Step planned them): each sequence's last new position, or all.
  const int64_t rows = static_cast<int64_t>(s.head_rows.size());
  std::span<float> head_in = span_of(s.head_in, rows * h);
  for (int64_t r = 0; r < rows; ++r) {
    std::memcpy(head_in.data() + r * h, x.data() + int64_t{s.head_rows[r]} * h, h * sizeof(float));
  }
  if (w.has_final_norm) RETURN_IF_ERROR(Norm(w.final_norm, head_in, rows, h, head_in));
  std::span<const float> head = head_in;
  if (config_.has_projections()) {
    std::span<float> p = span_of(s.head_proj, rows * proj);
    RETURN_IF_ERROR(w.project_out.Apply(head_in, rows, p, threshold, &s.int8));
    head = p;
  }

  // Tied LM head over this rank's vocab slice, padded to rows_per_rank, then all-gathered.
  const int64_t vocab = config_.vocab_size;
  const int64_t rpr = w.rows_per_rank;
  const int64_t owned = w.vocab_rows.size();
  result->rows = rows;
  result->vocab = vocab;
  result->values.resize(rows * vocab);
  result->row_begin = s.logit_row_begin;
  if (tp_ == 1) {
    return w.embed.Apply(head, rows, result->values, threshold, &s.int8);
  }
  std::span<float> local = span_of(s.local_logits, rows * rpr);
  if (owned > 0) {
    // Computed densely as [rows, owned], then spread to [rows, rpr] with -inf padding.
    std::span<float> dense = local.subspan(0, rows * owned);
    RETURN_IF_ERROR(w.embed.Apply(head, rows, dense, threshold, &s.int8));
    for (int64_t r = rows - 1; r >= 0; --r) {
      std::memmove(local.data() + r * rpr, dense.data() + r * owned, owned * sizeof(float));
    }
  }
  for (int64_t r = 0; r < rows; ++r) {
    std::fill(local.begin() + r * rpr + owned, local.begin() + (r + 1) * rpr,
              -std::numeric_limits<float>::infinity());
  }
  std::span<float> gathered = span_of(s.gathered, rows * rpr * tp_);
  RETURN_IF_ERROR(comm_->AllGather(local, gathered));
  for (int p = 0; p < tp_; ++p) {
    const int64_t col0 = p * rpr;
    const int64_t ncols = std::min(rpr, vocab - col0);
    if (ncols <= 0) break;
    for (int64_t r = 0; r < rows; ++r) {
      std::memcpy(result->values.data() + r * vocab + col0, gathered.data() + (p * rows + r) * rpr,
                  ncols * sizeof(float));
    }
  }
  return absl::OkStatus();
}

absl::Status ShardModel::Release(uint64_t seq_id) {
  if (backend_ != nullptr) return backend_->Release(seq_id);
  return kv_->Release(seq_id);
}

int64_t ShardModel::ContextLength(uint64_t seq_id) const {
  if (backend_ != nullptr) return backend_->ContextLength(seq_id);
  return kv_->Length(seq_id);
}

int64_t ShardModel::num_sequences() const {
  if (backend_ != nullptr) return backend_->num_sequences();
  return kv_->num_sequences();
}

int64_t ShardModel::KvCapacityTokens(int64_t usable_bytes, int64_t step_tokens, int64_t step_rows,
                                     int64_t max_sequences) const {
  if (backend_ != nullptr) {
    return backend_->KvCapacityTokens(usable_bytes, step_tokens, step_rows, max_sequences);
  }
  const MemoryStats now = memory();
  const int64_t fixed = now.weights();
  const int64_t room = usable_bytes - fixed - ScratchBytesFor(step_tokens, step_rows);
  // Capacity doubles as a sequence grows (model/kv_cache.h): up to 2x its length reserved, and
  // at least one granule.
  return std::max<int64_t>(0, std::max<int64_t>(0, room) / (2 * kv_->per_position_bytes()) -
                                  max_sequences * KvCache::kGranule);
}

MemoryStats ShardModel::memory() const {
  if (backend_ != nullptr) return backend_->memory();
  MemoryStats s;
  weights_->AddBytes(&s);
  s.kv_cache = kv_->bytes();
  s.scratch = scratch_->bytes();
  return s;
}

}  // namespace llmint8::model
