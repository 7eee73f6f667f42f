// `llmint8 plan` as a user runs it: the LLM.int8() paper's 80 GB numbers for OPT-175B (3 GPUs
// in int8, 6 in fp16) in the text table and the JSON, every kind of --model, exit codes and
// messages for bad flags, and a complete --help.
#include <filesystem>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/cli/run_cli.h"

namespace llmint8::tools {
namespace {

using ::testing::HasSubstr;
using ::testing::MatchesRegex;
using testing::RunCli;
using testing::SourceDir;

TEST(PlanCliTest, CompareTableShowsThreeInt8AndSixFp16GpusAt80GB) {
  const testing::CliResult r = RunCli("plan --model=175b --compare");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // The row reads "  80 GB    6 (57.25 GiB)   3 (59.44 GiB)   3 GPUs".
  bool found = false;
  size_t begin = 0;
  while (begin < r.out.size()) {
    size_t end = r.out.find('\n', begin);
    if (end == std::string::npos) end = r.out.size();
    const std::string line = r.out.substr(begin, end - begin);
    if (line.find(" 80 GB") != std::string::npos) {
      found = true;
      EXPECT_THAT(line, MatchesRegex(" *80 GB +6 \\([0-9.]+ GiB\\) +3 \\([0-9.]+ GiB\\).*"));
    }
    begin = end + 1;
  }
  EXPECT_TRUE(found) << r.out;
}

TEST(PlanCliTest, CompareJsonParsesWithTable2Numbers) {
  const testing::CliResult r = RunCli("plan --model=opt-175b --compare --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const nlohmann::json j = nlohmann::json::parse(r.out, nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << r.out;
  EXPECT_EQ(j["model"], "opt-175b");
  int checked = 0;
  for (const nlohmann::json& row : j["rows"]) {
    if (row["gpu"] == "80 GB") {
      EXPECT_EQ(row["int8"]["tp"], 3);
      EXPECT_EQ(row["fp16"]["tp"], 6);
      EXPECT_EQ(row["fp16"]["min_gpus_by_memory"], 5);  // 5 would hold it; 96 heads need 6
      ++checked;
    }
    if (row["gpu"] == "24 GB") {
      EXPECT_EQ(row["int8"]["tp"], 8);  // OPT-175B int8 fits on 8 x 24 GB
      ++checked;
    }
  }
  EXPECT_EQ(checked, 2) << r.out;
}

TEST(PlanCliTest, SinglePlanJsonDefaultsToInt8On80GiB) {
  const testing::CliResult r = RunCli("plan --model=175b --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const nlohmann::json j = nlohmann::json::parse(r.out, nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << r.out;
  EXPECT_EQ(j["dtype"], "int8");
  EXPECT_EQ(j["tp"], 3);
  EXPECT_EQ(j["gpu_bytes"], int64_t{80} << 30);

  const testing::CliResult f16 = RunCli("plan --model=175b --dtype fp16 --gpu-memory=80GiB --json");
  ASSERT_EQ(f16.exit_code, 0) << f16.err;
  EXPECT_EQ(nlohmann::json::parse(f16.out)["tp"], 6);

  // The Hugging Face name, as --help lists it: a preset, not a path.
  const testing::CliResult hf = RunCli("plan --model=facebook/opt-175b --json");
  ASSERT_EQ(hf.exit_code, 0) << hf.err;
  EXPECT_EQ(nlohmann::json::parse(hf.out)["tp"], 3);
  EXPECT_EQ(RunCli("plan --model=facebook/opt-13b").exit_code, 0);
}

TEST(PlanCliTest, ModelDirectoryConfigJsonAndSyntheticSpec) {
  const std::string dir = SourceDir() + "/tests/golden/tiny-opt";
  for (const std::string& model :
       {dir, dir + "/config.json", std::string("synthetic:125m,layers=2,hidden=64,heads=4")}) {
    const testing::CliResult r = RunCli("plan --json --model=" + model);
    ASSERT_EQ(r.exit_code, 0) << model << ": " << r.err;
    const nlohmann::json j = nlohmann::json::parse(r.out, nullptr, false);
    ASSERT_FALSE(j.is_discarded()) << r.out;
    EXPECT_EQ(j["tp"], 1) << model;
  }
}

TEST(PlanCliTest, TooFewGpusIsExitOneWithTheNeed) {
  const testing::CliResult r = RunCli("plan --model=175b --gpus=2");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("needs 3"));
}

TEST(PlanCliTest, BadFlagsExitTwoAndSayWhatToChange) {
  struct Case {
    const char* args;
    const char* message;
  };
  const Case cases[] = {
      {"plan", "--model is required"},
      {"plan --model=175b --gpus=abc", "--gpus=abc"},
      {"plan --model=175b --tp=2", "--tp is not a flag of llmint8 plan"},
      {"plan --model=175b --bogus", "unknown flag --bogus"},
      {"plan --model=175b extra", "unexpected argument 'extra'"},
      {"plan --model=175b --dtype=int4", "int4"},
      {"plan --model=175b --gpu-memory=lots", "lots"},
      {"plan --model=175b --batch=0", "--batch must be >= 1"},
      {"plan --model=/no/such/dir", "does not exist"},
      {"plan --model=synthetic:nope", "nope"},
      {"plan --model", "--model needs a value"},
      {"plan --model --json", "--model needs a value"},
      {"plan --model --nojson", "--model needs a value"},
      {"plan --model -json", "--model needs a value"},
      {"plan --model=175b --compare --gpus=2", "--gpus (a count to check) is for one plan"},
  };
  for (const Case& c : cases) {
    const testing::CliResult r = RunCli(c.args);
    EXPECT_EQ(r.exit_code, 2) << c.args << "\n" << r.err;
    EXPECT_THAT(r.err, HasSubstr(c.message)) << c.args;
    EXPECT_TRUE(r.out.empty()) << c.args;
  }
}

// --json of a model whose path is not UTF-8 (its name, from the path, is in the JSON): valid JSON
// with the byte replaced, not an abort in the JSON library.
TEST(PlanCliTest, JsonOfANonUtf8PathIsValid) {
  const std::string dir = testing::MakeTempDir("plan") + "/model\xff";
  std::filesystem::create_directories(dir);
  std::filesystem::copy_file(SourceDir() + "/models/opt-sotu-cpu/config.json",
                             dir + "/config.json");
  const testing::CliResult r = RunCli("plan --json --model='" + dir + "'");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const nlohmann::json j = nlohmann::json::parse(r.out, nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << r.out;
  EXPECT_THAT(j["model"].get<std::string>(), HasSubstr("model\xef\xbf\xbd")) << "U+FFFD";
  std::filesystem::remove_all(std::filesystem::path(dir).parent_path());
}

TEST(PlanCliTest, HelpListsEveryFlag) {
  const testing::CliResult r = RunCli("plan --help");
  ASSERT_EQ(r.exit_code, 0);
  for (const char* flag : {"--model", "--dtype", "--gpu_memory", "--gpus", "--batch", "--context",
                           "--compare", "--json"}) {
    EXPECT_THAT(r.out, HasSubstr(flag));
  }
  EXPECT_THAT(r.out, HasSubstr("--dtype (default: \"int8\")"));
}

}  // namespace
}  // namespace llmint8::tools
