#include "model/config.h"

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/numeric/int128.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/file.h"
#include "common/json_text.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"

namespace llmint8::model {
namespace {

using Json = nlohmann::json;

absl::Status FieldError(std::string_view field, std::string_view what) {
  return absl::InvalidArgumentError(
      absl::StrCat("config.json field \"", std::string(field), "\": ", std::string(what)));
}

// Reads an integer field. Missing + required -> InvalidArgument; missing + optional -> keeps
// *out. Must be an integer in [min_value, 2^40] (sane bound for any dimension or token id).
absl::Status GetInt(const Json& j, std::string_view field, bool required, int64_t min_value,
                    int64_t* out) {
  auto it = j.find(std::string(field));
  if (it == j.end() || it->is_null()) {
    if (required) return FieldError(field, "missing (required)");
    return absl::OkStatus();
  }
  if (!it->is_number_integer()) {
    return FieldError(field, absl::StrCat("must be an integer, got ", JsonSnippet(*it)));
  }
  constexpr int64_t kMax = int64_t{1} << 40;
  if (it->is_number_unsigned()) {
    const uint64_t u = it->get<uint64_t>();
    if (u > static_cast<uint64_t>(kMax)) return FieldError(field, "too large");
    *out = static_cast<int64_t>(u);
  } else {
    *out = it->get<int64_t>();
  }
  if (*out < min_value || *out > kMax) {
    return FieldError(field, absl::StrCat("must be >= ", min_value, ", got ", *out));
  }
  return absl::OkStatus();
}

absl::Status GetBool(const Json& j, std::string_view field, bool* out) {
  auto it = j.find(std::string(field));
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_boolean())
    return FieldError(field, absl::StrCat("must be true/false, got ", JsonSnippet(*it)));
  *out = it->get<bool>();
  return absl::OkStatus();
}

absl::StatusOr<std::string> GetString(const Json& j, std::string_view field) {
  auto it = j.find(std::string(field));
  if (it == j.end() || it->is_null()) return std::string();
  if (!it->is_string())
    return FieldError(field, absl::StrCat("must be a string, got ", JsonSnippet(*it)));
  return it->get<std::string>();
}

absl::StatusOr<Activation> ParseActivation(std::string_view s) {
  if (s == "relu") return Activation::kRelu;
  if (s == "gelu") return Activation::kGelu;
  if (s == "gelu_new" || s == "gelu_pytorch_tanh" || s == "gelu_fast") {
    // The runtime computes the exact form only: refused here, not at load (a quantized copy of
    // such a model could never have been served).
    return FieldError("activation_function",
                      absl::StrCat("\"", std::string(s),
                                   "\" (GELU's tanh approximation) is not supported; supported: "
                                   "relu (every released OPT checkpoint), gelu (the exact form)"));
  }
  return FieldError("activation_function", absl::StrCat("unsupported value \"", std::string(s),
                                                        "\"; supported: relu, gelu"));
}

std::string_view ActivationName(Activation a) {
  switch (a) {
    case Activation::kRelu:
      return "relu";
    case Activation::kGelu:
      return "gelu";
  }
  return "relu";
}

absl::StatusOr<DType> ParseDType(std::string_view s) {
  if (s == "float16" || s == "torch.float16") return DType::kF16;
  if (s == "bfloat16" || s == "torch.bfloat16") return DType::kBF16;
  if (s == "float32" || s == "torch.float32") return DType::kF32;
  return FieldError("torch_dtype", absl::StrCat("unsupported value \"", std::string(s),
                                                "\"; supported: float16, bfloat16, float32"));
}

std::string_view DTypeName(DType d) {
  switch (d) {
    case DType::kF16:
      return "float16";
    case DType::kBF16:
      return "bfloat16";
    case DType::kF32:
      return "float32";
  }
  return "float16";
}

struct PresetShape {
  const char* name;
  int64_t hidden, layers, heads, ffn, proj;
  bool pre_ln;
};
// Shapes of the released facebook/opt-* checkpoints (Zhang et al. 2022, Table 1; config.json).
constexpr PresetShape kPresets[] = {
    {"125m", 768, 12, 12, 3072, 768, true},      {"350m", 1024, 24, 16, 4096, 512, false},
    {"1.3b", 2048, 24, 32, 8192, 2048, true},    {"2.7b", 2560, 32, 32, 10240, 2560, true},
    {"6.7b", 4096, 32, 32, 16384, 4096, true},   {"13b", 5120, 40, 40, 20480, 5120, true},
    {"30b", 7168, 48, 56, 28672, 7168, true},    {"66b", 9216, 64, 72, 36864, 9216, true},
    {"175b", 12288, 96, 96, 49152, 12288, true},
};

}  // namespace

absl::Status CheckOptConfigShape(const OptConfig& c) {
  const int64_t proj = c.word_embed_proj_dim == 0 ? c.hidden_size : c.word_embed_proj_dim;
  const std::pair<const char*, int64_t> dims[] = {
      {"hidden_size", c.hidden_size},
      {"num_hidden_layers", c.num_hidden_layers},
      {"num_attention_heads", c.num_attention_heads},
      {"ffn_dim", c.ffn_dim},
      {"vocab_size", c.vocab_size},
      {"max_position_embeddings", c.max_position_embeddings},
      {"word_embed_proj_dim", proj},
  };
  for (const auto& [field, value] : dims) {
    if (value < 1 || value > kMaxConfigDimension) {
      return absl::InvalidArgumentError(absl::StrCat(field, " must be in [1, 2^40], got ", value));
    }
  }
  for (const auto& [field, value] : {dims[1], dims[2]}) {
    if (value > kMaxLayersOrHeads) {
      return absl::InvalidArgumentError(absl::StrCat(field, " must be at most 65536, got ", value));
    }
  }
  if (c.hidden_size % c.num_attention_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat("num_attention_heads ", c.num_attention_heads,
                                                   " does not divide hidden_size ", c.hidden_size));
  }
  // An upper bound of NumParameters (every bias, LayerNorm and projection counted) in 128 bits:
  // each product of two dimensions is below 2^80, the layers' sum below 2^125.
  const absl::int128 h = c.hidden_size, e = proj, ffn = c.ffn_dim;
  const absl::int128 per_layer = 4 * (h * h + h) + 2 * h * ffn + ffn + h + 4 * h;
  const absl::int128 params = absl::int128(c.vocab_size) * e +
                              absl::int128(c.max_position_embeddings + 2) * h + 2 * h * e + 2 * h +
                              absl::int128(c.num_hidden_layers) * per_layer;
  // One sequence of the whole context: K and V of every layer, the widest activations of a
  // prefill of it, and one layer's attention scores (heads x positions^2); below 2^97.
  const absl::int128 positions = c.max_position_embeddings;
  const absl::int128 sequence =
      positions * (2 * absl::int128(c.num_hidden_layers) * h + 8 * h + ffn + e) +
      absl::int128(c.num_attention_heads) * positions * positions;
  if (sequence > kMaxSequenceValues) {
    return absl::InvalidArgumentError(absl::StrCat(
        "one sequence of max_position_embeddings (", c.max_position_embeddings,
        ") tokens would hold about ", static_cast<double>(sequence),
        " values (KV cache, activations, attention scores), more than llmint8's bound of 2^48"));
  }
  if (params > kMaxParameters) {
    return absl::InvalidArgumentError(
        absl::StrCat("the model would have about ", static_cast<double>(params),
                     " parameters, more than llmint8's bound of 2^48; check hidden_size (",
                     c.hidden_size, "), num_hidden_layers (", c.num_hidden_layers, "), ffn_dim (",
                     c.ffn_dim, ") and vocab_size (", c.vocab_size, ")"));
  }
  return absl::OkStatus();
}

int64_t OptConfig::NumParameters() const {
  const int64_t h = hidden_size;
  const int64_t bias = enable_bias ? 1 : 0;
  const int64_t ln = layer_norm_elementwise_affine ? 2 * h : 0;
  int64_t n = vocab_size * word_embed_proj_dim + (max_position_embeddings + 2) * h;
  if (has_projections()) n += 2 * h * word_embed_proj_dim;  // project_in/out have no bias
  if (has_final_layer_norm()) n += ln;
  const int64_t attn = 4 * (h * h + bias * h);
  const int64_t ffn = 2 * h * ffn_dim + bias * (ffn_dim + h);
  n += num_hidden_layers * (attn + ffn + 2 * ln);
  return n;
}

absl::StatusOr<OptConfig> ParseOptConfig(std::string_view config_json) {
  RETURN_IF_ERROR(CheckUntrustedJson(config_json, "config.json"));
  Json j = Json::parse(config_json.begin(), config_json.end(), /*cb=*/nullptr,
                       /*allow_exceptions=*/false);
  if (j.is_discarded()) return absl::InvalidArgumentError("config.json is not valid JSON");
  if (!j.is_object()) return absl::InvalidArgumentError("config.json must be a JSON object");

  ASSIGN_OR_RETURN(std::string model_type, GetString(j, "model_type"));
  if (!model_type.empty() && model_type != "opt") {
    return FieldError("model_type",
                      absl::StrCat("\"", model_type, "\" is not supported; only \"opt\""));
  }
  OptConfig c;
  ASSIGN_OR_RETURN(c.name, GetString(j, "_name_or_path"));
  RETURN_IF_ERROR(GetInt(j, "hidden_size", true, 1, &c.hidden_size));
  RETURN_IF_ERROR(GetInt(j, "num_hidden_layers", true, 1, &c.num_hidden_layers));
  RETURN_IF_ERROR(GetInt(j, "num_attention_heads", true, 1, &c.num_attention_heads));
  RETURN_IF_ERROR(GetInt(j, "ffn_dim", true, 1, &c.ffn_dim));
  RETURN_IF_ERROR(GetInt(j, "vocab_size", true, 1, &c.vocab_size));
  RETURN_IF_ERROR(GetInt(j, "max_position_embeddings", true, 1, &c.max_position_embeddings));
  c.word_embed_proj_dim = c.hidden_size;
  RETURN_IF_ERROR(GetInt(j, "word_embed_proj_dim", false, 1, &c.word_embed_proj_dim));
  RETURN_IF_ERROR(GetBool(j, "do_layer_norm_before", &c.do_layer_norm_before));
  RETURN_IF_ERROR(GetBool(j, "enable_bias", &c.enable_bias));
  RETURN_IF_ERROR(GetBool(j, "layer_norm_elementwise_affine", &c.layer_norm_elementwise_affine));
  RETURN_IF_ERROR(GetBool(j, "_remove_final_layer_norm", &c.remove_final_layer_norm));
  RETURN_IF_ERROR(GetBool(j, "tie_word_embeddings", &c.tie_word_embeddings));
  if (!c.tie_word_embeddings) {
    // Every OPT checkpoint ties them; the forward (CPU and CUDA) computes the LM head from
    // embed_tokens, so a separate lm_head.weight would be loaded and never used.
    return absl::UnimplementedError(
        "tie_word_embeddings is false (a separate lm_head.weight), which llmint8 "
        "does not support: its LM head is model.decoder.embed_tokens.weight, as in every OPT "
        "checkpoint");
  }
  RETURN_IF_ERROR(GetInt(j, "bos_token_id", false, 0, &c.bos_token_id));
  RETURN_IF_ERROR(GetInt(j, "eos_token_id", false, 0, &c.eos_token_id));
  RETURN_IF_ERROR(GetInt(j, "pad_token_id", false, 0, &c.pad_token_id));

  ASSIGN_OR_RETURN(std::string act, GetString(j, "activation_function"));
  if (act.empty()) act = "relu";  // transformers' OPTConfig default
  ASSIGN_OR_RETURN(c.activation, ParseActivation(act));
  ASSIGN_OR_RETURN(std::string dtype, GetString(j, "torch_dtype"));
  if (dtype.empty()) {  // transformers >= 4.56 writes "dtype"
    ASSIGN_OR_RETURN(dtype, GetString(j, "dtype"));
  }
  if (dtype.empty()) dtype = "float32";  // transformers loads such a checkpoint as fp32
  ASSIGN_OR_RETURN(c.torch_dtype, ParseDType(dtype));

  // The ids as they stand, given or defaulted (OPTConfig's 2, 2, 1): a default outside a tiny
  // vocabulary would be written back by `quantize` as a value that does not read again.
  for (const auto& [field, id] : {std::pair<const char*, int64_t>{"bos_token_id", c.bos_token_id},
                                  {"eos_token_id", c.eos_token_id},
                                  {"pad_token_id", c.pad_token_id}}) {
    if (id >= c.vocab_size) {
      return FieldError(field, absl::StrCat(id, j.contains(field) ? "" : " (the default)",
                                            " is not below vocab_size ", c.vocab_size));
    }
  }
  if (absl::Status shape = CheckOptConfigShape(c); !shape.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("config.json: ", shape.message()));
  }
  return c;
}

absl::StatusOr<OptConfig> LoadOptConfig(const std::string& path) {
  ASSIGN_OR_RETURN(const std::string text, ReadFileToString(path));
  auto c = ParseOptConfig(text);
  if (!c.ok()) {
    return absl::Status(c.status().code(), absl::StrCat(path, ": ", c.status().message()));
  }
  // No _name_or_path: the model's directory, as transformers names a model loaded from one.
  if (c->name.empty()) {
    const std::string dir = std::filesystem::path(path).parent_path().string();
    c->name = dir.empty() ? path : dir;
  }
  return c;
}

std::string OptConfigToJson(const OptConfig& c) {
  Json j = {
      {"model_type", "opt"},
      {"architectures", {"OPTForCausalLM"}},
      {"_name_or_path", c.name},
      {"hidden_size", c.hidden_size},
      {"num_hidden_layers", c.num_hidden_layers},
      {"num_attention_heads", c.num_attention_heads},
      {"ffn_dim", c.ffn_dim},
      {"vocab_size", c.vocab_size},
      {"max_position_embeddings", c.max_position_embeddings},
      {"word_embed_proj_dim", c.word_embed_proj_dim},
      {"do_layer_norm_before", c.do_layer_norm_before},
      {"enable_bias", c.enable_bias},
      {"layer_norm_elementwise_affine", c.layer_norm_elementwise_affine},
      {"_remove_final_layer_norm", c.remove_final_layer_norm},
      {"tie_word_embeddings", c.tie_word_embeddings},
      {"activation_function", std::string(ActivationName(c.activation))},
      {"torch_dtype", std::string(DTypeName(c.torch_dtype))},
      {"bos_token_id", c.bos_token_id},
      {"eos_token_id", c.eos_token_id},
      {"pad_token_id", c.pad_token_id},
  };
  return JsonText(j, 2);
}

absl::StatusOr<OptConfig> OptPreset(std::string_view name) {
  std::string key = absl::AsciiStrToLower(std::string(name));
  for (std::string_view prefix : {"facebook/", "opt-"}) {
    if (std::string_view(key).substr(0, prefix.size()) == prefix) key = key.substr(prefix.size());
  }
  for (const PresetShape& p : kPresets) {
    if (key != p.name) continue;
    OptConfig c;
    c.name = absl::StrCat("opt-", p.name);
    c.hidden_size = p.hidden;
    c.num_hidden_layers = p.layers;
    c.num_attention_heads = p.heads;
    c.ffn_dim = p.ffn;
    c.vocab_size = 50272;
    c.max_position_embeddings = 2048;
    c.word_embed_proj_dim = p.proj;
    c.do_layer_norm_before = p.pre_ln;
    c.activation = Activation::kRelu;
    c.torch_dtype = DType::kF16;
    return c;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown OPT preset \"", std::string(name),
                   "\"; known: ", absl::StrJoin(OptPresetNames(), ", ")));
}

std::vector<std::string> OptPresetNames() {
  std::vector<std::string> names;
  for (const PresetShape& p : kPresets) names.push_back(p.name);
  return names;
}

}  // namespace llmint8::model
