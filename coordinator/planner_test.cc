#include "coordinator/planner.h"

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/config.h"
#include "model/shard_plan.h"
#include "nlohmann/json.hpp"

namespace llmint8::coordinator {
namespace {

using model::OptConfig;
using ::testing::HasSubstr;

OptConfig Preset(const std::string& name) {
  absl::StatusOr<OptConfig> c = model::OptPreset(name);
  EXPECT_TRUE(c.ok()) << c.status();
  return c.ok() ? *c : OptConfig{};
}

// Default reserve of the paper claims: one sequence of the full 2048-token context.
const Reserve kOneFullSequence = Reserve::Tokens(1, 2048);

// ---- The LLM.int8() paper, Table 2 -------------------------------------------------------

TEST(PlannerPaperTest, Opt175bInt8FitsOnEight24GbGpus) {
  PlanOptions eight;
  eight.available_gpus = 8;
  absl::StatusOr<PlanResult> plan =
      Plan(Preset("175b"), WeightDType::kInt8, 24 * kGiB, kOneFullSequence, eight);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->tp, 8);
  EXPECT_LE(plan->per_gpu.Total(), 24 * kGiB);
  EXPECT_EQ(plan->headroom_bytes, 24 * kGiB - plan->per_gpu.Total());
}

TEST(PlannerPaperTest, Opt175bFp16DoesNotFitOnEight24GbGpus) {
  PlanOptions eight;
  eight.available_gpus = 8;
  absl::StatusOr<PlanResult> plan =
      Plan(Preset("175b"), WeightDType::kF16, 24 * kGiB, kOneFullSequence, eight);
  ASSERT_FALSE(plan.ok());
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(plan.status().message(), HasSubstr("opt-175b fp16 needs 16 x 24 GiB; 8 given"));
}

// The largest preset that fits on `gpus` GPUs of `bytes` each, or "" if none.
std::string LargestThatFits(WeightDType dtype, int64_t bytes, int gpus) {
  std::string largest;
  int64_t largest_params = 0;
  PlanOptions options;
  options.available_gpus = gpus;
  for (const std::string& name : model::OptPresetNames()) {
    const OptConfig config = Preset(name);
    if (Plan(config, dtype, bytes, kOneFullSequence, options).ok() &&
        config.NumParameters() > largest_params) {
      largest = config.name;
      largest_params = config.NumParameters();
    }
  }
  return largest;
}

TEST(PlannerPaperTest, LargestOptOnEight24GbGpusIs66bInFp16And175bInInt8) {
  EXPECT_EQ(LargestThatFits(WeightDType::kF16, 24 * kGiB, 8), "opt-66b");
  EXPECT_EQ(LargestThatFits(WeightDType::kInt8, 24 * kGiB, 8), "opt-175b");
}

// The paper's other rows: 8 x 40 GB (16-bit OPT-66B, 8-bit OPT-175B) and 4 x 24 GB (30B, 66B).
TEST(PlannerPaperTest, EightA100s40GbAndFour24GbGpus) {
  EXPECT_EQ(LargestThatFits(WeightDType::kF16, 40 * kGiB, 8), "opt-66b");
  EXPECT_EQ(LargestThatFits(WeightDType::kInt8, 40 * kGiB, 8), "opt-175b");
  EXPECT_EQ(LargestThatFits(WeightDType::kF16, 24 * kGiB, 4), "opt-30b");
  EXPECT_EQ(LargestThatFits(WeightDType::kInt8, 24 * kGiB, 4), "opt-66b");
}

TEST(PlannerPaperTest, Opt175bOn80GbGpusNeedsThreeInt8AndSixFp16) {
  absl::StatusOr<PlanResult> int8 =
      Plan(Preset("175b"), WeightDType::kInt8, 80 * kGiB, kOneFullSequence);
  ASSERT_TRUE(int8.ok()) << int8.status();
  EXPECT_EQ(int8->tp, 3);
  EXPECT_EQ(int8->min_gpus_by_memory, 3);

  absl::StatusOr<PlanResult> fp16 =
      Plan(Preset("175b"), WeightDType::kF16, 80 * kGiB, kOneFullSequence);
  ASSERT_TRUE(fp16.ok()) << fp16.status();
  // Five GPUs hold the bytes, but 5 does not divide 96 heads: the next valid degree is 6.
  EXPECT_EQ(fp16->min_gpus_by_memory, 5);
  EXPECT_EQ(fp16->tp, 6);
  EXPECT_EQ(96 % 5, 1);
}

TEST(PlannerPaperTest, ClaimsHoldWithDecimal80GbToo) {
  // 80 GB (10^9) instead of 80 GiB: the 80-GB-class claims do not hinge on the unit.
  EXPECT_EQ(Plan(Preset("175b"), WeightDType::kInt8, 80 * kGB, kOneFullSequence)->tp, 3);
  EXPECT_EQ(Plan(Preset("175b"), WeightDType::kF16, 80 * kGB, kOneFullSequence)->tp, 6);
}

TEST(PlannerPaperTest, NotEnoughGpusNamesTheNeed) {
  PlanOptions two;
  two.available_gpus = 2;
  absl::StatusOr<PlanResult> plan =
      Plan(Preset("175b"), WeightDType::kInt8, 80 * kGiB, kOneFullSequence, two);
  ASSERT_EQ(plan.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(plan.status().message(), HasSubstr("opt-175b int8 needs 3 x 80 GiB; 2 given"));

  PlanOptions five;
  five.available_gpus = 5;
  plan = Plan(Preset("175b"), WeightDType::kF16, 80 * kGiB, kOneFullSequence, five);
  ASSERT_EQ(plan.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(plan.status().message(), HasSubstr("needs 6 x 80 GiB; 5 given"));
  EXPECT_THAT(plan.status().message(), HasSubstr("5 would hold it but TP must divide 96 heads"));
}

TEST(PlannerPaperTest, CompareTableOf175b) {
  const std::vector<GpuSize> gpus = DefaultCompareGpuSizes();
  absl::StatusOr<CompareTable> table = Compare(Preset("175b"), gpus, kOneFullSequence);
  ASSERT_TRUE(table.ok()) << table.status();
  ASSERT_EQ(table->rows.size(), 4u);
  // {gpu label, fp16 GPUs, int8 GPUs}; each count is the smallest divisor of 96 that fits.
  const struct {
    const char* label;
    int fp16;
    int int8;
  } want[] = {{"24 GB", 16, 8}, {"40 GB", 12, 6}, {"80 GB", 6, 3}, {"141 GB", 3, 2}};
  for (size_t i = 0; i < 4; ++i) {
    SCOPED_TRACE(want[i].label);
    EXPECT_EQ(table->rows[i].gpu.label, want[i].label);
    ASSERT_TRUE(table->rows[i].fp16.has_value());
    ASSERT_TRUE(table->rows[i].int8.has_value());
    EXPECT_EQ(table->rows[i].fp16->tp, want[i].fp16);
    EXPECT_EQ(table->rows[i].int8->tp, want[i].int8);
  }
  const nlohmann::json j = CompareToJson(*table);
  EXPECT_EQ(j["model"], "opt-175b");
  EXPECT_EQ(j["rows"][2]["gpu"], "80 GB");
  EXPECT_EQ(j["rows"][2]["int8"]["tp"], 3);
  EXPECT_EQ(j["rows"][2]["fp16"]["tp"], 6);
  EXPECT_EQ(j["rows"][2]["fp16"]["min_gpus_by_memory"], 5);
  const std::string text = CompareToText(*table);
  EXPECT_THAT(text, HasSubstr("80 GB"));
  EXPECT_THAT(text, HasSubstr("3 GPUs"));  // int8 saves 3 of 6 on 80 GB
}

// ---- Byte accounting ---------------------------------------------------------------------

TEST(PlannerBytesTest, Fp16TensorsAtTp1AreTheParameterCount) {
  // At TP=1 fp16 nothing is split or padded: weights + fp16 tensors == 2 bytes x parameters.
  for (const std::string& name : model::OptPresetNames()) {
    SCOPED_TRACE(name);
    const OptConfig c = Preset(name);
    absl::StatusOr<MemoryBreakdown> m = BytesPerGpu(c, WeightDType::kF16, 1, kOneFullSequence);
    ASSERT_TRUE(m.ok()) << m.status();
    EXPECT_EQ(m->weights + m->fp16_tensors, 2 * c.NumParameters());
    EXPECT_EQ(m->int8_scales, 0);
  }
  // facebook/opt-125m has 125,239,296 parameters.
  const MemoryBreakdown m = *BytesPerGpu(Preset("125m"), WeightDType::kF16, 1, kOneFullSequence);
  EXPECT_EQ(m.weights + m.fp16_tensors, 2 * int64_t{125239296});
}

TEST(PlannerBytesTest, Int8HalvesTheLinearWeightsAndAddsRowScales) {
  const OptConfig c = Preset("13b");  // h 5120, 40 layers, 40 heads, ffn 20480
  for (int tp : {1, 2, 4, 8}) {
    SCOPED_TRACE(tp);
    const MemoryBreakdown f = *BytesPerGpu(c, WeightDType::kF16, tp, kOneFullSequence);
    const MemoryBreakdown q = *BytesPerGpu(c, WeightDType::kInt8, tp, kOneFullSequence);
    const int64_t h = 5120, ffn = 20480, layers = 40;
    EXPECT_EQ(q.weights, layers * (4 * h * h + 2 * h * ffn) / tp);
    EXPECT_EQ(f.weights, 2 * q.weights);
    // q, k, v and fc1 rows are split; out_proj and fc2 keep all h output rows.
    EXPECT_EQ(q.int8_scales, layers * 4 * (3 * h / tp + h + ffn / tp + h));
    EXPECT_EQ(q.fp16_tensors, f.fp16_tensors);
    EXPECT_EQ(q.kv_cache, f.kv_cache);
  }
}

TEST(PlannerBytesTest, KvCacheIsTwoLayersBatchContextHiddenOverTpFp16) {
  const OptConfig c = Preset("66b");  // 64 layers, hidden 9216
  for (int tp : {1, 2, 4, 8}) {
    for (const Reserve& r : {Reserve::Tokens(1, 2048), Reserve::Tokens(8, 512)}) {
      const MemoryBreakdown m = *BytesPerGpu(c, WeightDType::kInt8, tp, r);
      EXPECT_EQ(m.kv_cache, 2 * 64 * r.batch * r.context * 9216 / tp * 2);
    }
  }
  // context 0 means the model's 2048 positions.
  const int64_t full_context_kv = 2 * 64 * 2048 * int64_t{9216} * 2;
  EXPECT_EQ(BytesPerGpu(c, WeightDType::kInt8, 1, Reserve::Tokens(1, 0))->kv_cache,
            full_context_kv);
}

TEST(PlannerBytesTest, ShardsPartitionTheSplitTensorsExactly) {
  const OptConfig c = Preset("30b");  // 56 heads, ffn 28672: valid TP 1 2 4 7 8 14 28 56
  EXPECT_EQ(model::ValidTpDegrees(c), (std::vector<int>{1, 2, 4, 7, 8, 14, 28, 56}));
  const MemoryBreakdown one = *BytesPerGpu(c, WeightDType::kInt8, 1, kOneFullSequence);
  for (int tp : model::ValidTpDegrees(c)) {
    const MemoryBreakdown m = *BytesPerGpu(c, WeightDType::kInt8, tp, kOneFullSequence);
    EXPECT_EQ(m.weights * tp, one.weights) << tp;
    EXPECT_EQ(m.kv_cache * tp, one.kv_cache) << tp;
  }
  // Vocab 50272 is padded to ceil(50272 / 7) = 7182 rows on each of 7 ranks.
  const MemoryBreakdown seven = *BytesPerGpu(c, WeightDType::kF16, 7, kOneFullSequence);
  const MemoryBreakdown eight = *BytesPerGpu(c, WeightDType::kF16, 8, kOneFullSequence);
  EXPECT_EQ(seven.fp16_tensors - eight.fp16_tensors,
            2 * (7182 - 6284) * int64_t{7168} +                                   // vocab rows
                2 * 48 * (3 * 7168 / 7 + 28672 / 7 - 3 * 7168 / 8 - 28672 / 8));  // biases
}

TEST(PlannerBytesTest, UntiedLmHeadIsAnotherVocabShard) {
  OptConfig untied = Preset("13b");
  untied.tie_word_embeddings = false;
  for (int tp : {1, 2, 8}) {
    const MemoryBreakdown tied =
        *BytesPerGpu(Preset("13b"), WeightDType::kInt8, tp, kOneFullSequence);
    const MemoryBreakdown m = *BytesPerGpu(untied, WeightDType::kInt8, tp, kOneFullSequence);
    EXPECT_EQ(m.fp16_tensors - tied.fp16_tensors, 2 * ((50272 + tp - 1) / tp) * int64_t{5120});
  }
}

// CPU workers keep their KV cache, biases and LayerNorms in fp32: twice the GPU's bytes there;
// the weights and the fp16 tables are the same.
TEST(PlannerBytesTest, CpuWorkersCountTheirFp32KvCacheBiasesAndNorms) {
  const OptConfig c = Preset("1.3b");
  const Reserve reserve = Reserve::Tokens(2, 2048);
  const MemoryBreakdown gpu =
      *BytesPerGpu(c, WeightDType::kInt8, 2, reserve, PlanOptions{.runtime_overhead_bytes = 0});
  const MemoryBreakdown cpu = *BytesPerGpu(c, WeightDType::kInt8, 2, reserve,
                                           PlanOptions{.runtime_overhead_bytes = 0, .cpu = true});
  EXPECT_EQ(cpu.weights, gpu.weights);
  EXPECT_EQ(cpu.int8_scales, gpu.int8_scales);
  // fp32, and room for what the worker's cache may reserve while 2 sequences of 2048 grow
  // (ShardModel::KvCapacityTokens): twice their positions and a granule (16) each.
  const int64_t gpu_per_position = gpu.kv_cache / (2 * 2048);
  EXPECT_EQ(cpu.kv_cache, 2 * gpu_per_position * 2 * (2 * 2048 + 2 * 16));
  // A worker of --max_batch 32 may round 32 sequences up to a granule.
  const MemoryBreakdown cpu32 =
      *BytesPerGpu(c, WeightDType::kInt8, 2, reserve,
                   PlanOptions{.runtime_overhead_bytes = 0, .max_sequences = 32, .cpu = true});
  EXPECT_EQ(cpu32.kv_cache - cpu.kv_cache, 2 * gpu_per_position * 2 * (30 * 16));
  // 24 layers: q/k/v/out/fc1/fc2 biases (this rank's 1024 + 1024 + 4096 rows, full 2048 x 2)
  // and two LayerNorms; the final LayerNorm; 2 bytes more each.
  const int64_t small = 24 * (3 * 1024 + 2048 + 4096 + 2048 + 4 * 2048) + 2 * 2048;
  EXPECT_EQ(cpu.fp16_tensors - gpu.fp16_tensors, 2 * small);
  // The CPU runtime's buffers (ShardModel::ScratchBytesFor) for a step of 4096 tokens (the
  // default step budget; the reserve is 2 x 2048) and 2 logits rows: h 2048, 1024 attention
  // and 4096 FFN rows of this rank, no projections, vocab 50272 (25136 a rank), head_dim 64.
  const int64_t floats =
      4096 * (2 + 3 * 2048 + 4 * 1024 + 4096) + 64 + 2048 + 2 * (2048 + 50272 + 25136 + 25136 * 2);
  const int64_t int8 = 4096 * (3 * 4096 + 4 + 4 * 4096);
  EXPECT_EQ(cpu.workspace, 4 * floats + int8);
  // A coordinator's workers keep room for its step: here 2336 tokens and 288 logits rows.
  const MemoryBreakdown envelope = *BytesPerGpu(
      c, WeightDType::kInt8, 2, reserve,
      PlanOptions{
          .runtime_overhead_bytes = 0, .max_step_tokens = 2336, .max_step_rows = 288, .cpu = true});
  const int64_t envelope_floats = 2336 * (2 + 3 * 2048 + 4 * 1024 + 4096) + 64 + 2048 +
                                  288 * (2048 + 50272 + 25136 + 25136 * 2);
  EXPECT_EQ(envelope.workspace, 4 * envelope_floats + 2336 * (3 * 4096 + 4 + 4 * 4096));
}

TEST(PlannerBytesTest, ExplicitReserveReplacesKvAndWorkspace) {
  const OptConfig c = Preset("13b");
  const MemoryBreakdown m = *BytesPerGpu(c, WeightDType::kInt8, 2, Reserve::Bytes(3 * kGiB));
  EXPECT_EQ(m.kv_cache, 0);
  EXPECT_EQ(m.workspace, 3 * kGiB);
  EXPECT_EQ(m.runtime, kRuntimeOverheadBytes);
  const MemoryBreakdown none = *BytesPerGpu(c, WeightDType::kInt8, 2, Reserve::Bytes(0),
                                            PlanOptions{.runtime_overhead_bytes = 0});
  EXPECT_EQ(none.Total(), none.weights + none.int8_scales + none.fp16_tensors);
}

TEST(PlannerBytesTest, BiggerReserveNeverNeedsFewerGpus) {
  const OptConfig c = Preset("66b");
  int previous = 0;
  for (int64_t batch : {1, 4, 16, 64}) {
    absl::StatusOr<PlanResult> p =
        Plan(c, WeightDType::kInt8, 80 * kGiB, Reserve::Tokens(batch, 2048));
    ASSERT_TRUE(p.ok()) << p.status();
    EXPECT_GE(p->tp, previous);
    previous = p->tp;
  }
  EXPECT_GT(previous, 1);  // batch 64 x 2048 tokens of KV (151 GiB) must spread out
}

// The activation workspace is one step's, and a step carries at most the scheduler's prefill
// budget (4096 tokens by default), not the whole batch's prompts: past two sequences of 2048,
// more batch adds KV cache and logit rows only. So int8 (whose int32 accumulators are counted
// per step token) never needs more GPUs than fp16, however large the batch.
TEST(PlannerBytesTest, WorkspaceIsOneStepOfTheSchedulersBudget) {
  const OptConfig c = Preset("350m");
  const int64_t per_logit_row = (c.vocab_size + c.vocab_size) * 4;  // TP=1: shard + gathered
  const MemoryBreakdown two = *BytesPerGpu(c, WeightDType::kInt8, 1, Reserve::Tokens(2, 2048));
  const MemoryBreakdown many = *BytesPerGpu(c, WeightDType::kInt8, 1, Reserve::Tokens(300, 2048));
  EXPECT_EQ(many.workspace - two.workspace, 298 * per_logit_row);
  // A coordinator's own step size replaces the default.
  PlanOptions small;
  small.max_step_tokens = 1024;
  const MemoryBreakdown capped =
      *BytesPerGpu(c, WeightDType::kInt8, 1, Reserve::Tokens(2, 2048), small);
  EXPECT_LT(capped.workspace, two.workspace);
  absl::StatusOr<CompareTable> table =
      Compare(c, DefaultCompareGpuSizes(), Reserve::Tokens(300, 2048));
  ASSERT_TRUE(table.ok()) << table.status();
  for (const CompareRow& row : table->rows) {
    if (row.fp16.has_value() && row.int8.has_value()) {
      EXPECT_LE(row.int8->tp, row.fp16->tp) << row.gpu.label;
    }
  }
}

// ---- Errors ------------------------------------------------------------------------------

TEST(PlannerErrorTest, BadInputIsInvalidArgument) {
  const OptConfig c = Preset("125m");
  EXPECT_EQ(Plan(c, WeightDType::kInt8, 0, kOneFullSequence).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Plan(c, WeightDType::kInt8, kGiB, Reserve::Tokens(0, 16)).status().code(),
            absl::StatusCode::kInvalidArgument);
  absl::StatusOr<PlanResult> too_long = Plan(c, WeightDType::kInt8, kGiB, Reserve::Tokens(1, 4096));
  EXPECT_EQ(too_long.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(too_long.status().message(), HasSubstr("2048"));
  EXPECT_EQ(Plan(c, WeightDType::kInt8, kGiB, Reserve::Bytes(-1)).status().code(),
            absl::StatusCode::kInvalidArgument);
  OptConfig broken = c;
  broken.num_attention_heads = 0;
  EXPECT_EQ(Plan(broken, WeightDType::kInt8, kGiB, kOneFullSequence).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(BytesPerGpu(c, WeightDType::kInt8, 0, kOneFullSequence).status().code(),
            absl::StatusCode::kInvalidArgument);
  // Sizes whose byte counts would overflow int64_t (a config.json's, or built in code) are
  // refused before anything is multiplied.
  OptConfig huge = c;
  huge.hidden_size = huge.ffn_dim = int64_t{1} << 40;
  huge.num_attention_heads = 1;
  huge.word_embed_proj_dim = 0;
  const absl::StatusOr<MemoryBreakdown> bytes =
      BytesPerGpu(huge, WeightDType::kF16, 1, Reserve::Bytes(0));
  EXPECT_EQ(bytes.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bytes.status().message(), HasSubstr("2^48"));
  // Sums saturate rather than wrap: a reserve of INT64_MAX bytes does not come out as "fits".
  const absl::StatusOr<MemoryBreakdown> all =
      BytesPerGpu(c, WeightDType::kF16, 1, Reserve::Bytes(std::numeric_limits<int64_t>::max()));
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_EQ(all->Total(), int64_t{1} << 62);
  EXPECT_FALSE(Plan(c, WeightDType::kF16, std::numeric_limits<int64_t>::max() / 2,
                    Reserve::Bytes(std::numeric_limits<int64_t>::max()))
                   .ok());
}

TEST(PlannerErrorTest, NothingFitsIsFailedPrecondition) {
  // Replicated tensors alone (positions, norms, the runtime) exceed 1 GiB for OPT-175B.
  absl::StatusOr<PlanResult> p = Plan(Preset("175b"), WeightDType::kInt8, kGiB, kOneFullSequence);
  ASSERT_EQ(p.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(p.status().message(), HasSubstr("does not fit on 1 GiB GPUs at any TP degree"));
}

// ---- Worker groups (coordinator) ---------------------------------------------------------

// OPT-2.7B on CPU workers (no CUDA runtime overhead), batch 1 x 512 tokens.
class PlanGroupTest : public ::testing::Test {
 protected:
  PlanGroupTest() { cpu_.runtime_overhead_bytes = 0; }
  int64_t Total(WeightDType d, int tp) const {
    return BytesPerGpu(config_, d, tp, reserve_, cpu_)->Total();
  }
  const OptConfig config_ = Preset("2.7b");
  const Reserve reserve_ = Reserve::Tokens(1, 512);
  PlanOptions cpu_;
};

TEST_F(PlanGroupTest, Fp16NeedsFourWhereInt8FitsInTwo) {
  // The premise, derived: with 2 GiB a worker, fp16 does not fit on 2 but does on 4; int8
  // does not fit on 1 but does on 2.
  ASSERT_GT(Total(WeightDType::kF16, 2), 2 * kGiB);
  ASSERT_LE(Total(WeightDType::kF16, 4), 2 * kGiB);
  ASSERT_GT(Total(WeightDType::kInt8, 1), 2 * kGiB);
  ASSERT_LE(Total(WeightDType::kInt8, 2), 2 * kGiB);

  const std::vector<int64_t> two = {2 * kGiB, 2 * kGiB};
  absl::StatusOr<GroupDecision> fp16 = PlanGroup(config_, WeightDType::kF16, two, reserve_, cpu_);
  ASSERT_EQ(fp16.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(fp16.status().message(),
              HasSubstr("fp16 needs 4 workers with 2 GiB, 2 joined; int8 fits in 2"));

  absl::StatusOr<GroupDecision> int8 = PlanGroup(config_, WeightDType::kInt8, two, reserve_, cpu_);
  ASSERT_TRUE(int8.ok()) << int8.status();
  EXPECT_EQ(int8->plan.tp, 2);
  EXPECT_EQ(int8->workers, (std::vector<int>{0, 1}));
  EXPECT_EQ(int8->summary, "int8 fits in 2 of 2 workers (TP=2)");
  EXPECT_EQ(int8->plan.per_gpu.Total(), Total(WeightDType::kInt8, 2));

  const std::vector<int64_t> four(4, 2 * kGiB);
  absl::StatusOr<GroupDecision> fp16_on_four =
      PlanGroup(config_, WeightDType::kF16, four, reserve_, cpu_);
  ASSERT_TRUE(fp16_on_four.ok()) << fp16_on_four.status();
  EXPECT_EQ(fp16_on_four->plan.tp, 4);
  EXPECT_EQ(fp16_on_four->plan.gpu_bytes, 2 * kGiB);

  // One 2 GiB worker: int8 does not fit either, and the message says so for both dtypes.
  const std::vector<int64_t> one = {2 * kGiB};
  EXPECT_THAT(PlanGroup(config_, WeightDType::kF16, one, reserve_, cpu_).status().message(),
              HasSubstr("fp16 needs 4 workers with 2 GiB, 1 joined; int8 needs 2 workers"));
}

TEST_F(PlanGroupTest, PicksTheLargestWorkersAndOnlyAsManyAsNeeded) {
  // int8 needs two 2 GiB workers (above); workers 0 and 2 are too small for any shard.
  const std::vector<int64_t> mixed = {kGiB / 2, 2 * kGiB, kGiB / 2, 5 * kGiB / 2, 2 * kGiB};
  ASSERT_GT(Total(WeightDType::kInt8, 1), 5 * kGiB / 2);  // the 2.5 GiB one cannot go alone
  absl::StatusOr<GroupDecision> g = PlanGroup(config_, WeightDType::kInt8, mixed, reserve_, cpu_);
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(g->plan.tp, 2);
  EXPECT_EQ(g->workers, (std::vector<int>{1, 3}));  // 2.5 GiB, then the first 2 GiB worker
  EXPECT_EQ(g->plan.gpu_bytes, 2 * kGiB);           // sized for the smaller of the two
  EXPECT_EQ(g->summary, "int8 fits in 2 of 5 workers (TP=2)");
}

TEST(PlanGroupErrorTest, BadReportsAreInvalidArgument) {
  const OptConfig c = Preset("125m");
  EXPECT_EQ(PlanGroup(c, WeightDType::kInt8, {}, kOneFullSequence).status().code(),
            absl::StatusCode::kInvalidArgument);
  const std::vector<int64_t> zero = {kGiB, 0};
  EXPECT_EQ(PlanGroup(c, WeightDType::kInt8, zero, kOneFullSequence).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// ---- Units, rendering, command -----------------------------------------------------------

TEST(PlannerUnitsTest, ParseGpuMemory) {
  EXPECT_EQ(*ParseGpuMemory("80GiB"), 80 * kGiB);
  EXPECT_EQ(*ParseGpuMemory("80"), 80 * kGiB) << "a bare number is GiB";
  EXPECT_EQ(*ParseGpuMemory("24GB"), 24 * kGB);
  for (const char* bad : {"", "abc", "-1GiB", "0", "0GiB", "10XB"}) {
    const absl::Status status = ParseGpuMemory(bad).status();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(status.message().find("--gpu-memory"), std::string_view::npos) << status;
  }
}

TEST(PlannerUnitsTest, ParseWeightDType) {
  EXPECT_EQ(*ParseWeightDType("int8"), WeightDType::kInt8);
  EXPECT_EQ(*ParseWeightDType("FP16"), WeightDType::kF16);
  EXPECT_EQ(ParseWeightDType("int4").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(PlanCommandTest, PlansAPresetAsJson) {
  PlanCommand cmd;
  cmd.model = "facebook/opt-175b";
  cmd.dtype = "int8";
  cmd.gpu_memory = "80GiB";
  cmd.context = 2048;
  cmd.json = true;
  absl::StatusOr<std::string> out = RunPlanCommand(cmd);
  ASSERT_TRUE(out.ok()) << out.status();
  const nlohmann::json j = nlohmann::json::parse(*out);
  EXPECT_EQ(j["model"], "opt-175b");
  EXPECT_EQ(j["dtype"], "int8");
  EXPECT_EQ(j["tp"], 3);
  EXPECT_EQ(j["gpu_bytes"], 80 * kGiB);
  EXPECT_EQ(j["per_gpu"]["total"].get<int64_t>() + j["headroom_bytes"].get<int64_t>(), 80 * kGiB);

  cmd.gpus = 2;
  EXPECT_THAT(RunPlanCommand(cmd).status().message(),
              HasSubstr("opt-175b int8 needs 3 x 80 GiB; 2 given"));
}

TEST(PlanCommandTest, PlansAConfigJsonFileAndPrintsText) {
  const std::filesystem::path path =
      std::filesystem::temp_directory_path() /
      ("llmint8_planner_test_" + std::to_string(::getpid()) + ".json");
  {
    std::ofstream f(path);
    f << R"({"model_type": "opt", "_name_or_path": "tiny-opt", "hidden_size": 64,
             "num_hidden_layers": 2, "num_attention_heads": 4, "ffn_dim": 256,
             "vocab_size": 1000, "max_position_embeddings": 128, "torch_dtype": "float16"})";
  }
  PlanCommand cmd;
  cmd.model = path.string();
  cmd.dtype = "fp16";
  cmd.gpu_memory = "2GiB";
  absl::StatusOr<std::string> out = RunPlanCommand(cmd);
  std::filesystem::remove(path);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_THAT(*out, HasSubstr("tiny-opt fp16 on 2 GiB GPUs: TP=1"));
  EXPECT_THAT(*out, HasSubstr("reserve batch 1 x context 128"));
  EXPECT_THAT(*out, HasSubstr("KV cache"));
}

// A decimal size reads back as typed, with its GiB beside it: "24GB" is 22.35 GiB, less than
// the 24 GiB of a card sold as 24 GB, on which OPT-175B int8 needs 12 GPUs, not 8.
TEST(PlanCommandTest, ADecimalGpuSizeShowsItsGiB) {
  PlanCommand cmd;
  cmd.model = "175b";
  cmd.dtype = "int8";
  cmd.gpu_memory = "24GB";
  absl::StatusOr<std::string> out = RunPlanCommand(cmd);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_THAT(*out, HasSubstr("opt-175b int8 on 24 GB (22.35 GiB) GPUs: TP=12"));
  cmd.gpu_memory = "24GiB";
  out = RunPlanCommand(cmd);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_THAT(*out, HasSubstr("opt-175b int8 on 24 GiB GPUs: TP=8"));
}

}  // namespace
}  // namespace llmint8::coordinator
