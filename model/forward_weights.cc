#include "model/forward_weights.h"

#include <algorithm>
#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "kernels/linear.h"
#include "kernels/quantize_weight.h"
#include "model/tensor_names.h"

namespace llmint8::model {
namespace {

constexpr int64_t kF32Bytes = 4;

// Rows of a weight that a load converts at a time (about 2^20 values, 4 MiB of fp32): the
// quantization of an fp16 / fp32 source and the transposition of the CPU layout never hold a
// second copy of a whole matrix. At least 2^20 values where the slice has them, so that
// QuantizeWeight still spreads a block over the threads (it does from 2^20).
int64_t LoadBlockRows(int64_t k, int64_t rows) {
  constexpr int64_t kValues = int64_t{1} << 20;
  return std::clamp<int64_t>((kValues + k - 1) / k, 1, std::max<int64_t>(rows, 1));
}

}  // namespace

WeightMatrix::WeightMatrix(Precision precision, int64_t n, int64_t k, bool with_bias, Layout layout)
    : precision_(precision),
      n_(n),
      k_(k),
      transposed_(layout == Layout::kTransposed && precision != Precision::kInt8) {
  const size_t count = static_cast<size_t>(n * k);
  switch (precision) {
    case Precision::kF32:
      f32_.assign(count, 0.0f);
      break;
    case Precision::kF16:
      f16_.assign(count, Half{});
      break;
    case Precision::kInt8:
      q_.assign(count, 0);
      absmax_.assign(static_cast<size_t>(n), 0.0f);
      break;
  }
  if (with_bias) bias_.assign(static_cast<size_t>(n), 0.0f);
}

absl::Status WeightMatrix::LoadRows(const CheckpointSource& source, std::string_view name,
                                    Range rows, Range cols, int64_t row_offset,
                                    std::vector<float>* tmp) {
  if (cols.size() != k_ || row_offset < 0 || row_offset + rows.size() > n_) {
    return absl::InternalError(absl::StrCat("loading ", std::string(name), ": slice rows ",
                                            rows.size(), " cols ", cols.size(), " at row ",
                                            row_offset, " does not fit [", n_, ", ", k_, "]"));
  }
  const int64_t begin = row_offset * k_;
  const int64_t count = rows.size() * k_;
  if (transposed_) return LoadColumns(source, name, rows, cols, row_offset, tmp);
  switch (precision_) {
    case Precision::kF32:
      return source.ReadSlice(name, rows, cols, std::span<float>(f32_).subspan(begin, count));
    case Precision::kF16:
      return source.ReadSliceHalf(name, rows, cols, std::span<Half>(f16_).subspan(begin, count));
    case Precision::kInt8: {
      std::span<int8_t> q = std::span<int8_t>(q_).subspan(begin, count);
      std::span<float> absmax = std::span<float>(absmax_).subspan(row_offset, rows.size());
      ASSIGN_OR_RETURN(TensorInfo info, source.Info(name));
      if (info.quantized()) return source.ReadInt8Slice(name, rows, cols, q, absmax);
      // A block of rows at a time (each row's scale is its own absmax).
      const int64_t block_rows = LoadBlockRows(k_, rows.size());
      tmp->resize(static_cast<size_t>(block_rows * k_));
      for (int64_t r0 = 0; r0 < rows.size(); r0 += block_rows) {
        const int64_t nb = std::min(block_rows, rows.size() - r0);
        const std::span<float> block = std::span<float>(*tmp).first(nb * k_);
        RETURN_IF_ERROR(
            source.ReadSlice(name, {rows.begin + r0, rows.begin + r0 + nb}, cols, block));
        absl::Status st = kernels::QuantizeWeight(block, nb, k_, q.subspan(r0 * k_, nb * k_),
                                                  absmax.subspan(r0, nb));
        if (!st.ok()) {  // its row numbers count from the block's first row
          return absl::Status(
              st.code(),
              absl::StrCat("quantizing ", std::string(name), ", the block of tensor rows [",
                           rows.begin + r0, ", ", rows.begin + r0 + nb, "): ", st.message()));
        }
      }
      return absl::OkStatus();
    }
  }
  return absl::InternalError("unknown precision");
}

absl::Status WeightMatrix::LoadBias(const CheckpointSource& source, std::string_view name,
                                    Range rows, int64_t row_offset) {
  if (row_offset < 0 || row_offset + rows.size() > static_cast<int64_t>(bias_.size())) {
    return absl::InternalError(
        absl::StrCat("loading ", std::string(name), ": bias slice does not fit"));
  }
  std::span<float> out = std::span<float>(bias_).subspan(row_offset, rows.size());
  RETURN_IF_ERROR(source.ReadSlice(name, rows, Range{0, 1}, out));
  if (precision_ != Precision::kF32) RETURN_IF_ERROR(RoundToHalfChecked(name, out));
  return absl::OkStatus();
}

namespace {

absl::Status ReadRows(const CheckpointSource& source, std::string_view name, Range rows, Range cols,
                      std::span<float> out) {
  return source.ReadSlice(name, rows, cols, out);
}
absl::Status ReadRows(const CheckpointSource& source, std::string_view name, Range rows, Range cols,
                      std::span<Half> out) {
  return source.ReadSliceHalf(name, rows, cols, out);
}

// Rows `rows` of `name` (k = cols.size() wide) into columns [c0, ...) of wt [k, n], a block of
// up to 2^20 values at a time through `block`.
template <typename T>
absl::Status ReadAsColumns(const CheckpointSource& source, std::string_view name, Range rows,
                           Range cols, int64_t c0, int64_t n, std::vector<T>& wt,
                           std::vector<T>& block) {
  const int64_t k = cols.size();
  const int64_t block_rows = LoadBlockRows(k, rows.size());
  block.resize(static_cast<size_t>(block_rows * k));
  for (int64_t r0 = 0; r0 < rows.size(); r0 += block_rows) {
    const int64_t nb = std::min(block_rows, rows.size() - r0);
    const std::span<T> rows_read = std::span<T>(block).first(nb * k);
    RETURN_IF_ERROR(
        ReadRows(source, name, {rows.begin + r0, rows.begin + r0 + nb}, cols, rows_read));
    RETURN_IF_ERROR(kernels::TransposeWeightRows(rows_read, nb, k, c0 + r0, n, wt));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status WeightMatrix::LoadColumns(const CheckpointSource& source, std::string_view name,
                                       Range rows, Range cols, int64_t row_offset,
                                       std::vector<float>* tmp) {
  if (precision_ == Precision::kF32) {
    return ReadAsColumns(source, name, rows, cols, row_offset, n_, f32_, *tmp);
  }
  std::vector<Half> block;  // fp16 as ReadSliceHalf gives it (range-checked rounding)
  return ReadAsColumns(source, name, rows, cols, row_offset, n_, f16_, block);
}

absl::Status WeightMatrix::Apply(std::span<const float> x, int64_t m, std::span<float> y,
                                 float threshold, kernels::Int8LinearScratch* scratch) const {
  if (precision_ != Precision::kInt8 && !transposed_) {
    return absl::InternalError(
        "WeightMatrix::Apply: the CPU linear needs an fp32 / fp16 matrix in Layout::kTransposed");
  }
  switch (precision_) {
    case Precision::kF32:
      return kernels::LinearF32(x, m, f32_, n_, k_, bias_, y);
    case Precision::kF16:
      return kernels::LinearF16(x, m, f16_, n_, k_, bias_, y);
    case Precision::kInt8: {
      kernels::Int8WeightView view{q_, absmax_, n_, k_};
      return kernels::Int8Linear(x, m, view, bias_, threshold, y, scratch);
    }
  }
  return absl::InternalError("unknown precision");
}

void WeightMatrix::AddBytes(MemoryStats* s) const {
  s->fp32_weights += static_cast<int64_t>((f32_.size() + bias_.size()) * sizeof(float));
  s->fp16_weights += static_cast<int64_t>(f16_.size() * sizeof(Half));
  s->int8_weights += static_cast<int64_t>(q_.size());
  s->scales += static_cast<int64_t>(absmax_.size() * sizeof(float));
}

namespace {

void AddNormBytes(const NormWeights& w, MemoryStats* s) {
  s->fp32_weights += static_cast<int64_t>((w.gain.size() + w.shift.size()) * sizeof(float));
}

}  // namespace

void ShardWeights::AddBytes(MemoryStats* s) const {
  embed.AddBytes(s);
  positions.AddBytes(s);
  project_in.AddBytes(s);
  project_out.AddBytes(s);
  AddNormBytes(final_norm, s);
  for (const LayerWeights& l : layers) {
    AddNormBytes(l.attn_norm, s);
    AddNormBytes(l.ffn_norm, s);
    l.qkv.AddBytes(s);
    l.out_proj.AddBytes(s);
    l.fc1.AddBytes(s);
    l.fc2.AddBytes(s);
    s->fp32_weights += static_cast<int64_t>((l.out_bias.size() + l.fc2_bias.size()) * 4);
  }
}

MemoryStats EstimateShardWeightBytes(const OptConfig& c, const ShardPlan& plan,
                                     Precision precision) {
  MemoryStats s;
  const int64_t table_bytes = precision == Precision::kF32 ? 4 : 2;
  const int64_t h = c.hidden_size;
  const int64_t proj = c.word_embed_proj_dim;
  int64_t table_elems = plan.vocab.rows.size() * proj + (c.max_position_embeddings + 2) * h;
  if (c.has_projections()) table_elems += 2 * h * proj;
  (precision == Precision::kF32 ? s.fp32_weights : s.fp16_weights) += table_elems * table_bytes;
  const int64_t norm = c.layer_norm_elementwise_affine ? 2 * h : 0;
  if (c.has_final_layer_norm()) s.fp32_weights += norm * kF32Bytes;
  const int64_t lw = plan.attn_rows.size();
  const int64_t lf = plan.ffn_rows.size();
  const int64_t params = 3 * lw * h + h * lw + lf * h + h * lf;
  const int64_t rows = 3 * lw + h + lf + h;
  const int64_t biases = c.enable_bias ? (3 * lw + h + lf + h) : 0;
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    switch (precision) {
      case Precision::kF32:
        s.fp32_weights += params * kF32Bytes;
        break;
      case Precision::kF16:
        s.fp16_weights += params * 2;
        break;
      case Precision::kInt8:
        s.int8_weights += params;
        s.scales += rows * kF32Bytes;
        break;
    }
    s.fp32_weights += (biases + 2 * norm) * kF32Bytes;
  }
  return s;
}

namespace {

absl::Status LoadNorm(const CheckpointSource& source, const OptConfig& c,
                      std::string_view weight_name, std::string_view bias_name, Precision precision,
                      NormWeights* out) {
  if (!c.layer_norm_elementwise_affine) return absl::OkStatus();
  out->gain.assign(static_cast<size_t>(c.hidden_size), 0.0f);
  out->shift.assign(static_cast<size_t>(c.hidden_size), 0.0f);
  RETURN_IF_ERROR(source.ReadSlice(weight_name, {0, c.hidden_size}, {0, 1}, out->gain));
  RETURN_IF_ERROR(source.ReadSlice(bias_name, {0, c.hidden_size}, {0, 1}, out->shift));
  if (precision != Precision::kF32) {
    RETURN_IF_ERROR(RoundToHalfChecked(weight_name, out->gain));
    RETURN_IF_ERROR(RoundToHalfChecked(bias_name, out->shift));
  }
  return absl::OkStatus();
}

absl::Status LoadReplicatedBias(const CheckpointSource& source, std::string_view name, int64_t n,
                                Precision precision, std::vector<float>* out) {
  out->assign(static_cast<size_t>(n), 0.0f);
  RETURN_IF_ERROR(source.ReadSlice(name, {0, n}, {0, 1}, *out));
  if (precision != Precision::kF32) RETURN_IF_ERROR(RoundToHalfChecked(name, *out));
  return absl::OkStatus();
}

// Loads `name` (weight) into w at row_offset using the plan's slice.
absl::Status LoadPlanned(const CheckpointSource& source, const OptConfig& c, const ShardPlan& plan,
                         const std::string& name, int64_t row_offset, WeightMatrix* w,
                         std::vector<float>* tmp) {
  ASSIGN_OR_RETURN(TensorSlice slice, plan.SliceFor(c, name));
  return w->LoadRows(source, name, slice.rows, slice.cols, row_offset, tmp);
}

}  // namespace

absl::Status LoadLayerWeights(const OptConfig& c, const CheckpointSource& source,
                              const ShardPlan& plan, Precision precision, Layout layout, int64_t i,
                              LayerWeights* l, std::vector<float>* tmp) {
  const int64_t h = c.hidden_size;
  const int64_t lw = plan.attn_rows.size();
  const int64_t lf = plan.ffn_rows.size();
  const bool bias = c.enable_bias;
  auto name = [i](LayerTensor t) { return LayerTensorName(i, t); };

  RETURN_IF_ERROR(LoadNorm(source, c, name(LayerTensor::kSelfAttnLayerNormWeight),
                           name(LayerTensor::kSelfAttnLayerNormBias), precision, &l->attn_norm));
  RETURN_IF_ERROR(LoadNorm(source, c, name(LayerTensor::kFinalLayerNormWeight),
                           name(LayerTensor::kFinalLayerNormBias), precision, &l->ffn_norm));

  l->qkv = WeightMatrix(precision, 3 * lw, h, bias, layout);
  const LayerTensor qkv_w[3] = {LayerTensor::kQProjWeight, LayerTensor::kKProjWeight,
                                LayerTensor::kVProjWeight};
  const LayerTensor qkv_b[3] = {LayerTensor::kQProjBias, LayerTensor::kKProjBias,
                                LayerTensor::kVProjBias};
  for (int j = 0; j < 3; ++j) {
    RETURN_IF_ERROR(LoadPlanned(source, c, plan, name(qkv_w[j]), j * lw, &l->qkv, tmp));
    if (bias) RETURN_IF_ERROR(l->qkv.LoadBias(source, name(qkv_b[j]), plan.attn_rows, j * lw));
  }
  l->out_proj = WeightMatrix(precision, h, lw, false, layout);
  RETURN_IF_ERROR(
      LoadPlanned(source, c, plan, name(LayerTensor::kOutProjWeight), 0, &l->out_proj, tmp));
  if (bias) {
    RETURN_IF_ERROR(
        LoadReplicatedBias(source, name(LayerTensor::kOutProjBias), h, precision, &l->out_bias));
  }
  l->fc1 = WeightMatrix(precision, lf, h, bias, layout);
  RETURN_IF_ERROR(LoadPlanned(source, c, plan, name(LayerTensor::kFc1Weight), 0, &l->fc1, tmp));
  if (bias) RETURN_IF_ERROR(l->fc1.LoadBias(source, name(LayerTensor::kFc1Bias), plan.ffn_rows, 0));
  l->fc2 = WeightMatrix(precision, h, lf, false, layout);
  RETURN_IF_ERROR(LoadPlanned(source, c, plan, name(LayerTensor::kFc2Weight), 0, &l->fc2, tmp));
  if (bias) {
    RETURN_IF_ERROR(
        LoadReplicatedBias(source, name(LayerTensor::kFc2Bias), h, precision, &l->fc2_bias));
  }
  return absl::OkStatus();
}

absl::Status LoadSharedWeights(const OptConfig& c, const CheckpointSource& source,
                               const ShardPlan& plan, Precision precision, Layout layout,
                               ShardWeights* w) {
  std::vector<float> tmp;
  // Tables stay 16-bit in kF16 and kInt8.
  const Precision table = precision == Precision::kF32 ? Precision::kF32 : Precision::kF16;
  const int64_t h = c.hidden_size;
  const int64_t proj = c.word_embed_proj_dim;

  w->vocab_rows = plan.vocab.rows;
  w->rows_per_rank = plan.vocab.rows_per_rank;
  if (!plan.vocab.rows.empty()) {
    w->embed = WeightMatrix(table, plan.vocab.rows.size(), proj, false, layout);
    RETURN_IF_ERROR(w->embed.LoadRows(source, kEmbedTokens, plan.vocab.rows, {0, proj}, 0, &tmp));
    RETURN_IF_ERROR(CheckTiedLmHead(source, plan.vocab.rows, proj));
  }
  const int64_t npos = c.max_position_embeddings + kPositionOffset;
  w->positions = WeightMatrix(table, npos, h, false);
  RETURN_IF_ERROR(w->positions.LoadRows(source, kEmbedPositions, {0, npos}, {0, h}, 0, &tmp));
  if (c.has_projections()) {
    w->project_in = WeightMatrix(table, h, proj, false, layout);
    RETURN_IF_ERROR(w->project_in.LoadRows(source, kProjectIn, {0, h}, {0, proj}, 0, &tmp));
    w->project_out = WeightMatrix(table, proj, h, false, layout);
    RETURN_IF_ERROR(w->project_out.LoadRows(source, kProjectOut, {0, proj}, {0, h}, 0, &tmp));
  }
  w->has_final_norm = c.has_final_layer_norm();
  if (w->has_final_norm) {
    RETURN_IF_ERROR(
        LoadNorm(source, c, kFinalLayerNormWeight, kFinalLayerNormBias, precision, &w->final_norm));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<ShardWeights>> LoadShardWeights(const OptConfig& c,
                                                               const CheckpointSource& source,
                                                               const ShardPlan& plan,
                                                               Precision precision,
                                                               const LoadProgressFn& progress) {
  auto w = std::make_unique<ShardWeights>();
  RETURN_IF_ERROR(LoadSharedWeights(c, source, plan, precision, Layout::kTransposed, w.get()));
  std::vector<float> tmp;
  w->layers.resize(static_cast<size_t>(c.num_hidden_layers));
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    RETURN_IF_ERROR(
        LoadLayerWeights(c, source, plan, precision, Layout::kTransposed, i, &w->layers[i], &tmp));
    if (progress) RETURN_IF_ERROR(progress(i + 1, c.num_hidden_layers));
  }
  return w;
}

}  // namespace llmint8::model
