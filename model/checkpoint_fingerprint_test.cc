#include "model/checkpoint_fingerprint.h"

#include <filesystem>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "model/safetensors.h"
#include "model/synthetic.h"

namespace llmint8::model {
namespace {

OptConfig Tiny() {
  OptConfig c = OptPreset("125m").value();
  c.hidden_size = 16;
  c.num_attention_heads = 2;
  c.ffn_dim = 32;
  c.num_hidden_layers = 2;
  c.vocab_size = 50;
  c.word_embed_proj_dim = 16;
  return c;
}

std::string Fingerprint(const OptConfig& config, const CheckpointSource& source) {
  absl::StatusOr<std::string> f = CheckpointFingerprint(config, source);
  EXPECT_TRUE(f.ok()) << f.status();
  return f.value_or("");
}

TEST(CheckpointFingerprintTest, SyntheticWeightsAreTheirSpec) {
  const OptConfig c = Tiny();
  SyntheticOptions seed1, seed2;
  seed2.seed = 2;
  const std::string a = Fingerprint(c, *MakeSyntheticSource(c, seed1).value());
  EXPECT_EQ(a.size(), 18u);
  EXPECT_EQ(a.substr(0, 2), absl::StrCat(kCheckpointFingerprintVersion, ":"));
  EXPECT_EQ(CheckpointFingerprint(c, *MakeSyntheticSource(c, seed1).value(), [] { return true; })
                .status()
                .code(),
            absl::StatusCode::kCancelled);
  EXPECT_EQ(a, Fingerprint(c, *MakeSyntheticSource(c, seed1).value())) << "not deterministic";
  EXPECT_NE(a, Fingerprint(c, *MakeSyntheticSource(c, seed2).value())) << "other weights";
  OptConfig longer = c;
  longer.max_position_embeddings += 1;  // the config counts, though no sampled value changed
  EXPECT_NE(a, Fingerprint(longer, *MakeSyntheticSource(c, seed1).value()));
  // Where the files were saved from, and as what, do not (the tensors' dtypes do).
  OptConfig resaved = c;
  resaved.name = "/home/someone/opt-local-copy";
  resaved.torch_dtype = DType::kBF16;
  EXPECT_EQ(a, Fingerprint(resaved, *MakeSyntheticSource(c, seed1).value()));
}

// Two copies of one file agree; a file whose sampled value differs (the last row's last
// element of one tensor) or whose tensor is another dtype does not.
TEST(CheckpointFingerprintTest, FilesAgreeWhenTheirTensorsDo) {
  const std::string dir = ::testing::TempDir() + "/llmint8_fingerprint";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  const OptConfig c = Tiny();
  std::vector<float> w(6 * 20);
  for (size_t i = 0; i < w.size(); ++i) w[i] = 0.25f * static_cast<float>(i % 13);
  auto write = [&](const std::string& name, const std::vector<float>& values, bool f32) {
    SafetensorsWriter wr;
    EXPECT_TRUE(
        (f32 ? wr.AddF32("a.weight", {6, 20}, values) : wr.AddF16("a.weight", {6, 20}, values))
            .ok());
    EXPECT_TRUE(wr.AddF32("b.bias", {5}, std::vector<float>{1, 2, 3, 4, 5}).ok());
    const std::string path = dir + "/" + name;
    EXPECT_TRUE(wr.Finish(path).ok());
    return OpenSafetensors(path).value();
  };
  std::vector<float> changed = w;
  changed.back() += 1.0f;
  const std::string one = Fingerprint(c, *write("one.safetensors", w, true));
  EXPECT_EQ(one, Fingerprint(c, *write("copy.safetensors", w, true)));
  EXPECT_NE(one, Fingerprint(c, *write("changed.safetensors", changed, true)));
  EXPECT_NE(one, Fingerprint(c, *write("f16.safetensors", w, false)));
}

}  // namespace
}  // namespace llmint8::model
