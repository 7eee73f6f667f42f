// OPT model configuration, as read from a Hugging Face config.json or taken from a preset.
//
// Field names follow transformers' OPTConfig. ParseOptConfig rejects what the runtime does not
// support (e.g. activation functions other than relu/gelu) with InvalidArgument naming the field.
#ifndef LLMINT8_MODEL_CONFIG_H_
#define LLMINT8_MODEL_CONFIG_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace llmint8::model {

// "relu" (every released OPT checkpoint); "gelu" (the exact erf form). The tanh approximation
// ("gelu_new", "gelu_pytorch_tanh", "gelu_fast") is refused by ParseOptConfig.
enum class Activation { kRelu, kGelu };
enum class DType { kF16, kBF16, kF32 };

struct OptConfig {
  std::string name;                 // preset or checkpoint name, for logs
  int64_t hidden_size = 0;          // d_model
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t ffn_dim = 0;
  int64_t vocab_size = 0;
  int64_t max_position_embeddings = 0;
  int64_t word_embed_proj_dim = 0;  // == hidden_size unless project_in/out exist (opt-350m)
  bool do_layer_norm_before = true;
  bool enable_bias = true;
  bool layer_norm_elementwise_affine = true;
  bool remove_final_layer_norm = false;  // "_remove_final_layer_norm" (legacy OPT flag)
  // false (lm_head.weight a separate tensor) is refused by ParseOptConfig: the forward's LM
  // head is embed_tokens. The planner and the tensor lists still count such a head.
  bool tie_word_embeddings = true;
  Activation activation = Activation::kRelu;
  DType torch_dtype = DType::kF16;  // "torch_dtype" (or "dtype", transformers >= 4.56)
  int64_t bos_token_id = 2;
  int64_t eos_token_id = 2;
  int64_t pad_token_id = 1;

  int64_t head_dim() const { return hidden_size / num_attention_heads; }
  bool has_projections() const { return word_embed_proj_dim != hidden_size; }
  // model.decoder.final_layer_norm exists (as in transformers' OPTDecoder).
  bool has_final_layer_norm() const { return do_layer_norm_before && !remove_final_layer_norm; }
  // Parameter count of the whole model (embeddings counted once; the LM head is tied).
  int64_t NumParameters() const;

  friend bool operator==(const OptConfig&, const OptConfig&) = default;
};

// Bounds on what a config may describe, so that the sizes the runtime and the planner compute
// from one (a tensor's elements, a layer's, the model's; one full-context sequence's KV cache,
// activations and attention scores; times a small constant) fit in int64_t: each dimension at
// most 2^40, at most 2^48 parameters (~281 T, 1,600 x OPT-175B) and 2^48 values for one
// sequence of max_position_embeddings tokens (OPT-175B: 2.9e9); and so that what is done per
// layer or per head (the tensor list a checkpoint is checked against, the planner's search
// over TP degrees) stays small: at most 2^16 of each (OPT-175B has 96). Sizes that also scale
// with serving flags (batch, chunk sizes) are the flags' to bound.
inline constexpr int64_t kMaxConfigDimension = int64_t{1} << 40;
inline constexpr int64_t kMaxLayersOrHeads = int64_t{1} << 16;
inline constexpr int64_t kMaxParameters = int64_t{1} << 48;
inline constexpr int64_t kMaxSequenceValues = int64_t{1} << 48;

// InvalidArgument naming the field when a dimension (hidden_size, num_hidden_layers,
// num_attention_heads, ffn_dim, vocab_size, max_position_embeddings, word_embed_proj_dim, which
// may be 0 for "as hidden_size") is outside [1, kMaxConfigDimension], layers or heads above
// kMaxLayersOrHeads, num_attention_heads does not divide hidden_size, or when the model has
// more than kMaxParameters parameters or a full-context sequence more than kMaxSequenceValues
// values. ParseOptConfig and the synthetic model specs check it; the planner checks it of any
// config it is given.
absl::Status CheckOptConfigShape(const OptConfig& config);

absl::StatusOr<OptConfig> ParseOptConfig(std::string_view config_json);
// `path`: a config.json. The config's name is its _name_or_path, else the file's directory.
absl::StatusOr<OptConfig> LoadOptConfig(const std::string& path);
// A config.json that ParseOptConfig reads back to an equal config (model_type "opt").
std::string OptConfigToJson(const OptConfig& config);

// Real OPT shapes: "125m", "350m", "1.3b", "2.7b", "6.7b", "13b", "30b", "66b", "175b"
// (also accepted with an "opt-" or "facebook/opt-" prefix).
absl::StatusOr<OptConfig> OptPreset(std::string_view name);
std::vector<std::string> OptPresetNames();

}  // namespace llmint8::model

#endif  // LLMINT8_MODEL_CONFIG_H_
