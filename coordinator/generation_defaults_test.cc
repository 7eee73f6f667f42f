#include "coordinator/generation_defaults.h"

#include <filesystem>
#include <fstream>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace llmint8::coordinator {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

class GenerationDefaultsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::path(::testing::TempDir()) / "generation_defaults_test";
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    config_.vocab_size = 1000;
    config_.eos_token_id = 2;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  void Write(const std::string& text) { std::ofstream(dir_ / "generation_config.json") << text; }

  std::filesystem::path dir_;
  model::OptConfig config_;
};

TEST_F(GenerationDefaultsTest, AutoReadsTheModelDirectorysFileWhenThereIsOne) {
  auto none = LoadServedGenerationConfig("auto", "", dir_.string(), config_);
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_FALSE(none->has_value()) << "a model without the file";
  auto synthetic = LoadServedGenerationConfig("auto", "", "synthetic:125m", config_);
  ASSERT_TRUE(synthetic.ok()) << synthetic.status();
  EXPECT_FALSE(synthetic->has_value());

  Write(R"({"eos_token_id": [7, 2, 7], "do_sample": true, "temperature": 0.8, "top_k": 40,
            "max_new_tokens": 64})");
  auto served = LoadServedGenerationConfig("auto", "", dir_.string(), config_);
  ASSERT_TRUE(served.ok()) << served.status();
  ASSERT_TRUE(served->has_value());
  EXPECT_EQ((*served)->source, (dir_ / "generation_config.json").string());
  EXPECT_THAT(EosTokenIds(config_, *served), ElementsAre(2, 7)) << "sorted, once each";

  const v1::GenerationDefaults m = GenerationDefaultsMessage(*served);
  EXPECT_EQ(m.source(), (*served)->source);
  EXPECT_EQ(m.temperature(), 0.8f);
  EXPECT_EQ(m.top_k(), 40);
  EXPECT_EQ(m.max_new_tokens(), 64);
  EXPECT_FALSE(m.has_top_p() || m.has_min_p() || m.has_repetition_penalty());
  EXPECT_EQ(DescribeGenerationDefaults(m), "temperature 0.8, top_k 40, max_new_tokens 64");

  auto off = LoadServedGenerationConfig("none", "", dir_.string(), config_);
  ASSERT_TRUE(off.ok()) << off.status();
  EXPECT_FALSE(off->has_value());
  EXPECT_THAT(EosTokenIds(config_, *off), ElementsAre(2)) << "config.json's";
  EXPECT_EQ(DescribeGenerationDefaults(GenerationDefaultsMessage(*off)), "none");
}

TEST_F(GenerationDefaultsTest, ANamedFileOrDirectoryMustHoldOne) {
  Write(R"({"do_sample": false, "temperature": 0.6})");
  for (const std::filesystem::path& path : {dir_, dir_ / "generation_config.json"}) {
    auto served = LoadServedGenerationConfig(path.string(), "", "synthetic:125m", config_);
    ASSERT_TRUE(served.ok()) << served.status();
    ASSERT_TRUE(served->has_value());
    const v1::GenerationDefaults m = GenerationDefaultsMessage(*served);
    ASSERT_TRUE(m.has_temperature());
    EXPECT_EQ(m.temperature(), 0.0f) << "do_sample false: greedy";
    EXPECT_THAT(EosTokenIds(config_, *served), ElementsAre(2)) << "no list of its own";
  }
  // A list of its own adds to config.json's eos, as vLLM does.
  Write(R"({"eos_token_id": 9})");
  auto nine = LoadServedGenerationConfig(dir_.string(), "", "synthetic:125m", config_);
  ASSERT_TRUE(nine.ok()) << nine.status();
  EXPECT_THAT(EosTokenIds(config_, *nine), ElementsAre(2, 9));

  auto missing = LoadServedGenerationConfig((dir_ / "nothing").string(), "", "x", config_);
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(),
              HasSubstr("--generation_config: no " + (dir_ / "nothing").string()));
}

TEST_F(GenerationDefaultsTest, AnOverrideReplacesTheFilesFieldsOrStandsAlone) {
  Write(R"({"do_sample": true, "temperature": 0.8, "top_k": 40})");
  auto both = LoadServedGenerationConfig("auto", R"({"temperature": 0.5, "min_p": 0.05})",
                                         dir_.string(), config_);
  ASSERT_TRUE(both.ok()) << both.status();
  ASSERT_TRUE(both->has_value());
  EXPECT_EQ((*both)->source,
            (dir_ / "generation_config.json").string() + " with --override_generation_config");
  EXPECT_EQ(DescribeGenerationDefaults(GenerationDefaultsMessage(*both)),
            "temperature 0.5, top_k 40, min_p 0.05");

  auto alone =
      LoadServedGenerationConfig("none", R"({"max_new_tokens": 32})", dir_.string(), config_);
  ASSERT_TRUE(alone.ok()) << alone.status();
  ASSERT_TRUE(alone->has_value());
  EXPECT_EQ((*alone)->source, "--override_generation_config");
  EXPECT_EQ(DescribeGenerationDefaults(GenerationDefaultsMessage(*alone)), "max_new_tokens 32");

  // Over a greedy file, a temperature asks for sampling.
  Write(R"({"do_sample": false, "top_k": 40})");
  auto sampled =
      LoadServedGenerationConfig("auto", R"({"temperature": 0.7})", dir_.string(), config_);
  ASSERT_TRUE(sampled.ok()) << sampled.status();
  EXPECT_EQ(DescribeGenerationDefaults(GenerationDefaultsMessage(*sampled)),
            "temperature 0.7, top_k 40");
  auto greedy =
      LoadServedGenerationConfig("auto", R"({"repetition_penalty": 1.2})", dir_.string(), config_);
  ASSERT_TRUE(greedy.ok()) << greedy.status();
  EXPECT_EQ(DescribeGenerationDefaults(GenerationDefaultsMessage(*greedy)),
            "temperature 0, repetition_penalty 1.2")
      << "no sampling field: the file's do_sample false stands";

  auto bad = LoadServedGenerationConfig("auto", R"({"top_p": 2})", dir_.string(), config_);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("--override_generation_config: field \"top_p\""));
}

TEST_F(GenerationDefaultsTest, AFileTheModelCannotTakeIsRefusedWithTheWayOut) {
  Write(R"({"eos_token_id": 1000})");  // not below vocab_size
  auto served = LoadServedGenerationConfig("auto", "", dir_.string(), config_);
  EXPECT_EQ(served.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(served.status().message(), HasSubstr("\"eos_token_id\""));
  EXPECT_THAT(served.status().message(), HasSubstr("--generation_config=none"));
}

}  // namespace
}  // namespace llmint8::coordinator
