#include "model/model_spec.h"

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/status_macros.h"
#include "model/synthetic.h"
#include "model/tensor_names.h"

namespace llmint8::model {
namespace {

constexpr absl::string_view kSyntheticPrefix = "synthetic:";

struct SyntheticSpec {
  OptConfig config;
  model::SyntheticOptions options;
};

absl::StatusOr<SyntheticSpec> ParseSynthetic(const std::string& spec) {
  std::vector<std::string> parts = absl::StrSplit(spec.substr(kSyntheticPrefix.size()), ',');
  if (parts.empty() || parts[0].empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("model spec '", spec, "' names no preset; write e.g. synthetic:125m"));
  }
  SyntheticSpec out;
  int64_t outliers = 0;
  ASSIGN_OR_RETURN(out.config, model::OptPreset(parts[0]));
  out.config.name = spec;
  for (size_t i = 1; i < parts.size(); ++i) {
    std::pair<std::string, std::string> kv = absl::StrSplit(parts[i], '=');
    int64_t value = 0;
    if (!absl::SimpleAtoi(kv.second, &value) || value <= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("model spec '", spec, "': '", parts[i], "' must be key=<positive integer>"));
    }
    const std::string& key = kv.first;
    if (key == "layers") {
      out.config.num_hidden_layers = value;
    } else if (key == "hidden") {
      out.config.hidden_size = value;
      out.config.word_embed_proj_dim = value;
    } else if (key == "heads") {
      out.config.num_attention_heads = value;
    } else if (key == "ffn") {
      out.config.ffn_dim = value;
    } else if (key == "vocab") {
      out.config.vocab_size = value;
    } else if (key == "positions") {
      out.config.max_position_embeddings = value;
    } else if (key == "seed") {
      out.options.seed = static_cast<uint64_t>(value);
    } else if (key == "outliers") {
      outliers = value;
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("model spec '", spec, "': unknown key '", key,
                       "'; use layers, hidden, heads, ffn, vocab, positions, seed or outliers"));
    }
  }
  if (absl::Status shape = model::CheckOptConfigShape(out.config); !shape.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("model spec '", spec, "': ", shape.message()));
  }
  if (outliers >= out.config.hidden_size) {
    return absl::InvalidArgumentError(absl::StrCat("model spec '", spec, "': outliers (", outliers,
                                                   ") must be below hidden (",
                                                   out.config.hidden_size, ")"));
  }
  // Evenly spaced outlier feature dims, LayerNorm gain 20 there (the paper's outliers: up to
  // ~20x typical magnitudes; model/synthetic.h, model/int8_agreement_runtime_test.cc).
  out.options.outlier_gain = 20.0f;
  for (int64_t i = 1; i <= outliers; ++i) {
    out.options.outlier_dims.push_back(i * out.config.hidden_size / (outliers + 1));
  }
  for (int64_t* id :
       {&out.config.bos_token_id, &out.config.eos_token_id, &out.config.pad_token_id}) {
    if (*id >= out.config.vocab_size) *id = out.config.vocab_size - 1;
  }
  return out;
}

}  // namespace

absl::StatusOr<OptConfig> LoadModelSpecConfig(const std::string& spec) {
  if (absl::StartsWith(spec, kSyntheticPrefix)) {
    ASSIGN_OR_RETURN(SyntheticSpec s, ParseSynthetic(spec));
    return s.config;
  }
  if (spec.empty()) {
    return absl::InvalidArgumentError(
        "no model given; pass --model=<directory> or --model=synthetic:<preset>");
  }
  return model::LoadOptConfig(absl::StrCat(spec, "/config.json"));
}

absl::StatusOr<OpenedModel> OpenModelSpec(const std::string& spec) {
  if (absl::StartsWith(spec, kSyntheticPrefix)) {
    ASSIGN_OR_RETURN(SyntheticSpec s, ParseSynthetic(spec));
    OpenedModel opened;
    opened.config = s.config;
    ASSIGN_OR_RETURN(opened.source, model::MakeSyntheticSource(s.config, s.options));
    return opened;
  }
  if (spec.empty()) {
    return absl::InvalidArgumentError(
        "no model given; pass --model=<directory> or --model=synthetic:<preset>");
  }
  return model::OpenModelDir(spec);
}

std::optional<std::string> ModelSpecDirectory(const std::string& spec) {
  if (absl::StartsWith(spec, kSyntheticPrefix) || spec.empty()) return std::nullopt;
  return spec;
}

bool IsPreQuantized(const OpenedModel& opened) {
  if (opened.config.num_hidden_layers <= 0) return false;
  const absl::StatusOr<model::TensorInfo> q =
      opened.source->Info(model::LayerTensorName(0, model::LayerTensor::kQProjWeight));
  return q.ok() && q->dtype == model::TensorDType::kI8;
}

std::string PreQuantizedAsWarning(const std::string& spec, const std::string& dtype) {
  return absl::StrCat(spec, " is a pre-quantized int8 checkpoint (llmint8 quantize) run as ", dtype,
                      ": its weights are dequantized, twice int8's memory and none of the "
                      "precision back; pass --dtype=int8");
}

}  // namespace llmint8::model
