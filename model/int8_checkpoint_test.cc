#include "model/int8_checkpoint.h"

#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/quantize_weight.h"
#include "model/config.h"
#include "model/lm_head_test_util.h"
#include "model/safetensors.h"
#include "model/shard_plan.h"
#include "model/synthetic.h"
#include "model/tensor_names.h"

namespace llmint8::model {
namespace {

// SyntheticOptions with a few fields set (designated initializers trip -Wextra).
template <typename F>
SyntheticOptions Opts(F set) {
  SyntheticOptions o;
  set(o);
  return o;
}

OptConfig Tiny() {
  auto c = ParseOptConfig(R"({"_name_or_path": "tiny", "hidden_size": 64, "num_hidden_layers": 2,
    "num_attention_heads": 4, "ffn_dim": 256, "vocab_size": 1003, "max_position_embeddings": 32,
    "torch_dtype": "float16"})");
  return *c;
}

class Int8CheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ::testing::TempDir() + "/modelio_int8_ckpt";
    std::filesystem::remove_all(dir_);
    auto src = MakeSyntheticSource(cfg_, Opts([](SyntheticOptions& o) {
                                     o.seed = 11;
                                     o.bias_std = 0.01f;
                                     o.outlier_dims = {5};
                                   }));
    ASSERT_TRUE(src.ok());
    source_ = std::move(*src);
    ASSERT_TRUE(WriteInt8Checkpoint(*source_, cfg_, dir_).ok());
    auto m = OpenModelDir(dir_);
    ASSERT_TRUE(m.ok()) << m.status();
    model_ = std::move(*m);
  }

  const OptConfig cfg_ = Tiny();
  std::string dir_;
  std::unique_ptr<CheckpointSource> source_;
  OpenedModel model_;
};

TEST_F(Int8CheckpointTest, LayoutAndConfig) {
  EXPECT_EQ(model_.config, cfg_);
  EXPECT_EQ(SafetensorsMetadata(*model_.source).at("format"), kInt8FormatName);
  for (const ExpectedTensor& t : ExpectedTensors(cfg_)) {
    auto info = model_.source->Info(t.name);
    ASSERT_TRUE(info.ok()) << t.name;
    EXPECT_EQ(info->dtype, t.is_linear_weight ? TensorDType::kI8 : TensorDType::kF16) << t.name;
    EXPECT_EQ(info->shape, t.shape);
  }
  EXPECT_TRUE(std::filesystem::exists(dir_ + "/model-int8-00002-of-00002.safetensors"));
}

// fp16 tensors are copied exactly (the synthetic values are fp16-exact).
TEST_F(Int8CheckpointTest, Fp16TensorsExact) {
  for (std::string name : {std::string(kEmbedTokens), std::string(kFinalLayerNormWeight),
                           LayerTensorName(1, LayerTensor::kFc1Bias)}) {
    auto a = source_->ReadAll(name);
    auto b = model_.source->ReadAll(name);
    ASSERT_TRUE(a.ok() && b.ok());
    EXPECT_EQ(*a, *b) << name;
  }
}

// int8 weights equal kernels::QuantizeWeight of the full tensor, and every TP slice (rows for
// column-parallel, columns for row-parallel) reads the same int8 values with full-row scales.
TEST_F(Int8CheckpointTest, QuantizedSlicesAtEveryTpDegree) {
  for (LayerTensor lt : {LayerTensor::kQProjWeight, LayerTensor::kOutProjWeight,
                         LayerTensor::kFc1Weight, LayerTensor::kFc2Weight}) {
    const std::string name = LayerTensorName(1, lt);
    auto w = source_->ReadAll(name);
    auto info = source_->Info(name);
    ASSERT_TRUE(w.ok() && info.ok());
    const int64_t n = info->rows(), k = info->cols();
    std::vector<int8_t> q(w->size());
    std::vector<float> absmax(static_cast<size_t>(n));
    ASSERT_TRUE(kernels::QuantizeWeight(*w, n, k, q, absmax).ok());
    for (int tp : {1, 2, 4}) {
      for (int rank = 0; rank < tp; ++rank) {
        auto s = MakeShardPlan(cfg_, tp, rank)->SliceFor(cfg_, name);
        ASSERT_TRUE(s.ok());
        std::vector<int8_t> qs(static_cast<size_t>(s->rows.size() * s->cols.size()));
        std::vector<float> sc(static_cast<size_t>(s->rows.size()));
        ASSERT_TRUE(model_.source->ReadInt8Slice(name, s->rows, s->cols, qs, sc).ok());
        std::vector<float> dq(qs.size());
        ASSERT_TRUE(model_.source->ReadSlice(name, s->rows, s->cols, dq).ok());
        for (int64_t r = 0; r < s->rows.size(); ++r) {
          const int64_t gr = s->rows.begin + r;
          ASSERT_EQ(sc[r], absmax[gr]) << name;
          for (int64_t c = 0; c < s->cols.size(); ++c) {
            const int64_t gc = s->cols.begin + c, i = r * s->cols.size() + c;
            ASSERT_EQ(qs[i], q[gr * k + gc]) << name << " tp " << tp;
            // |W - absmax * q / 127| <= absmax / 254 (+ fp32 rounding of the product).
            ASSERT_NEAR(dq[i], (*w)[gr * k + gc], absmax[gr] / 254 * (1 + 1e-5)) << name;
          }
        }
      }
    }
  }
}

TEST_F(Int8CheckpointTest, MissingTensorInSourceIsNotFound) {
  OptConfig bigger = cfg_;
  bigger.num_hidden_layers = 3;  // the int8 checkpoint has only 2 layers
  absl::Status s = WriteInt8Checkpoint(*model_.source, bigger, dir_ + "_bigger");
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(s.message()), ::testing::HasSubstr("model.decoder.layers.2."));
}

// A source whose lm_head.weight differs from its embedding: the int8 copy (which keeps no
// lm_head.weight: tied) would serve the embedding's logits; refused as a load refuses it. A
// tied copy quantizes.
TEST_F(Int8CheckpointTest, AnUntiedLmHeadIsRefusedNotDropped) {
  testing::WithLmHead untied(*source_, 0.5f);
  absl::Status s = WriteInt8Checkpoint(untied, cfg_, dir_ + "_untied");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_THAT(std::string(s.message()), ::testing::HasSubstr("lm_head.weight differs"));
  testing::WithLmHead tied(*source_, 1.0f);
  EXPECT_TRUE(WriteInt8Checkpoint(tied, cfg_, dir_ + "_tied").ok());
  std::filesystem::remove_all(dir_ + "_tied");
  // With project_in/out (OPT-350m's layout) the head is [vocab, word_embed_proj_dim].
  OptConfig projected = cfg_;
  projected.word_embed_proj_dim = 32;
  auto base = MakeSyntheticSource(projected);
  ASSERT_TRUE(base.ok()) << base.status();
  testing::WithLmHead projected_tied(**base, 1.0f);
  EXPECT_TRUE(WriteInt8Checkpoint(projected_tied, projected, dir_ + "_projected").ok());
  std::filesystem::remove_all(dir_ + "_projected");
  testing::WithLmHead projected_untied(**base, 0.5f);
  EXPECT_EQ(WriteInt8Checkpoint(projected_untied, projected, dir_ + "_projected").code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace llmint8::model
