#include "kernels/embedding.h"

#include <vector>

#include "gtest/gtest.h"

namespace llmint8::kernels {
namespace {

TEST(EmbeddingTest, VocabSliceGivesZerosOutsideAndSumsToFullLookup) {
  const int64_t vocab = 10, dim = 3;
  std::vector<float> table(vocab * dim);
  for (size_t i = 0; i < table.size(); ++i) table[i] = 0.25f * static_cast<float>(i) - 2.0f;
  const std::vector<int32_t> ids = {0, 9, 4, 5, 4};
  std::vector<float> sum(ids.size() * dim, 0.0f), part(ids.size() * dim);
  // Three slices of 4, 4, 2 rows, as vocab-parallel TP=3 with padding.
  for (int64_t begin : {0, 4, 8}) {
    const int64_t rows = std::min<int64_t>(4, vocab - begin);
    std::span<const float> slice(table.data() + begin * dim, rows * dim);
    ASSERT_TRUE(EmbeddingLookup(ids, slice, begin, rows, dim, part).ok());
    for (size_t i = 0; i < ids.size(); ++i) {
      const bool mine = ids[i] >= begin && ids[i] < begin + rows;
      for (int64_t j = 0; j < dim; ++j) {
        EXPECT_EQ(part[i * dim + j], mine ? table[ids[i] * dim + j] : 0.0f);
      }
    }
    for (size_t i = 0; i < sum.size(); ++i) sum[i] += part[i];
  }
  for (size_t i = 0; i < ids.size(); ++i) {
    for (int64_t j = 0; j < dim; ++j) EXPECT_EQ(sum[i * dim + j], table[ids[i] * dim + j]);
  }
}

TEST(EmbeddingTest, HalfTableAndAccumulate) {
  std::vector<Half> table = {FloatToHalf(1.0f), FloatToHalf(-0.5f), FloatToHalf(0.1f),
                             FloatToHalf(2.0f)};
  const std::vector<int32_t> ids = {1, 0};
  std::vector<float> out = {10.0f, 10.0f, 10.0f, 10.0f};
  ASSERT_TRUE(EmbeddingAccumulate(ids, std::span<const Half>(table), 0, 2, 2, out).ok());
  EXPECT_EQ(out, (std::vector<float>{10.0f + HalfToFloat(FloatToHalf(0.1f)), 12.0f, 11.0f,
                                     9.5f}));
  ASSERT_TRUE(EmbeddingLookup(ids, std::span<const Half>(table), 0, 2, 2, out).ok());
  EXPECT_EQ(out[2], 1.0f);
}

// The table held transposed ([dim, rows], the CPU LM head's layout) gives the same rows, in a
// vocabulary slice too, fp32 and fp16.
TEST(EmbeddingTest, TransposedTableGivesTheSameRows) {
  const int64_t rows = 5, dim = 3, row_begin = 4;
  std::vector<float> table(rows * dim), table_t(rows * dim);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t j = 0; j < dim; ++j) {
      table[r * dim + j] = 0.5f * static_cast<float>(r * dim + j) - 3.0f;
      table_t[j * rows + r] = table[r * dim + j];
    }
  }
  std::vector<Half> table_h(table.size()), table_t_h(table.size());
  for (size_t i = 0; i < table.size(); ++i) {
    table_h[i] = FloatToHalf(table[i]);
    table_t_h[i] = FloatToHalf(table_t[i]);
  }
  const std::vector<int32_t> ids = {8, 2, 4, 9, 8};  // 2 and 9 are outside rows [4, 9)
  std::vector<float> want(ids.size() * dim), got(ids.size() * dim, 7.0f);
  ASSERT_TRUE(EmbeddingLookup(ids, table, row_begin, rows, dim, want).ok());
  ASSERT_TRUE(EmbeddingLookupTransposed(ids, table_t, row_begin, rows, dim, got).ok());
  EXPECT_EQ(got, want);
  std::fill(got.begin(), got.end(), 7.0f);
  ASSERT_TRUE(
      EmbeddingLookupTransposed(ids, std::span<const Half>(table_t_h), row_begin, rows, dim, got)
          .ok());
  ASSERT_TRUE(
      EmbeddingLookup(ids, std::span<const Half>(table_h), row_begin, rows, dim, want).ok());
  EXPECT_EQ(got, want);
  EXPECT_EQ(got[0 * dim + 2], table[4 * dim + 2]);  // id 8 is row 4 of the slice
  EXPECT_EQ(got[1 * dim + 0], 0.0f);
}

TEST(EmbeddingTest, Errors) {
  std::vector<float> table(6), out(6), small(4);
  const std::vector<int32_t> neg = {-1, 0};
  EXPECT_EQ(EmbeddingLookup(neg, table, 0, 2, 3, out).code(), absl::StatusCode::kInvalidArgument);
  const std::vector<int32_t> ids = {0, 1};
  EXPECT_EQ(EmbeddingLookup(ids, table, 0, 2, 3, small).code(),
            absl::StatusCode::kInvalidArgument);  // out too small
}

}  // namespace
}  // namespace llmint8::kernels
