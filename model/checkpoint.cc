#include "model/checkpoint.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "model/config.h"
#include "model/safetensors.h"
#include "model/tensor_names.h"

namespace llmint8::model {

std::string_view TensorDTypeName(TensorDType dtype) {
  switch (dtype) {
    case TensorDType::kF16:
      return "F16";
    case TensorDType::kBF16:
      return "BF16";
    case TensorDType::kF32:
      return "F32";
    case TensorDType::kI8:
      return "I8";
  }
  return "?";
}

int64_t TensorDTypeSize(TensorDType dtype) {
  switch (dtype) {
    case TensorDType::kF16:
      return 2;
    case TensorDType::kBF16:
      return 2;
    case TensorDType::kF32:
      return 4;
    case TensorDType::kI8:
      return 1;
  }
  return 0;
}

absl::Status ValidateSliceRequest(std::string_view source_label, std::string_view name,
                                  const TensorInfo& info, Range rows, Range cols,
                                  size_t out_elements) {
  auto range_ok = [](Range r, int64_t extent) {
    return r.begin >= 0 && r.begin <= r.end && r.end <= extent;
  };
  if (!range_ok(rows, info.rows()) || !range_ok(cols, info.cols())) {
    return absl::InvalidArgumentError(
        absl::StrCat(std::string(source_label), ": tensor \"", std::string(name), "\" is [",
                     info.rows(), ", ", info.cols(), "]; slice rows [", rows.begin, ", ", rows.end,
                     ") cols [", cols.begin, ", ", cols.end, ") is out of range"));
  }
  const uint64_t want = static_cast<uint64_t>(rows.size()) * static_cast<uint64_t>(cols.size());
  if (want != out_elements) {
    return absl::InvalidArgumentError(
        absl::StrCat(std::string(source_label), ": tensor \"", std::string(name),
                     "\": output buffer has ", out_elements, " elements, the slice needs ", want));
  }
  return absl::OkStatus();
}

namespace {

// `in` as fp16 into `out` (the same size); the index of the first finite value that rounds to
// inf, where it stops, if there is one.
std::optional<size_t> ToHalfInRange(std::span<const float> in, std::span<Half> out) {
  for (size_t i = 0; i < in.size(); ++i) {
    out[i] = FloatToHalf(in[i]);
    if ((out[i].bits & 0x7fff) == 0x7c00 && std::isfinite(in[i])) return i;
  }
  return std::nullopt;
}

absl::Status BeyondHalfRange(std::string_view what, size_t i, float value) {
  return absl::InvalidArgumentError(
      absl::StrCat(std::string(what), ": element ", i, " of the slice is ", value,
                   ", beyond fp16's range (65504): the tensor has no fp16 form, so the "
                   "checkpoint can be served in fp32 only (serve --dtype=fp32), not in fp16 or "
                   "int8, and not quantized"));
}

}  // namespace

absl::Status RoundToHalfChecked(std::string_view what, std::span<float> values) {
  std::vector<Half> half(values.size());
  if (const std::optional<size_t> bad = ToHalfInRange(values, half); bad.has_value()) {
    return BeyondHalfRange(what, *bad, values[*bad]);
  }
  for (size_t i = 0; i < values.size(); ++i) values[i] = HalfToFloat(half[i]);
  return absl::OkStatus();
}

absl::Status CheckpointSource::ReadSliceHalf(std::string_view name, Range rows, Range cols,
                                             std::span<Half> out) const {
  std::vector<float> tmp(out.size());
  RETURN_IF_ERROR(ReadSlice(name, rows, cols, tmp));
  if (const std::optional<size_t> bad = ToHalfInRange(tmp, out); bad.has_value()) {
    return BeyondHalfRange(absl::StrCat(Describe(), ": tensor \"", std::string(name), "\""), *bad,
                           tmp[*bad]);
  }
  return absl::OkStatus();
}

absl::Status CheckpointSource::ReadInt8Slice(std::string_view name, Range, Range, std::span<int8_t>,
                                             std::span<float>) const {
  ASSIGN_OR_RETURN(TensorInfo info, Info(name));
  return absl::FailedPreconditionError(
      absl::StrCat(Describe(), ": tensor \"", std::string(name), "\" is ",
                   std::string(TensorDTypeName(info.dtype)),
                   ", not a pre-quantized int8 tensor; read it with ReadSlice and quantize it"));
}

absl::StatusOr<std::vector<float>> CheckpointSource::ReadAll(std::string_view name) const {
  ASSIGN_OR_RETURN(TensorInfo info, Info(name));
  std::vector<float> out(static_cast<size_t>(info.num_elements()));
  RETURN_IF_ERROR(ReadSlice(name, {0, info.rows()}, {0, info.cols()}, out));
  return out;
}

namespace {

// The layer index of a tensor named "...layers.<N>.<rest>", if it is one.
std::optional<int64_t> LayerIndex(std::string_view name) {
  const size_t at = name.find("layers.");
  if (at == std::string_view::npos || (at > 0 && name[at - 1] != '.')) return std::nullopt;
  std::string_view rest = name.substr(at + 7);
  const size_t dot = rest.find('.');
  int64_t layer = 0;
  if (dot == std::string_view::npos ||
      !absl::SimpleAtoi(absl::string_view(rest.data(), dot), &layer)) {
    return std::nullopt;
  }
  return layer;
}

}  // namespace

absl::Status ValidateCheckpoint(const CheckpointSource& source, const OptConfig& config) {
  // Layers past the config's: a config that does not describe the checkpoint would serve a
  // truncated model without a word.
  for (const std::string& name : source.TensorNames()) {
    const std::optional<int64_t> layer = LayerIndex(name);
    if (layer.has_value() && (*layer < 0 || *layer >= config.num_hidden_layers)) {
      return absl::InvalidArgumentError(
          absl::StrCat(source.Describe(), ": tensor \"", name, "\" belongs to layer ", *layer,
                       " but the config has num_hidden_layers=", config.num_hidden_layers,
                       ": it does not describe this checkpoint"));
    }
  }
  for (const ExpectedTensor& t : ExpectedTensors(config)) {
    if (!source.Has(t.name)) {
      return absl::NotFoundError(absl::StrCat(source.Describe(), ": tensor \"", t.name,
                                              "\" is missing (the model's config of ",
                                              config.num_hidden_layers, " layers needs it)"));
    }
    ASSIGN_OR_RETURN(TensorInfo info, source.Info(t.name));
    if (info.shape != t.shape) {
      return absl::InvalidArgumentError(
          absl::StrCat(source.Describe(), ": tensor \"", t.name, "\" has shape [",
                       absl::StrJoin(info.shape, ", "), "], the config implies [",
                       absl::StrJoin(t.shape, ", "), "]"));
    }
    if (info.quantized() && !t.is_linear_weight) {
      return absl::InvalidArgumentError(absl::StrCat(source.Describe(), ": tensor \"", t.name,
                                                     "\" is I8 but only linear weights may be"));
    }
  }
  if (source.Has(kLmHead)) {
    ASSIGN_OR_RETURN(TensorInfo info, source.Info(kLmHead));
    const std::vector<int64_t> want = ExpectedShape(config, kLmHead);
    if (info.shape != want) {
      return absl::InvalidArgumentError(
          absl::StrCat(source.Describe(), ": tensor \"lm_head.weight\" has shape [",
                       absl::StrJoin(info.shape, ", "), "], the config implies [",
                       absl::StrJoin(want, ", "), "]"));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckTiedLmHead(const CheckpointSource& source, Range rows, int64_t cols) {
  if (!source.Has(kLmHead) || rows.empty()) return absl::OkStatus();
  constexpr int64_t kBlockValues = int64_t{1} << 20;
  const int64_t block_rows = std::max<int64_t>(1, kBlockValues / std::max<int64_t>(cols, 1));
  std::vector<float> head, embed;
  for (int64_t r = rows.begin; r < rows.end; r += block_rows) {
    const Range block{r, std::min(rows.end, r + block_rows)};
    head.resize(static_cast<size_t>(block.size() * cols));
    embed.resize(head.size());
    RETURN_IF_ERROR(source.ReadSlice(kLmHead, block, {0, cols}, head));
    RETURN_IF_ERROR(source.ReadSlice(kEmbedTokens, block, {0, cols}, embed));
    if (std::memcmp(head.data(), embed.data(), head.size() * sizeof(float)) != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(source.Describe(),
                       ": lm_head.weight differs from model.decoder.embed_tokens.weight "
                       "(rows ",
                       block.begin, "..", block.end - 1,
                       "); llmint8 computes the LM head with the "
                       "token embedding (tie_word_embeddings), so it serves only checkpoints whose "
                       "lm_head.weight is absent or equal to it"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<OpenedModel> OpenModelDir(const std::string& dir) {
  OpenedModel m;
  ASSIGN_OR_RETURN(m.config, LoadOptConfig(dir + "/config.json"));
  ASSIGN_OR_RETURN(m.source, OpenSafetensorsDir(dir));
  RETURN_IF_ERROR(ValidateCheckpoint(*m.source, m.config));
  return m;
}

}  // namespace llmint8::model
