#include "model/shard_plan.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/config.h"
#include "model/tensor_names.h"

namespace llmint8::model {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

OptConfig Tiny() {
  OptConfig c;
  c.name = "tiny";
  c.hidden_size = 64;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.ffn_dim = 256;
  c.vocab_size = 1003;  // not divisible by 2 or 4: exercises the vocab padding
  c.max_position_embeddings = 32;
  c.word_embed_proj_dim = 64;
  return c;
}

TEST(ShardPlanTest, ValidDegreesOfOpt13b) {
  auto c = OptPreset("13b");
  ASSERT_TRUE(c.ok());
  EXPECT_THAT(ValidTpDegrees(*c), ElementsAre(1, 2, 4, 5, 8, 10, 20, 40));
  auto bad = MakeShardPlan(*c, 3, 0);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(bad.status().message()),
              HasSubstr("valid TP degrees for opt-13b: 1, 2, 4, 5, 8, 10, 20, 40"));
}

TEST(ShardPlanTest, Opt175bDegrees) {
  auto c = OptPreset("175b");
  EXPECT_THAT(ValidTpDegrees(*c), ElementsAre(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 96));
}

TEST(ShardPlanTest, RejectsBadRankAndDegree) {
  struct Case {
    int tp;
    int rank;
    const char* says;
  };
  for (const Case& c :
       {Case{0, 0, "TP degree 0 must divide num_attention_heads (4)"},
        Case{8, 0, "TP degree 8 must divide"},  // 8 does not divide 4 heads
        Case{2, 2, "rank 2 is outside [0, 2)"}, Case{2, -1, "rank -1 is outside [0, 2)"}}) {
    const absl::StatusOr<ShardPlan> p = MakeShardPlan(Tiny(), c.tp, c.rank);
    ASSERT_FALSE(p.ok()) << c.says;
    EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(p.status().message()), HasSubstr(c.says));
  }
}

TEST(ShardPlanTest, VocabPadding) {
  const OptConfig c = Tiny();  // vocab 1003
  auto p = MakeShardPlan(c, 4, 3);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->vocab.rows_per_rank, 251);
  EXPECT_EQ(p->vocab.padded_vocab, 1004);
  EXPECT_EQ(p->vocab.rows, (Range{753, 1003}));
  auto opt = MakeShardPlan(*OptPreset("175b"), 3, 2);
  ASSERT_TRUE(opt.ok());
  EXPECT_EQ(opt->vocab.rows_per_rank, 16758);  // ceil(50272 / 3)
  EXPECT_EQ(opt->vocab.rows, (Range{33516, 50272}));
}

// For every tensor, the slices of all ranks tile the full [rows, cols] extent exactly once
// (replicated: every rank has all of it), with the parallelism Megatron prescribes.
class ShardPlanTilingTest : public ::testing::TestWithParam<int> {};

TEST_P(ShardPlanTilingTest, SlicesTileEveryTensor) {
  const int tp = GetParam();
  for (OptConfig c : {Tiny(), *OptPreset("350m")}) {
    std::vector<ShardPlan> plans;
    for (int r = 0; r < tp; ++r) {
      auto p = MakeShardPlan(c, tp, r);
      ASSERT_TRUE(p.ok()) << p.status();
      EXPECT_EQ(p->local_heads * tp, c.num_attention_heads);
      EXPECT_EQ(p->attn_rows.size(), p->local_heads * c.head_dim());
      plans.push_back(*p);
    }
    std::vector<ExpectedTensor> tensors = ExpectedTensors(c);
    tensors.push_back({std::string(kLmHead), ExpectedShape(c, kLmHead), false});
    for (const ExpectedTensor& t : tensors) {
      const int64_t rows = t.shape[0], cols = t.shape.size() > 1 ? t.shape[1] : 1;
      const Range all_rows{0, rows}, all_cols{0, cols};
      Parallelism kind = Parallelism::kReplicated;
      int64_t next = 0;  // the split dimension's ranges must follow each other in rank order
      for (const ShardPlan& p : plans) {
        auto s = p.SliceFor(c, t.name);
        ASSERT_TRUE(s.ok()) << s.status();
        kind = s->parallelism;
        switch (kind) {
          case Parallelism::kReplicated:
            EXPECT_EQ(s->rows, all_rows) << t.name;
            EXPECT_EQ(s->cols, all_cols) << t.name;
            break;
          case Parallelism::kColumn:
          case Parallelism::kVocab:
            EXPECT_EQ(s->cols, all_cols) << t.name;
            EXPECT_EQ(s->rows.begin, next) << t.name << " rank " << p.rank;
            next = s->rows.end;
            break;
          case Parallelism::kRow:
            EXPECT_EQ(s->rows, all_rows) << t.name;
            EXPECT_EQ(s->cols.begin, next) << t.name << " rank " << p.rank;
            next = s->cols.end;
            break;
        }
      }
      if (kind == Parallelism::kColumn || kind == Parallelism::kVocab) {
        EXPECT_EQ(next, rows) << t.name;
      } else if (kind == Parallelism::kRow) {
        EXPECT_EQ(next, cols) << t.name;
      }
      const bool column = t.name.find("q_proj") != std::string::npos ||
                          t.name.find("k_proj") != std::string::npos ||
                          t.name.find("v_proj") != std::string::npos ||
                          t.name.find("fc1") != std::string::npos;
      const bool row = t.name.ends_with("out_proj.weight") || t.name.ends_with("fc2.weight");
      const bool vocab = t.name == kEmbedTokens || t.name == kLmHead;
      const Parallelism expected = column  ? Parallelism::kColumn
                                   : row   ? Parallelism::kRow
                                   : vocab ? Parallelism::kVocab
                                           : Parallelism::kReplicated;
      EXPECT_EQ(kind, expected) << t.name;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Tp, ShardPlanTilingTest, ::testing::Values(1, 2, 4));

TEST(ShardPlanTest, RowParallelColumnsMatchColumnParallelRows) {
  const OptConfig c = Tiny();
  auto p = MakeShardPlan(c, 2, 1);
  ASSERT_TRUE(p.ok());
  auto q = p->SliceFor(c, LayerTensorName(1, LayerTensor::kQProjWeight));
  auto o = p->SliceFor(c, "decoder.layers.1.self_attn.out_proj.weight");  // unprefixed accepted
  auto f1 = p->SliceFor(c, LayerTensorName(0, LayerTensor::kFc1Bias));
  auto f2 = p->SliceFor(c, LayerTensorName(0, LayerTensor::kFc2Weight));
  ASSERT_TRUE(q.ok() && o.ok() && f1.ok() && f2.ok());
  EXPECT_EQ(q->rows, (Range{32, 64}));
  EXPECT_EQ(o->cols, q->rows);
  EXPECT_EQ(o->rows, (Range{0, 64}));
  EXPECT_EQ(f1->rows, (Range{128, 256}));
  EXPECT_EQ(f1->cols, (Range{0, 1}));
  EXPECT_EQ(f2->cols, f1->rows);
  EXPECT_FALSE(p->SliceFor(c, "model.decoder.layers.2.fc1.weight").ok());  // only 2 layers
  EXPECT_FALSE(p->SliceFor(c, "model.decoder.bogus").ok());
}

}  // namespace
}  // namespace llmint8::model
