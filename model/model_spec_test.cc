#include "model/model_spec.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace llmint8::model {
namespace {

using ::testing::HasSubstr;

TEST(ModelSpecTest, SyntheticOverridesReplaceThePresetsFields) {
  const absl::StatusOr<OptConfig> c =
      LoadModelSpecConfig("synthetic:125m,layers=2,hidden=64,heads=4,ffn=256,vocab=400");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->num_hidden_layers, 2);
  EXPECT_EQ(c->hidden_size, 64);
  EXPECT_EQ(c->word_embed_proj_dim, 64);
  EXPECT_EQ(c->num_attention_heads, 4);
  EXPECT_EQ(c->ffn_dim, 256);
  EXPECT_EQ(c->vocab_size, 400);
  EXPECT_EQ(c->max_position_embeddings, 2048);  // the preset's
}

// A spec reaches every worker from the coordinator's --model: sizes whose counts overflow are
// refused with the spec named, as a config.json's are.
TEST(ModelSpecTest, SizesBeyondTheConfigBoundsAreRefused) {
  const struct {
    std::string spec;
    std::string why;
  } kCases[] = {
      {"synthetic:125m,hidden=9223372036854775807", "hidden_size must be in [1, 2^40]"},
      {"synthetic:125m,layers=65537", "num_hidden_layers must be at most 65536"},
      {"synthetic:175b,vocab=1099511627776", "parameters, more than llmint8's bound of 2^48"},
      {"synthetic:125m,positions=1099511627777", "max_position_embeddings must be in [1, 2^40]"},
      {"synthetic:125m,positions=1073741824", "one sequence of max_position_embeddings"},
  };
  for (const auto& [spec, why] : kCases) {
    const absl::StatusOr<OptConfig> c = LoadModelSpecConfig(spec);
    ASSERT_FALSE(c.ok()) << spec;
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument) << spec;
    EXPECT_THAT(std::string(c.status().message()), HasSubstr(spec)) << c.status();
    EXPECT_THAT(std::string(c.status().message()), HasSubstr(why)) << c.status();
  }
  EXPECT_THAT(std::string(LoadModelSpecConfig("synthetic:125m,hidden=0").status().message()),
              HasSubstr("positive integer"));
}

}  // namespace
}  // namespace llmint8::model
