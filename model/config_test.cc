#include "model/config.h"

#include <cmath>
#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace llmint8::model {
namespace {

using ::testing::HasSubstr;

// facebook/opt-350m's config.json (trimmed of fields we ignore).
constexpr char kOpt350m[] = R"({
  "_name_or_path": "facebook/opt-350m", "activation_dropout": 0.0, "activation_function": "relu",
  "architectures": ["OPTForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 2,
  "do_layer_norm_before": false, "dropout": 0.1, "eos_token_id": 2, "ffn_dim": 4096,
  "hidden_size": 1024, "init_std": 0.02, "layerdrop": 0.0, "max_position_embeddings": 2048,
  "model_type": "opt", "num_attention_heads": 16, "num_hidden_layers": 24, "pad_token_id": 1,
  "prefix": "</s>", "torch_dtype": "float16", "transformers_version": "4.20.0.dev0",
  "use_cache": true, "vocab_size": 50272, "word_embed_proj_dim": 512})";

TEST(ConfigTest, ParsesOpt350mConfigJson) {
  auto c = ParseOptConfig(kOpt350m);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->name, "facebook/opt-350m");
  EXPECT_EQ(c->hidden_size, 1024);
  EXPECT_EQ(c->num_hidden_layers, 24);
  EXPECT_EQ(c->num_attention_heads, 16);
  EXPECT_EQ(c->ffn_dim, 4096);
  EXPECT_EQ(c->vocab_size, 50272);
  EXPECT_EQ(c->word_embed_proj_dim, 512);
  EXPECT_TRUE(c->has_projections());
  EXPECT_FALSE(c->do_layer_norm_before);
  EXPECT_FALSE(c->has_final_layer_norm());
  EXPECT_EQ(c->activation, Activation::kRelu);
  EXPECT_EQ(c->torch_dtype, DType::kF16);
  EXPECT_EQ(c->head_dim(), 64);
  // The preset agrees with the real config.json.
  auto preset = OptPreset("facebook/opt-350m");
  ASSERT_TRUE(preset.ok());
  preset->name = c->name;
  EXPECT_EQ(*preset, *c);
}

TEST(ConfigTest, DefaultsFollowTransformers) {
  auto c = ParseOptConfig(R"({"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
    "ffn_dim": 256, "vocab_size": 1000, "max_position_embeddings": 128})");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->word_embed_proj_dim, 64);
  EXPECT_TRUE(c->do_layer_norm_before);
  EXPECT_TRUE(c->enable_bias);
  EXPECT_TRUE(c->layer_norm_elementwise_affine);
  EXPECT_TRUE(c->has_final_layer_norm());
  EXPECT_EQ(c->activation, Activation::kRelu);
  EXPECT_EQ(c->torch_dtype, DType::kF32);
}

TEST(ConfigTest, ActivationsAndFlags) {
  const std::string base = R"({"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
    "ffn_dim": 256, "vocab_size": 1000, "max_position_embeddings": 128, )";
  auto gelu = ParseOptConfig(base + R"("activation_function": "gelu", "enable_bias": false,
      "layer_norm_elementwise_affine": false, "torch_dtype": "bfloat16"})");
  ASSERT_TRUE(gelu.ok()) << gelu.status();
  EXPECT_EQ(gelu->activation, Activation::kGelu);
  EXPECT_FALSE(gelu->enable_bias);
  EXPECT_FALSE(gelu->layer_norm_elementwise_affine);
  EXPECT_EQ(gelu->torch_dtype, DType::kBF16);
  // GELU's tanh approximation is refused by name, at parse time (the runtime computes the
  // exact form only); it used to pass here and fail only at load.
  for (const char* name : {"gelu_new", "gelu_pytorch_tanh", "gelu_fast"}) {
    auto tanh = ParseOptConfig(base + R"("activation_function": ")" + name + R"("})");
    ASSERT_EQ(tanh.status().code(), absl::StatusCode::kInvalidArgument) << name;
    EXPECT_THAT(std::string(tanh.status().message()), ::testing::HasSubstr(name));
    EXPECT_THAT(std::string(tanh.status().message()), ::testing::HasSubstr("tanh approximation"));
  }
}

struct BadCase {
  std::string json_tail;  // appended to a valid prefix, or the whole text if it starts with '!'
  std::string field;      // must appear in the error
};

TEST(ConfigTest, ErrorsNameTheField) {
  const std::string base = R"({"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
    "ffn_dim": 256, "vocab_size": 1000, )";
  const BadCase cases[] = {
      {R"("max_position_embeddings": 128, "activation_function": "silu"})", "activation_function"},
      {R"("max_position_embeddings": 128, "torch_dtype": "int4"})", "torch_dtype"},
      {R"("max_position_embeddings": 128, "do_layer_norm_before": "yes"})", "do_layer_norm_before"},
      {R"("max_position_embeddings": 128, "model_type": "llama"})", "model_type"},
      {R"("max_position_embeddings": 128, "word_embed_proj_dim": 0})", "word_embed_proj_dim"},
      {R"("max_position_embeddings": 128, "enable_bias": 1})", "enable_bias"},
      {R"("max_position_embeddings": 128, "eos_token_id": 5000})", "eos_token_id"},
      {R"("max_position_embeddings": 1.5})", "max_position_embeddings"},
      {R"("other": 1})", "max_position_embeddings"},  // missing
  };
  for (const BadCase& bc : cases) {
    auto c = ParseOptConfig(base + bc.json_tail);
    ASSERT_FALSE(c.ok()) << bc.json_tail;
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(c.status().message()), HasSubstr(bc.field)) << bc.json_tail;
  }
  auto heads = ParseOptConfig(R"({"hidden_size": 64, "num_hidden_layers": 2,
    "num_attention_heads": 5, "ffn_dim": 256, "vocab_size": 1000, "max_position_embeddings": 8})");
  ASSERT_FALSE(heads.ok());
  EXPECT_THAT(std::string(heads.status().message()), HasSubstr("num_attention_heads"));
  // A default id (bos and eos 2) outside a vocabulary of 2, though the file sets none.
  auto defaulted = ParseOptConfig(R"({"hidden_size": 64, "num_hidden_layers": 2,
    "num_attention_heads": 4, "ffn_dim": 256, "vocab_size": 2, "max_position_embeddings": 8})");
  ASSERT_FALSE(defaulted.ok());
  EXPECT_THAT(std::string(defaulted.status().message()),
              HasSubstr("\"bos_token_id\": 2 (the default) is not below vocab_size 2"));
  EXPECT_FALSE(ParseOptConfig("{not json").ok());
  EXPECT_FALSE(ParseOptConfig("[1, 2]").ok());
  EXPECT_FALSE(ParseOptConfig("").ok());
}

// A separate LM head would be loaded and never used (the forward's is embed_tokens): refused.
// A value nested 200,000 deep: refused before it is parsed, in a few words, not a stack
// overflow (dump() and copies recurse per level) or a megabyte of brackets. Nested 200 deep
// where a number belongs: an error that names the field and says what it got, just as short.
TEST(ConfigTest, ADeeplyNestedValueIsAShortError) {
  const std::string nested = std::string(200000, '[') + std::string(200000, ']');
  auto c = ParseOptConfig(R"({"hidden_size": )" + nested + R"(, "num_hidden_layers": 2})");
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(std::string(c.status().message()),
              HasSubstr("config.json is nested 200001 deep; JSON nested more than 256 deep"));
  EXPECT_LT(c.status().message().size(), 300u);
  const std::string within = std::string(200, '[') + std::string(200, ']');
  c = ParseOptConfig(R"({"hidden_size": )" + within + R"(, "num_hidden_layers": 2})");
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(std::string(c.status().message()), HasSubstr("hidden_size"));
  EXPECT_THAT(std::string(c.status().message()), HasSubstr("an array of 1 elements"));
  EXPECT_LT(c.status().message().size(), 300u);
}

// A file of a million tiny values is refused before it is parsed (parsed, it would take ~40x
// its text).
TEST(ConfigTest, AMillionValuesAreRefusedUnparsed) {
  std::string values;
  for (int i = 0; i < (1 << 20); ++i) values += "0,";
  auto c = ParseOptConfig(R"({"hidden_size": 64, "junk": [)" + values + "0]}");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(c.status().message()), HasSubstr("config.json holds about"));
}

TEST(ConfigTest, UntiedWordEmbeddingsAreRefused) {
  const std::string base = R"({"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
    "ffn_dim": 256, "vocab_size": 1000, "max_position_embeddings": 128, )";
  const absl::StatusOr<OptConfig> untied =
      ParseOptConfig(base + R"("tie_word_embeddings": false})");
  EXPECT_EQ(untied.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(std::string(untied.status().message()),
              HasSubstr("tie_word_embeddings is false (a separate lm_head.weight)"));
  EXPECT_TRUE(ParseOptConfig(base + R"("tie_word_embeddings": true})").ok());
}

TEST(ConfigTest, JsonRoundTrip) {
  for (const std::string& name : OptPresetNames()) {
    auto p = OptPreset(name);
    ASSERT_TRUE(p.ok());
    auto back = ParseOptConfig(OptConfigToJson(*p));
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(*back, *p) << name;
  }
}

TEST(ConfigTest, PresetShapes) {
  auto c = OptPreset("opt-175b");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->hidden_size, 12288);
  EXPECT_EQ(c->num_hidden_layers, 96);
  EXPECT_EQ(c->num_attention_heads, 96);
  EXPECT_EQ(c->ffn_dim, 49152);
  EXPECT_EQ(c->vocab_size, 50272);
  EXPECT_EQ(c->max_position_embeddings, 2048);
  auto unknown = OptPreset("opt-7b");
  ASSERT_FALSE(unknown.ok());
  EXPECT_THAT(std::string(unknown.status().message()), HasSubstr("175b"));
}

TEST(ConfigTest, ParameterCountsMatchTheReleasedModels) {
  // Exact counts of the facebook/opt-* checkpoints (transformers' num_parameters()).
  EXPECT_EQ(OptPreset("125m")->NumParameters(), 125239296);
  EXPECT_EQ(OptPreset("350m")->NumParameters(), 331196416);
  // Named sizes, within 1% (the released 1.3b, 2.7b and 13b are 1.32e9, 2.65e9, 12.85e9: 2%).
  const struct {
    const char* name;
    double params;
    double tol;
  } kSizes[] = {{"1.3b", 1.3e9, 0.02}, {"2.7b", 2.7e9, 0.02}, {"6.7b", 6.7e9, 0.01},
                {"13b", 13e9, 0.02},   {"30b", 30e9, 0.01},   {"66b", 66e9, 0.01},
                {"175b", 175e9, 0.01}};
  for (const auto& s : kSizes) {
    const double n = static_cast<double>(OptPreset(s.name)->NumParameters());
    EXPECT_NEAR(n / s.params, 1.0, s.tol) << s.name << ": " << n;
  }
}

// Sizes are bounded so that no count computed from a config overflows int64_t.
TEST(ConfigTest, SizesAreBoundedSoNoCountOverflows) {
  const auto config = [](int64_t hidden, int64_t layers, int64_t ffn, int64_t vocab) {
    return absl::StrCat(R"({"hidden_size": )", hidden, R"(, "num_hidden_layers": )", layers,
                        R"(, "num_attention_heads": 1, "ffn_dim": )", ffn, R"(, "vocab_size": )",
                        vocab, R"(, "max_position_embeddings": 8})");
  };
  constexpr int64_t k2e40 = int64_t{1} << 40;
  // Models of more than 2^48 parameters (of which the first's products overflow int64_t) are
  // refused before anything is counted in 64 bits.
  for (const std::string& json : {config(k2e40, 1, k2e40, k2e40), config(1 << 24, 1 << 16, 1, 3),
                                  config(1 << 20, 1, 1 << 30, 3), config(1 << 22, 1 << 10, 1, 3)}) {
    const absl::StatusOr<OptConfig> c = ParseOptConfig(json);
    ASSERT_FALSE(c.ok()) << json;
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(c.status().message()), HasSubstr("2^48")) << json;
  }
  EXPECT_THAT(std::string(ParseOptConfig(config(k2e40 + 1, 1, 1, 3)).status().message()),
              HasSubstr("hidden_size"));
  // Layers are bounded on their own: a checkpoint is checked tensor by tensor, layer by layer.
  EXPECT_THAT(std::string(ParseOptConfig(config(1, 65537, 1, 3)).status().message()),
              HasSubstr("num_hidden_layers must be at most 65536"));
  EXPECT_TRUE(ParseOptConfig(config(1, 65536, 1, 3)).ok());
  EXPECT_THAT(std::string(ParseOptConfig(R"({"hidden_size": 65537, "num_hidden_layers": 1,
    "num_attention_heads": 65537, "ffn_dim": 1, "vocab_size": 3, "max_position_embeddings": 8})")
                              .status()
                              .message()),
              HasSubstr("num_attention_heads must be at most 65536"));
  // A context whose KV cache, activations or attention scores would pass 2^48 values: here a
  // tiny model (2^33 parameters in its FFN) with 2^31 positions.
  const absl::StatusOr<OptConfig> long_context = ParseOptConfig(R"({"hidden_size": 1,
    "num_hidden_layers": 1, "num_attention_heads": 1, "ffn_dim": 2147483648, "vocab_size": 3,
    "max_position_embeddings": 2147483648})");
  ASSERT_FALSE(long_context.ok());
  EXPECT_THAT(std::string(long_context.status().message()),
              HasSubstr("one sequence of max_position_embeddings (2147483648) tokens"));
  // At the bounds: a 2^40-row vocabulary of width 1 is 2^40 parameters, counted exactly.
  const absl::StatusOr<OptConfig> wide = ParseOptConfig(config(1, 1, 1, k2e40));
  ASSERT_TRUE(wide.ok()) << wide.status();
  // + positions (8 + 2), final LayerNorm 2, per layer: attention 4 x 2, FFN 2 + 2, norms 4.
  EXPECT_EQ(wide->NumParameters(), k2e40 + 10 + 2 + 8 + 4 + 4);
  for (const std::string& name : OptPresetNames()) {
    EXPECT_TRUE(CheckOptConfigShape(*OptPreset(name)).ok()) << name;
  }
  OptConfig unset;  // all zero: refused, naming the first field
  EXPECT_THAT(std::string(CheckOptConfigShape(unset).message()), HasSubstr("hidden_size"));
  // Heads that do not divide the width: config.json, the planner and model specs alike.
  OptConfig split = *OptPreset("125m");
  split.num_attention_heads = 5;
  EXPECT_THAT(std::string(CheckOptConfigShape(split).message()),
              HasSubstr("num_attention_heads 5 does not divide hidden_size 768"));
}

}  // namespace
}  // namespace llmint8::model
