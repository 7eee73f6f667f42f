#include "model/generation_config.h"

#include <filesystem>
#include <fstream>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace llmint8::model {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr int64_t kVocab = 50272;

TEST(GenerationConfigTest, ReadsTheSamplingDefaultsOfTheBundledModelsFile) {
  // models/opt-sotu-cpu/generation_config.json as train/ writes it.
  auto c = ParseGenerationConfig(R"({
    "bos_token_id": 2, "do_sample": true, "eos_token_id": 2, "max_new_tokens": 64,
    "pad_token_id": 1, "temperature": 0.8, "top_k": 40, "transformers_version": "5.24.0"})",
                                 kVocab);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_THAT(c->eos_token_ids, ElementsAre(2));
  EXPECT_EQ(c->do_sample, true);
  EXPECT_EQ(c->temperature, 0.8f);
  EXPECT_EQ(c->top_k, 40);
  EXPECT_EQ(c->max_new_tokens, 64);
  EXPECT_FALSE(c->top_p.has_value());
  EXPECT_FALSE(c->min_p.has_value());
  EXPECT_FALSE(c->repetition_penalty.has_value());
}

TEST(GenerationConfigTest, WhatSavePretrainedWritesForAModelWithoutDefaultsSetsNothing) {
  // tests/golden/tiny-opt/generation_config.json: the fields save_pretrained copies from the
  // model config, none of them read here but eos (absent too).
  auto c = ParseGenerationConfig(R"({"_from_model_config": true, "bos_token_id": 2,
    "output_attentions": false, "output_hidden_states": false, "pad_token_id": 1,
    "transformers_version": "5.23.0", "use_cache": true})",
                                 kVocab);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(*c, GenerationConfig{});
}

TEST(GenerationConfigTest, EosMayBeAListAndNullMeansUnset) {
  auto c = ParseGenerationConfig(
      R"({"eos_token_id": [2, 50118], "temperature": null, "top_p": 0.9, "min_p": 0,
          "repetition_penalty": 1.1, "do_sample": false})",
      kVocab);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_THAT(c->eos_token_ids, ElementsAre(2, 50118));
  EXPECT_EQ(c->do_sample, false);
  EXPECT_FALSE(c->temperature.has_value());
  EXPECT_EQ(c->top_p, 0.9f);
  EXPECT_EQ(c->min_p, 0.0f);
  EXPECT_EQ(c->repetition_penalty, 1.1f);
}

TEST(GenerationConfigTest, RefusesValuesTheSamplerCannotTakeNamingTheField) {
  const struct {
    const char* json;
    const char* field;
  } kCases[] = {
      {R"({"eos_token_id": 50272})", "eos_token_id"},  // not below vocab_size
      {R"({"eos_token_id": -1})", "eos_token_id"},
      {R"({"eos_token_id": [2, "3"]})", "eos_token_id"},
      {R"({"eos_token_id": 2.5})", "eos_token_id"},
      {R"({"eos_token_id": 18446744073709551615})", "eos_token_id"},
      {R"({"do_sample": 1})", "do_sample"},
      {R"({"temperature": -0.5})", "temperature"},
      {R"({"temperature": "0.7"})", "temperature"},
      {R"({"top_k": -1})", "top_k"},
      {R"({"top_k": 40.5})", "top_k"},
      {R"({"top_k": 4294967296})", "top_k"},
      {R"({"top_p": 0})", "top_p"},
      {R"({"top_p": 1.5})", "top_p"},
      {R"({"min_p": 2})", "min_p"},
      {R"({"repetition_penalty": 0})", "repetition_penalty"},
      {R"({"max_new_tokens": 0})", "max_new_tokens"},
      {R"({"max_new_tokens": [64]})", "max_new_tokens"},
  };
  for (const auto& test : kCases) {
    auto c = ParseGenerationConfig(test.json, kVocab);
    ASSERT_FALSE(c.ok()) << test.json;
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument) << test.json;
    EXPECT_THAT(c.status().message(),
                HasSubstr(absl::StrCat("generation_config.json: field \"", test.field, "\"")))
        << test.json;
  }
  std::string many = "[";
  for (int i = 0; i <= kMaxEosTokenIds; ++i) absl::StrAppend(&many, i == 0 ? "" : ",", i);
  auto c = ParseGenerationConfig(absl::StrCat(R"({"eos_token_id": )", many, "]}"), kVocab);
  EXPECT_THAT(c.status().message(), HasSubstr("more than the 64 supported"));
}

TEST(GenerationConfigTest, ValuesAreCheckedAsTheFloatsTheSamplerHolds) {
  for (const char* text : {R"({"temperature": 1e39})", R"({"repetition_penalty": 1e39})",
                           R"({"top_p": 1e-46})", R"({"repetition_penalty": 1e-46})"}) {
    auto c = ParseGenerationConfig(text, kVocab);
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument) << text;
  }
}

// Nesting deeper than a recursive walk's stack: a short error, not a crash.
TEST(GenerationConfigTest, ADeeplyNestedValueIsAShortError) {
  constexpr int kDepth = 200000;
  for (const char* field : {"eos_token_id", "temperature", "do_sample", "top_k"}) {
    const std::string text =
        absl::StrCat("{\"", field, "\": ", std::string(kDepth, '['), std::string(kDepth, ']'), "}");
    auto c = ParseGenerationConfig(text, kVocab);
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument) << field;
    EXPECT_LT(c.status().message().size(), 300u) << field;
  }
}

TEST(GenerationConfigTest, AnOverlaySetsWhatItHasAndKeepsTheRest) {
  GenerationConfig base;
  base.eos_token_ids = {2};
  base.do_sample = true;
  base.temperature = 0.8f;
  base.top_k = 40;
  GenerationConfig over;
  over.temperature = 0.5f;
  over.min_p = 0.05f;
  GenerationConfig want = base;
  want.temperature = 0.5f;
  want.min_p = 0.05f;
  EXPECT_EQ(Overlay(base, over), want);
  over.eos_token_ids = {7, 9};
  want.eos_token_ids = {7, 9};
  EXPECT_EQ(Overlay(base, over), want);
  EXPECT_EQ(Overlay(base, {}), base);
}

TEST(GenerationConfigTest, RefusesWhatIsNotAJsonObject) {
  for (const char* text : {"", "[]", "{\"top_k\": ", "null"}) {
    auto c = ParseGenerationConfig(text, kVocab);
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument) << text;
  }
}

TEST(GenerationConfigTest, LoadsFromAFileOrItsDirectoryAndSaysWhenThereIsNone) {
  const std::filesystem::path dir =
      std::filesystem::path(testing::TempDir()) / "generation_config_test";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  auto missing = LoadGenerationConfig(dir.string(), kVocab);
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(), HasSubstr("generation_config.json"));

  const std::filesystem::path file = dir / "generation_config.json";
  std::ofstream(file) << R"({"top_k": 7})";
  for (const std::filesystem::path& path : {dir, file}) {
    auto c = LoadGenerationConfig(path.string(), kVocab);
    ASSERT_TRUE(c.ok()) << c.status();
    EXPECT_EQ(c->top_k, 7);
  }
  std::ofstream(file) << R"({"top_k": "many"})";
  auto bad = LoadGenerationConfig(dir.string(), kVocab);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr(file.string()));
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace llmint8::model
