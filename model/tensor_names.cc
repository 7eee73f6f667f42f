#include "model/tensor_names.h"

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/str_cat.h"

namespace llmint8::model {
namespace {

struct LayerTensorDesc {
  LayerTensor t;
  const char* suffix;  // after "model.decoder.layers.{i}."
};

constexpr LayerTensorDesc kLayerTensors[] = {
    {LayerTensor::kQProjWeight, "self_attn.q_proj.weight"},
    {LayerTensor::kQProjBias, "self_attn.q_proj.bias"},
    {LayerTensor::kKProjWeight, "self_attn.k_proj.weight"},
    {LayerTensor::kKProjBias, "self_attn.k_proj.bias"},
    {LayerTensor::kVProjWeight, "self_attn.v_proj.weight"},
    {LayerTensor::kVProjBias, "self_attn.v_proj.bias"},
    {LayerTensor::kOutProjWeight, "self_attn.out_proj.weight"},
    {LayerTensor::kOutProjBias, "self_attn.out_proj.bias"},
    {LayerTensor::kSelfAttnLayerNormWeight, "self_attn_layer_norm.weight"},
    {LayerTensor::kSelfAttnLayerNormBias, "self_attn_layer_norm.bias"},
    {LayerTensor::kFc1Weight, "fc1.weight"},
    {LayerTensor::kFc1Bias, "fc1.bias"},
    {LayerTensor::kFc2Weight, "fc2.weight"},
    {LayerTensor::kFc2Bias, "fc2.bias"},
    {LayerTensor::kFinalLayerNormWeight, "final_layer_norm.weight"},
    {LayerTensor::kFinalLayerNormBias, "final_layer_norm.bias"},
};

constexpr std::string_view kLayerPrefix = "model.decoder.layers.";

bool IsBias(LayerTensor t) {
  switch (t) {
    case LayerTensor::kQProjBias:
    case LayerTensor::kKProjBias:
    case LayerTensor::kVProjBias:
    case LayerTensor::kOutProjBias:
    case LayerTensor::kFc1Bias:
    case LayerTensor::kFc2Bias:
      return true;
    default:
      return false;
  }
}

bool IsLayerNorm(LayerTensor t) {
  switch (t) {
    case LayerTensor::kSelfAttnLayerNormWeight:
    case LayerTensor::kSelfAttnLayerNormBias:
    case LayerTensor::kFinalLayerNormWeight:
    case LayerTensor::kFinalLayerNormBias:
      return true;
    default:
      return false;
  }
}

std::vector<int64_t> LayerTensorShape(const OptConfig& c, LayerTensor t) {
  const int64_t h = c.hidden_size, f = c.ffn_dim;
  switch (t) {
    case LayerTensor::kQProjWeight:
    case LayerTensor::kKProjWeight:
    case LayerTensor::kVProjWeight:
    case LayerTensor::kOutProjWeight:
      return {h, h};
    case LayerTensor::kFc1Weight:
      return {f, h};
    case LayerTensor::kFc2Weight:
      return {h, f};
    case LayerTensor::kFc1Bias:
      return {f};
    default:
      return {h};
  }
}

bool LayerTensorPresent(const OptConfig& c, LayerTensor t) {
  if (IsBias(t)) return c.enable_bias;
  if (IsLayerNorm(t)) return c.layer_norm_elementwise_affine;
  return true;
}

}  // namespace

std::string LayerTensorName(int64_t layer, LayerTensor t) {
  for (const LayerTensorDesc& d : kLayerTensors) {
    if (d.t == t) return absl::StrCat(std::string(kLayerPrefix), layer, ".", d.suffix);
  }
  return "";
}

std::string CanonicalTensorName(std::string_view name) {
  if (name.substr(0, 8) == "decoder.") return absl::StrCat("model.", std::string(name));
  return std::string(name);
}

std::vector<ExpectedTensor> ExpectedTensors(const OptConfig& c) {
  std::vector<ExpectedTensor> out;
  const int64_t h = c.hidden_size, p = c.word_embed_proj_dim;
  out.push_back({std::string(kEmbedTokens), {c.vocab_size, p}, false});
  out.push_back(
      {std::string(kEmbedPositions), {c.max_position_embeddings + kPositionOffset, h}, false});
  if (c.has_projections()) {
    out.push_back({std::string(kProjectIn), {h, p}, false});
    out.push_back({std::string(kProjectOut), {p, h}, false});
  }
  if (c.has_final_layer_norm() && c.layer_norm_elementwise_affine) {
    out.push_back({std::string(kFinalLayerNormWeight), {h}, false});
    out.push_back({std::string(kFinalLayerNormBias), {h}, false});
  }
  if (!c.tie_word_embeddings) out.push_back({std::string(kLmHead), {c.vocab_size, p}, false});
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    for (const LayerTensorDesc& d : kLayerTensors) {
      if (!LayerTensorPresent(c, d.t)) continue;
      std::vector<int64_t> shape = LayerTensorShape(c, d.t);
      const bool linear = shape.size() == 2;
      out.push_back({LayerTensorName(i, d.t), std::move(shape), linear});
    }
  }
  return out;
}

std::vector<int64_t> ExpectedShape(const OptConfig& c, std::string_view name) {
  const std::string n = CanonicalTensorName(name);
  const int64_t h = c.hidden_size, p = c.word_embed_proj_dim;
  if (n == kEmbedTokens || n == kLmHead) return {c.vocab_size, p};
  if (n == kEmbedPositions) return {c.max_position_embeddings + kPositionOffset, h};
  if (c.has_projections()) {
    if (n == kProjectIn) return {h, p};
    if (n == kProjectOut) return {p, h};
  }
  if (n == kFinalLayerNormWeight || n == kFinalLayerNormBias) {
    if (c.has_final_layer_norm() && c.layer_norm_elementwise_affine) return {h};
    return {};
  }
  std::string_view rest(n);
  if (rest.substr(0, kLayerPrefix.size()) != kLayerPrefix) return {};
  rest.remove_prefix(kLayerPrefix.size());
  int64_t layer = 0;
  size_t digits = 0;
  while (digits < rest.size() && digits < 10 && rest[digits] >= '0' && rest[digits] <= '9') {
    layer = layer * 10 + (rest[digits] - '0');
    ++digits;
  }
  if (digits == 0 || digits >= rest.size() || rest[digits] != '.') return {};
  if (digits > 1 && rest[0] == '0') return {};  // no leading zeros
  if (layer >= c.num_hidden_layers) return {};
  rest.remove_prefix(digits + 1);
  for (const LayerTensorDesc& d : kLayerTensors) {
    if (rest == d.suffix) {
      if (!LayerTensorPresent(c, d.t)) return {};
      return LayerTensorShape(c, d.t);
    }
  }
  return {};
}

}  // namespace llmint8::model
