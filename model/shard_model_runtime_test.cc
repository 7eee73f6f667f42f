// ShardModel at TP = 1 on synthetic weights: the KV-cache path is self-consistent (prefill of n
// tokens == n decode steps; a batch of different-length sequences == each alone), bad input is
// rejected without damaging the state, and memory is accounted and bounded.
#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <random>
#include <vector>

#include "common/status_macros.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/cpu_features.h"
#include "kernels/linear.h"
#include "model/forward_test_util.h"
#include "model/lm_head_test_util.h"
#include "model/shard_backend.h"
#include "model/shard_model.h"
#include "model/synthetic.h"
#include "model/tensor_names.h"

namespace llmint8::model {
namespace {

using testing::ArgMax;
using testing::MaxAbsDiff;
using testing::SmallConfig;

// fp32 math end to end; batching changes only summation order inside the GEMMs, so results
// agree to a few ulps of the logit size (~1); 1e-4 leaves two orders of margin.
constexpr double kF32Tol = 1e-4;

// How far a row may move when the rows computed with it change: not at all where the linear
// layers are batch-invariant (kernels/linear.h; every other op computes a row on its own).
// Else fp32 summation order, and for int8 a quantized value it moves across a rounding
// boundary (the int8 error, derived in the TP test).
double BatchTolerance(Precision p) {
  if (kernels::LinearRowsAreBatchInvariant()) return 0.0;
  return p == Precision::kInt8 ? 2e-2 : kF32Tol;
}

std::unique_ptr<CheckpointSource> Source(const OptConfig& c, SyntheticOptions o = {}) {
  o.bias_std = 0.02f;
  o.layer_norm_noise = 0.1f;
  auto s = MakeSyntheticSource(c, o);
  EXPECT_TRUE(s.ok()) << s.status();
  return std::move(s).value();
}

// With outlier dims in the weights (LayerNorm gains that drive activations past 6 there), so
// that int8's outlier decomposition is at work, per token.
std::unique_ptr<CheckpointSource> OutlierSource(const OptConfig& c) {
  SyntheticOptions so;
  so.outlier_dims = {5, 40};
  so.outlier_gain = 20.0f;
  return Source(c, so);
}

std::unique_ptr<ShardModel> LoadModel(const OptConfig& c, CheckpointSource& src,
                                      ShardOptions o = {}) {
  auto m = ShardModel::Load(c, src, 1, 0, nullptr, o);
  EXPECT_TRUE(m.ok()) << m.status();
  return std::move(m).value();
}

std::vector<int32_t> RandomTokens(int n, int vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> t(n);
  for (int32_t& x : t) x = static_cast<int32_t>(rng() % vocab);
  return t;
}

class ShardModelTest : public ::testing::TestWithParam<Precision> {};

TEST_P(ShardModelTest, PrefillEqualsDecodeStepsAndAllPositionsAgree) {
  const OptConfig c = SmallConfig(64, 4, 2, 300, 64);
  auto src = Source(c);
  ShardOptions o;
  o.precision = GetParam();
  auto a = LoadModel(c, *src, o);
  auto b = LoadModel(c, *src, o);
  const std::vector<int32_t> prompt = RandomTokens(9, 300, 1);

  ShardModel::SequenceInput in{5, prompt};
  auto all = a->Step({&in, 1}, /*all_positions=*/true);
  ASSERT_TRUE(all.ok()) << all.status();
  ASSERT_EQ(all->rows, 9);
  EXPECT_EQ(all->row_begin, (std::vector<int64_t>{0, 9}));
  EXPECT_EQ(a->ContextLength(5), 9);
  for (int i = 0; i < 9; ++i) {
    ShardModel::SequenceInput one{5, std::span<const int32_t>(&prompt[i], 1)};
    auto step = b->Step({&one, 1});
    ASSERT_TRUE(step.ok()) << step.status();
    ASSERT_EQ(step->rows, 1);
    // int8: the same rows are quantized the same way, but a summation-order difference upstream
    // can move a value across a rounding boundary, so allow the int8 error there (derived in
    // the TP test).
    const double tol = BatchTolerance(GetParam());
    EXPECT_LE(MaxAbsDiff(step->row(0), all->row(i)), tol) << "position " << i;
  }
  EXPECT_EQ(b->ContextLength(5), 9);
}

// With outlier dims in the weights, so that int8's outlier decomposition is at work: a token's
// quantization is its own (per-token outliers), so batching does not change int8 results.
TEST_P(ShardModelTest, BatchOfDifferentLengthsEqualsEachAlone) {
  const OptConfig c = SmallConfig(64, 4, 2, 300, 64);
  auto src = OutlierSource(c);
  ShardOptions o;
  o.precision = GetParam();
  const std::vector<std::vector<int32_t>> prompts = {
      RandomTokens(7, 300, 2), RandomTokens(1, 300, 3), RandomTokens(12, 300, 4)};
  auto batched = LoadModel(c, *src, o);
  auto together = testing::Greedy(*batched, prompts, 6);
  ASSERT_TRUE(together.ok()) << together.status();
  for (size_t i = 0; i < prompts.size(); ++i) {
    auto alone_model = LoadModel(c, *src, o);
    auto alone = testing::Greedy(*alone_model, {prompts[i]}, 6, 1 + i);
    ASSERT_TRUE(alone.ok()) << alone.status();
    EXPECT_EQ(alone->tokens[0], together->tokens[i]) << "sequence " << i;
    for (int s = 0; s < 6; ++s) {
      std::span<const float> row(together->logits[s].data() + i * c.vocab_size, c.vocab_size);
      EXPECT_LE(MaxAbsDiff(row, alone->logits[s]), BatchTolerance(GetParam()))
          << "sequence " << i << " step " << s;
    }
  }
}

// all_positions over a mixed batch (what a worker runs when sequences score their prompts):
// a decode token, a later prompt chunk and a whole prompt; the step asks for every position
// of all of them, or sequences ask for their own. Each sequence gets its rows in batch order
// (row_begin): every new position's when asked, else its last; each row equal to the same
// sequence's row run alone.
TEST_P(ShardModelTest, AllPositionsOfAMixedBatchEqualEachAlone) {
  const OptConfig c = SmallConfig(64, 4, 2, 300, 64);
  auto src = OutlierSource(c);
  ShardOptions o;
  o.precision = GetParam();
  const std::vector<int32_t> a = RandomTokens(6, 300, 7), b = RandomTokens(11, 300, 8),
                             cc = RandomTokens(5, 300, 9);
  // Histories: a holds 5 tokens and decodes its 6th; b holds 4 and appends 7; c is new.
  const std::vector<std::pair<const std::vector<int32_t>*, int>> alone = {
      {&a, 5}, {&b, 4}, {&cc, 0}};
  const double tol = BatchTolerance(GetParam());
  std::vector<std::unique_ptr<Logits>> want;  // every position of each sequence, run alone
  for (const auto& [tokens, held] : alone) {
    auto solo = LoadModel(c, *src, o);
    ShardModel::SequenceInput whole{9, *tokens};
    auto rows = solo->Step({&whole, 1}, /*all_positions=*/true);
    ASSERT_TRUE(rows.ok()) << rows.status();
    want.push_back(std::make_unique<Logits>(*std::move(rows)));
  }
  struct Case {
    bool step_wide;
    std::vector<bool> asks;  // per sequence
    std::vector<int64_t> row_begin;
  };
  const Case cases[] = {{true, {false, false, false}, {0, 1, 8, 13}},
                        {false, {false, true, false}, {0, 1, 8, 9}},
                        {false, {true, false, true}, {0, 1, 2, 7}},
                        {false, {false, false, false}, {0, 1, 2, 3}}};
  for (const Case& k : cases) {
    auto mixed = LoadModel(c, *src, o);
    const std::vector<ShardModel::SequenceInput> history = {
        {1, std::span<const int32_t>(a.data(), 5)}, {2, std::span<const int32_t>(b.data(), 4)}};
    ASSERT_TRUE(mixed->Step(history).ok());
    const std::vector<ShardModel::SequenceInput> batch = {
        {1, std::span<const int32_t>(a.data() + 5, 1), k.asks[0]},
        {2, std::span<const int32_t>(b.data() + 4, 7), k.asks[1]},
        {3, cc, k.asks[2]}};
    auto got = mixed->Step(batch, k.step_wide);
    ASSERT_TRUE(got.ok()) << got.status();
    ASSERT_EQ(got->row_begin, k.row_begin);
    ASSERT_EQ(got->rows, k.row_begin.back());
    for (size_t i = 0; i < alone.size(); ++i) {
      const int new_tokens = static_cast<int>(batch[i].tokens.size());
      const int64_t first = got->row_begin[i], count = got->row_begin[i + 1] - first;
      for (int64_t r = 0; r < count; ++r) {
        // The last `count` new positions of the sequence.
        const int64_t position = alone[i].second + new_tokens - count + r;
        EXPECT_LE(MaxAbsDiff(got->row(first + r), want[i]->row(position)), tol)
            << "step-wide " << k.step_wide << " sequence " << i << " position " << position;
      }
    }
  }
}

// Chunked prefill (the scheduler's --prefill_chunk): a prompt appended in pieces, each step
// next to another sequence's decode token, ends with the logits of the whole prompt at once.
TEST_P(ShardModelTest, ChunkedPrefillEqualsWholePrefill) {
  const OptConfig c = SmallConfig(64, 4, 2, 300, 64);
  auto src = OutlierSource(c);
  ShardOptions o;
  o.precision = GetParam();
  const std::vector<int32_t> prompt = RandomTokens(13, 300, 5);
  const std::vector<int32_t> other = RandomTokens(4, 300, 6);
  auto whole = LoadModel(c, *src, o);
  ShardModel::SequenceInput in{1, prompt};
  auto expected = whole->Step({&in, 1});
  ASSERT_TRUE(expected.ok()) << expected.status();

  auto chunked = LoadModel(c, *src, o);
  auto last = testing::ChunkedPrefill(*chunked, prompt, 5, other);
  ASSERT_TRUE(last.ok()) << last.status();
  EXPECT_EQ(chunked->ContextLength(1), 13);
  EXPECT_EQ(chunked->ContextLength(2), 4 + 3);
  // As in the test above: int8 may round a quantized value differently after a summation-order
  // difference upstream.
  const double tol = BatchTolerance(GetParam());
  EXPECT_LE(MaxAbsDiff(last->row(0), expected->row(0)), tol);
}

// A sequence started from another's cached prefix (SequenceInput::prefix_from) equals one
// that prefilled the same tokens itself: its first logits and, after the source is gone, its
// next ones (the prefix is a copy), and the source's own decode step in the same batch is
// unchanged. Prefixes of 20 and 7 positions of a 21-token source (the cache grows in granules
// of 16); after the release a new 40-token prompt beside the decode.
TEST_P(ShardModelTest, SequenceFromAPrefixEqualsItsOwnPrefill) {
  const OptConfig c = SmallConfig(64, 4, 2, 300, 64);
  auto src = OutlierSource(c);
  ShardOptions o;
  o.precision = GetParam();
  const std::vector<int32_t> prompt = RandomTokens(21, 300, 7);
  const std::vector<int32_t> tail = RandomTokens(3, 300, 8);
  const std::vector<int32_t> fresh = RandomTokens(40, 300, 9);
  auto shared = LoadModel(c, *src, o);
  auto own = LoadModel(c, *src, o);
  auto got = testing::PrefixSteps(*shared, *own, prompt, tail, /*short_prefix=*/7, fresh);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(shared->ContextLength(2), 22);
  EXPECT_EQ(shared->ContextLength(3), 10);
  // As in the tests above: int8 may round a quantized value differently after a
  // summation-order difference upstream.
  const double tol = BatchTolerance(GetParam());
  for (int64_t row = 0; row < 3; ++row) {
    EXPECT_LE(MaxAbsDiff(got->shared.row(row), got->own.row(row)), tol) << "sequence " << row + 1;
  }
  for (int64_t row = 0; row < 2; ++row) {
    EXPECT_LE(MaxAbsDiff(got->shared_after.row(row), got->own_after.row(row)), tol)
        << "after the release, row " << row;
  }
  EXPECT_EQ(ArgMax(got->shared_after.row(0)), ArgMax(got->own_after.row(0)));
}

// Speculative decoding: a step appends a token and draft tokens, the next one drops the
// drafts that were not accepted and appends after them. The cache and the logits are then
// those of the same tokens stepped one at a time, and the accepted draft's logits row is the
// decode step's.
TEST_P(ShardModelTest, DroppedDraftPositionsLeaveNoTrace) {
  const OptConfig c = SmallConfig(64, 4, 2, 300, 64);
  auto src = OutlierSource(c);
  ShardOptions o;
  o.precision = GetParam();
  auto spec = LoadModel(c, *src, o);
  auto plain = LoadModel(c, *src, o);
  const std::vector<int32_t> prompt = RandomTokens(11, 300, 21);
  const std::vector<int32_t> drafted = {17, 42, 99, 5};  // a token, then three drafts
  const std::vector<int32_t> first = {17}, accepted = {42}, next = {250};
  for (ShardModel* m : {spec.get(), plain.get()}) {
    ShardModel::SequenceInput in{1, prompt};
    ASSERT_TRUE(m->Step({&in, 1}).ok());
  }
  ShardModel::SequenceInput verify{1, drafted, /*all_positions=*/true};
  auto rows = spec->Step({&verify, 1});
  ASSERT_TRUE(rows.ok()) << rows.status();
  ASSERT_EQ(rows->rows, 4);
  EXPECT_EQ(spec->ContextLength(1), 15);
  ShardModel::SequenceInput one{1, first}, two{1, accepted};
  auto after_first = plain->Step({&one, 1});
  auto after_accepted = plain->Step({&two, 1});
  ASSERT_TRUE(after_first.ok() && after_accepted.ok());
  const double tol = BatchTolerance(GetParam());
  EXPECT_LE(MaxAbsDiff(rows->row(0), after_first->row(0)), tol);
  EXPECT_LE(MaxAbsDiff(rows->row(1), after_accepted->row(0)), tol);

  // Two drafts were not accepted: dropped before the next token goes in.
  ShardModel::SequenceInput over{1, next, false, 0, 0, /*drop=*/16};
  ShardModel::SequenceInput negative{1, next, false, 0, 0, /*drop=*/-1};
  EXPECT_EQ(spec->Step({&over, 1}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(spec->Step({&negative, 1}).status().code(), absl::StatusCode::kInvalidArgument);
  // A sequence started from a prefix is new: nothing to drop.
  ShardModel::SequenceInput with_prefix{2, next, false, 1, 3, /*drop=*/1};
  EXPECT_EQ(spec->Step({&with_prefix, 1}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(spec->ContextLength(1), 15);  // the refused steps changed nothing
  ShardModel::SequenceInput dropped{1, next, false, 0, 0, /*drop=*/2};
  ShardModel::SequenceInput stepped{1, next};
  auto a = spec->Step({&dropped, 1});
  auto b = plain->Step({&stepped, 1});
  ASSERT_TRUE(a.ok() && b.ok()) << a.status() << b.status();
  EXPECT_EQ(spec->ContextLength(1), 14);
  EXPECT_EQ(plain->ContextLength(1), 14);
  EXPECT_LE(MaxAbsDiff(a->row(0), b->row(0)), tol);
  if (tol == 0.0) {
    EXPECT_EQ(a->values, b->values);
  }
}

// Every op of a prefill and a decode step returns with clean upper halves of the vector
// registers (kernels/cpu_features.h), so the worker's sampling (glibc's exp per logit) that runs
// on this thread next pays no AVX-SSE transition penalty.
TEST_P(ShardModelTest, StepsLeaveTheUpperHalvesOfTheVectorRegistersClean) {
  if (!kernels::VectorUpperHalvesInUse().has_value())
    GTEST_SKIP() << "the vector state is not readable here (no XGETBV(1), or ASan)";
  const OptConfig c = SmallConfig(64, 4, 2, 300, 64);
  auto src = OutlierSource(c);
  ShardOptions o;
  o.precision = GetParam();
  auto model = LoadModel(c, *src, o);
  const std::vector<int32_t> prompt = RandomTokens(40, 300, 9);
  ShardModel::SequenceInput in{1, prompt};
  ASSERT_TRUE(model->Step({&in, 1}, /*all_positions=*/true).ok());
  EXPECT_EQ(kernels::VectorUpperHalvesInUse(), false) << "after a prefill";
  ShardModel::SequenceInput next{1, std::span<const int32_t>(prompt).first(1)};
  ASSERT_TRUE(model->Step({&next, 1}).ok());
  EXPECT_EQ(kernels::VectorUpperHalvesInUse(), false) << "after a decode step";
}

INSTANTIATE_TEST_SUITE_P(Precisions, ShardModelTest,
                         ::testing::Values(Precision::kF32, Precision::kF16, Precision::kInt8),
                         [](const auto& info) { return std::string(PrecisionName(info.param)); });

// The comparisons every logits test (CPU, CUDA, TP) makes: a NaN is no match for anything.
TEST(ForwardTestUtilTest, ANanOrInfiniteDifferenceFailsEveryBound) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  const std::vector<float> row = {1, 2, 3};
  EXPECT_EQ(MaxAbsDiff(row, std::vector<float>{1, 2.5f, 3}), 0.5);
  EXPECT_TRUE(std::isnan(MaxAbsDiff(row, std::vector<float>{1, nan, 3})));
  EXPECT_TRUE(std::isnan(MaxAbsDiff(std::vector<float>{nan, 9}, std::vector<float>{nan, 0})));
  EXPECT_TRUE(std::isnan(MaxAbsDiff(std::vector<float>{inf}, std::vector<float>{inf})));
  EXPECT_EQ(MaxAbsDiff(row, std::vector<float>{1, 2}), INFINITY);
  EXPECT_TRUE(std::isnan(testing::WorseDiff(0.5, nan)));
  EXPECT_TRUE(std::isnan(testing::WorseDiff(nan, 0.5)));
  EXPECT_EQ(testing::WorseDiff(0.5, 0.25), 0.5);
}

TEST(ShardModelErrorsTest, BadInputIsRejectedAndStateStaysUsable) {
  const OptConfig c = SmallConfig(64, 4, 1, 100, 16);
  auto src = Source(c);
  ShardOptions o;
  o.precision = Precision::kF32;
  auto m = LoadModel(c, *src, o);
  auto fresh = LoadModel(c, *src, o);
  const std::vector<int32_t> p = {2, 5, 7};
  ShardModel::SequenceInput good{1, p};
  ASSERT_TRUE(m->Step({&good, 1}).ok());
  ASSERT_TRUE(fresh->Step({&good, 1}).ok());

  const std::vector<int32_t> bad_token = {3, 100};
  const std::vector<int32_t> negative = {-1};
  const std::vector<int32_t> empty;
  const std::vector<int32_t> too_long(14, 4);  // 3 cached + 14 > 16
  const std::vector<int32_t> one = {4};
  std::vector<ShardModel::SequenceInput> dup = {{1, one}, {1, one}};
  std::vector<ShardModel::SequenceInput> bad_in_batch = {{2, one}, {3, bad_token}};
  ShardModel::SequenceInput neg{1, negative}, emp{1, empty}, overflow{1, too_long};
  EXPECT_EQ(m->Step({}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(m->Step(dup).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(m->Step(bad_in_batch).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(m->Step({&neg, 1}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(m->Step({&emp, 1}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(m->Step({&overflow, 1}).status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(m->Release(42).code(), absl::StatusCode::kNotFound);
  // Prefixes: for a sequence that exists, from an unknown one, from itself, longer than the
  // source, negative, or over the context.
  ShardModel::SequenceInput existing{1, one, false, 1, 2}, unknown{5, one, false, 9, 2},
      itself{5, one, false, 5, 2}, longer{5, one, false, 1, 4},
      negative_prefix{5, one, false, 1, -1}, past_context{5, too_long, false, 1, 3},
      at_context{6, too_long, false, 1, 2};
  for (const ShardModel::SequenceInput& bad :
       {existing, unknown, itself, longer, negative_prefix}) {
    EXPECT_EQ(m->Step({&bad, 1}).status().code(), absl::StatusCode::kInvalidArgument)
        << bad.seq_id << " from " << bad.prefix_from << ", " << bad.prefix_length;
  }
  EXPECT_EQ(m->Step({&past_context, 1}).status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(m->num_sequences(), 1);  // sequence 2 of the rejected batch was never created
  ASSERT_TRUE(m->Step({&at_context, 1}).ok());  // 2 + 14 <= 16
  ASSERT_TRUE(m->Release(6).ok());
  EXPECT_EQ(m->ContextLength(1), 3);

  ShardModel::SequenceInput next{1, one};
  auto x = m->Step({&next, 1});
  auto y = fresh->Step({&next, 1});
  ASSERT_TRUE(x.ok() && y.ok());
  EXPECT_EQ(x->values, y->values);
  // Exactly at the limit is fine: 4 cached + 12 = 16.
  const std::vector<int32_t> fill(12, 9);
  ShardModel::SequenceInput last{1, fill};
  EXPECT_TRUE(m->Step({&last, 1}).ok());
  EXPECT_TRUE(m->Release(1).ok());
  EXPECT_EQ(m->memory().kv_cache, 0);
}

TEST(ShardModelMemoryTest, AccountsBytesAndEnforcesTheLimit) {
  const OptConfig c = SmallConfig(128, 4, 2, 512, 128);
  auto src = Source(c);
  ShardOptions f16;
  f16.precision = Precision::kF16;
  ShardOptions i8 = f16;
  i8.precision = Precision::kInt8;
  auto a = LoadModel(c, *src, f16);
  auto b = LoadModel(c, *src, i8);
  const int64_t linear_params = c.num_hidden_layers * (4 * 128 * 128 + 2 * 128 * 512);
  const int64_t tables = (512 + 130) * 128;  // embed_tokens + positions, fp16 in both
  EXPECT_EQ(a->memory().fp16_weights, 2 * (linear_params + tables));
  EXPECT_EQ(b->memory().int8_weights, linear_params);
  EXPECT_EQ(b->memory().fp16_weights, 2 * tables);
  EXPECT_EQ(b->memory().scales, c.num_hidden_layers * (3 * 128 + 128 + 512 + 128) * 4);

  // A limit below the weights fails at load with the numbers.
  ShardOptions tight = i8;
  tight.memory_limit_bytes = b->memory().total() / 2;
  auto failed = ShardModel::Load(c, *src, 1, 0, nullptr, tight);
  ASSERT_EQ(failed.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(failed.status().message().find("memory_limit_bytes"), std::string::npos);

  // A limit that fits the weights but not a long context: Step fails, the model stays usable.
  ShardOptions room = i8;
  const int64_t kv_per_pos = c.num_hidden_layers * 2 * c.hidden_size * 4;
  room.memory_limit_bytes = b->memory().total() + 64 * kv_per_pos + 200 * 1024;
  auto m = ShardModel::Load(c, *src, 1, 0, nullptr, room);
  ASSERT_TRUE(m.ok()) << m.status();
  const std::vector<int32_t> longp(100, 7), shortp(5, 7);
  ShardModel::SequenceInput big{1, longp}, small{2, shortp};
  auto r = (*m)->Step({&big, 1});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted) << r.status();
  EXPECT_EQ((*m)->num_sequences(), 0);
  EXPECT_TRUE((*m)->Step({&small, 1}).ok());
  EXPECT_LE((*m)->memory().total(), room.memory_limit_bytes);
  EXPECT_GT((*m)->memory().kv_cache, 0);
}

// transformers' _remove_final_layer_norm: a pre-LN model without the final LayerNorm. Its
// checkpoint has no final_layer_norm tensors, and none is held or applied.
TEST(ShardModelConfigTest, RemovedFinalLayerNormIsNeitherLoadedNorApplied) {
  OptConfig with = SmallConfig(128, 4, 2, 512, 128);
  ASSERT_TRUE(with.do_layer_norm_before);
  OptConfig without = with;
  without.remove_final_layer_norm = true;
  auto with_src = Source(with);
  auto without_src = Source(without);
  EXPECT_FALSE(without_src->Has("model.decoder.final_layer_norm.weight"));
  auto a = LoadModel(with, *with_src);
  auto b = ShardModel::Load(without, *without_src, 1, 0, nullptr, ShardOptions{});
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(a->memory().fp32_weights - (*b)->memory().fp32_weights, 2 * 128 * 4);
  // The same layers (the synthetic weights are per tensor name), a different head input.
  const std::vector<int32_t> prompt = {3, 9, 27};
  ShardModel::SequenceInput seq{1, prompt};
  auto la = a->Step({&seq, 1});
  auto lb = (*b)->Step({&seq, 1});
  ASSERT_TRUE(la.ok() && lb.ok());
  EXPECT_GT(MaxAbsDiff(la->row(0), lb->row(0)), 1e-3);
}

// Scratch grows to what a step needs, no more: a step of 23 tokens and then one of 24 hold what
// one step of 24 holds (a vector's resize may double its capacity, past what the accounting
// and the coordinator's budget count). In int8 too, whose linears hold scratch of their own
// (quantized activations, int32 accumulators, outlier buffers).
TEST(ShardModelMemoryTest, ScratchHoldsWhatTheLargestStepNeeds) {
  const OptConfig c = SmallConfig(128, 4, 2, 512, 128);
  auto src = OutlierSource(c);
  for (const Precision precision : {Precision::kF16, Precision::kInt8}) {
    SCOPED_TRACE(static_cast<int>(precision));
    ShardOptions o;
    o.precision = precision;
    auto grown = LoadModel(c, *src, o);
    auto once = LoadModel(c, *src, o);
    const std::vector<int32_t> p23(23, 7), p24(24, 7);
    ShardModel::SequenceInput a{1, p23}, b{2, p24}, c24{1, p24};
    ASSERT_TRUE(grown->Step({&a, 1}).ok());
    ASSERT_TRUE(grown->Step({&b, 1}).ok());
    ASSERT_TRUE(once->Step({&c24, 1}).ok());
    EXPECT_EQ(grown->memory().scratch, once->memory().scratch);
  }
}

// The step's result (the logits, a full vocabulary per row) counts in the shard's memory at
// the most rows a step returned: otherwise a limit checked against memory() would leave it
// out. At TP 1 nothing else in the scratch depends on the vocabulary.
TEST(ShardModelMemoryTest, TheStepsResultCountsInItsScratch) {
  constexpr int64_t kSmallVocab = 512, kLargeVocab = 2048, kRows = 20;
  int64_t scratch[2];
  for (const int64_t vocab : {kSmallVocab, kLargeVocab}) {
    const OptConfig c = SmallConfig(128, 4, 2, vocab, 128);
    auto src = Source(c);
    auto m = LoadModel(c, *src);
    const std::vector<int32_t> prompt(kRows, 7);
    ShardModel::SequenceInput seq{1, prompt};
    absl::StatusOr<Logits> logits = m->Step({&seq, 1}, /*all_positions=*/true);
    ASSERT_TRUE(logits.ok()) << logits.status();
    ASSERT_EQ(logits->rows, kRows);
    scratch[vocab == kLargeVocab] = m->memory().scratch;
  }
  EXPECT_EQ(scratch[1] - scratch[0], kRows * (kLargeVocab - kSmallVocab) * 4);
}

// A shard whose holdings went past its limit (the outlier buffers, which the accounting does
// not budget: a very low threshold makes nearly every column one) still runs the steps that
// need no more memory, and refuses those that do; it is not stuck until reloaded.
TEST(ShardModelMemoryTest, PastItsLimitAShardStillRunsStepsThatGrowNothing) {
  const OptConfig c = SmallConfig(128, 4, 2, 512, 128);
  auto src = OutlierSource(c);
  ShardOptions o;
  o.precision = Precision::kInt8;
  o.threshold = 0.02f;
  auto probe = LoadModel(c, *src, o);
  const std::vector<int32_t> prompt(40, 7), next(1, 9);
  ShardModel::SequenceInput prefill{1, prompt};
  // The least limit the 40-token prefill is let through under: its outlier buffers (nearly
  // every column) then take the shard past it.
  int64_t low = probe->memory().total(), high = low + 16 * 1024 * 1024;
  while (high - low > 1) {
    o.memory_limit_bytes = (low + high) / 2;
    auto trial = ShardModel::Load(c, *src, 1, 0, nullptr, o);  // refused: too low as well
    (trial.ok() && (*trial)->Step({&prefill, 1}).ok() ? high : low) = o.memory_limit_bytes;
  }
  o.memory_limit_bytes = high;
  auto m = LoadModel(c, *src, o);
  ASSERT_TRUE(m->Step({&prefill, 1}).ok());
  ASSERT_GT(m->memory().total(), o.memory_limit_bytes) << "the test needs the shard past it";
  ShardModel::SequenceInput decode{1, next};
  auto decoded = m->Step({&decode, 1});  // within the sequence's reserved capacity
  EXPECT_TRUE(decoded.ok()) << decoded.status();
  const std::vector<int32_t> long_prompt(100, 7);
  ShardModel::SequenceInput more{2, long_prompt};
  EXPECT_EQ(m->Step({&more, 1}).status().code(), absl::StatusCode::kResourceExhausted);
}

// The KV capacity a worker reports (what the coordinator admits up to) is safe: sequences
// whose full lengths sum to it, stepped in chunks of at most the step size it was computed
// for, never hit the limit; and it is not far below what fits.
TEST(ShardModelMemoryTest, KvCapacityIsSafeToFill) {
  const OptConfig c = SmallConfig(128, 4, 2, 512, 128);
  auto src = Source(c);
  ShardOptions o;
  o.precision = Precision::kInt8;
  auto probe = LoadModel(c, *src, o);
  const int64_t weights = probe->memory().total() - probe->memory().scratch;
  const int64_t kv_per_pos = c.num_hidden_layers * 2 * c.hidden_size * 4;
  constexpr int64_t kStep = 24, kRows = 4;
  o.memory_limit_bytes = weights + 300 * kv_per_pos + 512 * 1024;
  auto m = LoadModel(c, *src, o);
  const int64_t cap = m->KvCapacityTokens(o.memory_limit_bytes, kStep, kRows, kRows);
  // Half the positions that fit beyond the weights and a step's activations (growth slack).
  EXPECT_GT(cap, 100);
  EXPECT_LE(cap, (300 * kv_per_pos + 512 * 1024) / (2 * kv_per_pos));
  EXPECT_EQ(m->KvCapacityTokens(weights / 2, kStep, kRows, kRows), 0);

  // kRows sequences sharing `cap` positions, grown kStep tokens a step at most.
  const int64_t each = cap / kRows;
  std::vector<std::vector<int32_t>> tokens(kRows, std::vector<int32_t>(each, 7));
  for (int64_t done = 0; done < each; done += kStep / kRows) {
    std::vector<ShardModel::SequenceInput> batch;
    const int64_t n = std::min<int64_t>(kStep / kRows, each - done);
    for (int s = 0; s < kRows; ++s) {
      batch.push_back(
          {static_cast<uint64_t>(s + 1), std::span<const int32_t>(tokens[s]).subspan(done, n)});
    }
    auto r = m->Step(batch);
    ASSERT_TRUE(r.ok()) << "at " << done << " of " << each << ": " << r.status();
  }
  EXPECT_LE(m->memory().total(), o.memory_limit_bytes);
}

// The LM head is the token embedding: a checkpoint's lm_head.weight that differs from it (an
// untied fine-tune, whose logits transformers computes with lm_head.weight) is refused rather
// than served with the embedding's logits; a copy loads.
TEST(ShardModelLoadTest, AnLmHeadThatIsNotTheEmbeddingIsRefused) {
  const OptConfig c = testing::SmallConfig();
  const std::unique_ptr<CheckpointSource> base = Source(c);
  testing::WithLmHead copy(*base, 1.0f);
  EXPECT_TRUE(ShardModel::Load(c, copy, 1, 0, nullptr, {}).ok());
  testing::WithLmHead scaled(*base, 0.5f);
  absl::StatusOr<std::unique_ptr<ShardModel>> m = ShardModel::Load(c, scaled, 1, 0, nullptr, {});
  ASSERT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument) << m.status();
  EXPECT_THAT(std::string(m.status().message()), ::testing::HasSubstr("lm_head.weight differs"));
}

// A step's error past its validation: memory refused alone stays a refusal; everything the
// worker would take for the request's fault (and so keep a group whose peers wait in a
// collective for this rank) becomes Internal, which breaks the group at once.
TEST(ForwardErrorTest, OnlyAMemoryRefusalOfOneRankStaysTheRequests) {
  EXPECT_TRUE(ForwardError(absl::OkStatus(), 0, 2).ok());
  EXPECT_EQ(ForwardError(absl::ResourceExhaustedError("m"), 0, 1).code(),
            absl::StatusCode::kResourceExhausted);
  for (const absl::Status& st :
       {absl::ResourceExhaustedError("m"), absl::InvalidArgumentError("AllGather output holds 3"),
        absl::OutOfRangeError("r")}) {
    const absl::Status mapped = ForwardError(st, 1, 2);
    EXPECT_EQ(mapped.code(), absl::StatusCode::kInternal) << st;
    EXPECT_NE(mapped.message().find("rank 1"), std::string::npos) << mapped;
    EXPECT_NE(mapped.message().find(st.message()), std::string::npos) << mapped;
  }
  EXPECT_EQ(ForwardError(absl::InvalidArgumentError("k"), 0, 1).code(),
            absl::StatusCode::kInternal);
  EXPECT_EQ(ForwardError(absl::UnavailableError("peer gone"), 0, 2).code(),
            absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace llmint8::model
