// Hugging Face OPT tensor names and the shapes a config implies.
//
// Canonical names carry the "model." prefix (OPTForCausalLM.save_pretrained); checkpoints saved
// from OPTModel drop it ("decoder.layers.0..."). CanonicalTensorName maps both to the canonical
// form; every CheckpointSource accepts either.
//
//   model.decoder.embed_tokens.weight        [vocab, word_embed_proj_dim]
//   model.decoder.embed_positions.weight     [max_position_embeddings + 2, hidden]  (offset 2)
//   model.decoder.project_in.weight          [hidden, word_embed_proj_dim]  (if proj != hidden)
//   model.decoder.project_out.weight         [word_embed_proj_dim, hidden]  (if proj != hidden)
//   model.decoder.final_layer_norm.{weight,bias}  [hidden]  (absent when do_layer_norm_before is
//                                                           false, as in opt-350m)
//   model.decoder.layers.{i}.self_attn.{q,k,v,out}_proj.{weight [hidden, hidden], bias [hidden]}
//   model.decoder.layers.{i}.self_attn_layer_norm.{weight,bias}  [hidden]
//   model.decoder.layers.{i}.fc1.{weight [ffn, hidden], bias [ffn]}
//   model.decoder.layers.{i}.fc2.{weight [hidden, ffn], bias [hidden]}
//   model.decoder.layers.{i}.final_layer_norm.{weight,bias}  [hidden]
//   lm_head.weight                           [vocab, word_embed_proj_dim]  (absent when tied:
//                                            tie_word_embeddings, the default; then the LM
//                                            head is embed_tokens)
// Biases are absent when enable_bias is false; LayerNorm tensors when
// layer_norm_elementwise_affine is false.
#ifndef LLMINT8_MODEL_TENSOR_NAMES_H_
#define LLMINT8_MODEL_TENSOR_NAMES_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "model/config.h"

namespace llmint8::model {

inline constexpr std::string_view kEmbedTokens = "model.decoder.embed_tokens.weight";
inline constexpr std::string_view kEmbedPositions = "model.decoder.embed_positions.weight";
inline constexpr std::string_view kProjectIn = "model.decoder.project_in.weight";
inline constexpr std::string_view kProjectOut = "model.decoder.project_out.weight";
inline constexpr std::string_view kFinalLayerNormWeight = "model.decoder.final_layer_norm.weight";
inline constexpr std::string_view kFinalLayerNormBias = "model.decoder.final_layer_norm.bias";
inline constexpr std::string_view kLmHead = "lm_head.weight";
// OPT's learned positions are indexed by position + 2.
inline constexpr int64_t kPositionOffset = 2;

// The tensors of one decoder layer.
enum class LayerTensor {
  kQProjWeight, kQProjBias, kKProjWeight, kKProjBias, kVProjWeight, kVProjBias,
  kOutProjWeight, kOutProjBias,
  kSelfAttnLayerNormWeight, kSelfAttnLayerNormBias,
  kFc1Weight, kFc1Bias, kFc2Weight, kFc2Bias,
  kFinalLayerNormWeight, kFinalLayerNormBias,
};

// "model.decoder.layers.{layer}.self_attn.q_proj.weight", ...
std::string LayerTensorName(int64_t layer, LayerTensor t);

// "decoder.x" -> "model.decoder.x"; canonical names and "lm_head.weight" unchanged.
std::string CanonicalTensorName(std::string_view name);

struct ExpectedTensor {
  std::string name;            // canonical
  std::vector<int64_t> shape;  // as stored
  bool is_linear_weight;       // a 2-D weight of a decoder-layer linear (int8-quantizable)
};

// Every tensor the config requires, in load order (globals first, then layer by layer).
// lm_head.weight is listed only when !tie_word_embeddings (a tied source may still hold it).
std::vector<ExpectedTensor> ExpectedTensors(const OptConfig& config);

// The expected shape of one canonical name under `config`; empty if the name is not an OPT
// tensor of this config (lm_head.weight gives [vocab, word_embed_proj_dim]).
std::vector<int64_t> ExpectedShape(const OptConfig& config, std::string_view name);

}  // namespace llmint8::model

#endif  // LLMINT8_MODEL_TENSOR_NAMES_H_
