// Our CPU forward (ShardModel, TP = 1) against Hugging Face transformers on the committed tiny
// OPT checkpoints: fp32 logits within 1e-4 (max abs) and the same 32 greedy tokens; the fp16
// weights mode gives transformers' fp16 greedy tokens.
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "model/checkpoint.h"
#include "model/forward_test_util.h"
#include "model/safetensors.h"
#include "model/shard_model.h"
#include "nlohmann/json.hpp"

namespace llmint8::model {
namespace {

// The acceptance bound (issue 3): logits spread ~4 (|max| ~20), so this is ~5e-6 relative.
constexpr double kLogitTol = 1e-4;
constexpr int kSteps = 32;

std::string FixtureDir(const std::string& name) {
  const char* src = std::getenv("LLMINT8_SOURCE_DIR");
  return std::string(src ? src : ".") + "/tests/golden/" + name;
}

nlohmann::json ReadJson(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return nlohmann::json::parse(ss.str(), nullptr, /*allow_exceptions=*/false);
}

class GoldenTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    dir_ = FixtureDir(GetParam());
    auto opened = OpenModelDir(dir_);
    ASSERT_TRUE(opened.ok()) << opened.status();
    model_ = std::move(opened).value();
    auto expected = OpenSafetensors(dir_ + "/expected_logits.safetensors");
    ASSERT_TRUE(expected.ok()) << expected.status();
    expected_ = std::move(expected).value();
    json_ = ReadJson(dir_ + "/expected.json");
    ASSERT_FALSE(json_.is_discarded()) << "cannot parse " << dir_ << "/expected.json";
    ASSERT_TRUE(json_.contains("cases"));
    ASSERT_GE(json_["cases"].size(), 1u) << "no cases: every test below would compare nothing";
  }

  std::unique_ptr<ShardModel> Load(Precision p) {
    ShardOptions o;
    o.precision = p;
    auto m = ShardModel::Load(model_.config, *model_.source, 1, 0, nullptr, o);
    EXPECT_TRUE(m.ok()) << m.status();
    return m.ok() ? std::move(m).value() : nullptr;
  }

  std::vector<float> Expected(const std::string& name) {
    auto v = expected_->ReadAll(name);
    EXPECT_TRUE(v.ok()) << v.status();
    return v.ok() ? *v : std::vector<float>{};
  }

  std::string dir_;
  OpenedModel model_;
  std::unique_ptr<CheckpointSource> expected_;
  nlohmann::json json_;
};

TEST_P(GoldenTest, F32LogitsAndGreedyTokensMatchTransformers) {
  auto model = Load(Precision::kF32);
  ASSERT_NE(model, nullptr);
  const int64_t vocab = model_.config.vocab_size;
  uint64_t seq = 1;
  for (const auto& c : json_["cases"]) {
    const std::vector<int32_t> prompt = c["prompt"].get<std::vector<int32_t>>();
    const std::vector<int32_t> want = c["greedy_tokens"].get<std::vector<int32_t>>();
    const auto& names = c["logits"];
    SCOPED_TRACE(names["last"].get<std::string>());

    // Every prompt position at once (checks the prefill path row by row where recorded).
    ShardModel::SequenceInput in{seq, prompt};
    auto all = model->Step({&in, 1}, /*all_positions=*/true);
    ASSERT_TRUE(all.ok()) << all.status();
    ASSERT_EQ(all->rows, static_cast<int64_t>(prompt.size()));
    const std::vector<float> last = Expected(names["last"]);
    EXPECT_LE(testing::MaxAbsDiff(all->row(all->rows - 1), last), kLogitTol);
    if (names.contains("all")) {
      const std::vector<float> rows = Expected(names["all"]);
      ASSERT_EQ(rows.size(), prompt.size() * vocab);
      for (int64_t r = 0; r < all->rows; ++r) {
        EXPECT_LE(testing::MaxAbsDiff(all->row(r), std::span<const float>(rows).subspan(
                                                        r * vocab, vocab)),
                  kLogitTol)
            << "position " << r;
      }
    }
    ASSERT_TRUE(model->Release(seq).ok());

    // Greedy decoding through the KV cache.
    auto greedy = testing::Greedy(*model, {prompt}, kSteps, seq + 1);
    ASSERT_TRUE(greedy.ok()) << greedy.status();
    EXPECT_EQ(greedy->tokens[0], want);
    if (names.contains("steps")) {
      const std::vector<float> steps = Expected(names["steps"]);
      ASSERT_EQ(steps.size(), static_cast<size_t>(kSteps * vocab));
      double worst = 0;
      for (int s = 0; s < kSteps; ++s) {
        worst = testing::WorseDiff(
            worst, testing::MaxAbsDiff(greedy->logits[s],
                                       std::span<const float>(steps).subspan(s * vocab, vocab)));
      }
      EXPECT_LE(worst, kLogitTol);
      std::printf("%s %s: max |logit diff| over %d greedy steps = %.3g\n", GetParam().c_str(),
                  names["steps"].get<std::string>().c_str(), kSteps, worst);
    }
    ASSERT_TRUE(model->Release(seq + 1).ok());
    seq += 2;
  }
  EXPECT_EQ(model->num_sequences(), 0);
}

TEST_P(GoldenTest, F16WeightsGiveTransformersFp16GreedyTokens) {
  auto model = Load(Precision::kF16);
  ASSERT_NE(model, nullptr);
  std::vector<std::vector<int32_t>> prompts, want;
  for (const auto& c : json_["cases"]) {
    prompts.push_back(c["prompt"].get<std::vector<int32_t>>());
    want.push_back(c["greedy_tokens_fp16"].get<std::vector<int32_t>>());
  }
  // All prompts in one batch: also exercises batching of different lengths.
  auto greedy = testing::Greedy(*model, prompts, kSteps);
  ASSERT_TRUE(greedy.ok()) << greedy.status();
  for (size_t i = 0; i < prompts.size(); ++i) EXPECT_EQ(greedy->tokens[i], want[i]) << i;
}

INSTANTIATE_TEST_SUITE_P(Fixtures, GoldenTest,
                         ::testing::Values("tiny-opt", "tiny-opt-350m-style"),
                         [](const auto& info) {
                           std::string n = info.param;
                           for (char& ch : n) ch = (ch == '-') ? '_' : ch;
                           return n;
                         });

}  // namespace
}  // namespace llmint8::model
