// EmbeddingLookupCuda / EmbeddingAccumulateCuda / AddPositionEmbeddingCuda against the CPU
// reference (kernels/embedding.h). A lookup copies fp16 values, and an accumulation is one fp32
// add of two fp16 values rounded once on both sides, so every result is bit-identical.
#include "kernels/cuda/embedding_cuda.h"

#include <cstdint>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cuda/cuda_test_util.h"
#include "kernels/cuda/device.h"
#include "kernels/embedding.h"
#include "kernels/int8_test_util.h"

namespace llmint8::kernels {
namespace {

using gpu::DeviceBuffer;
using gpu::Stream;
using gpu::testing::Download;
using gpu::testing::Upload;
using testing::RandomNormal;
using testing::ToFloat;
using testing::ToHalf;

class EmbeddingCudaTest : public ::testing::TestWithParam<int64_t> {
 protected:
  void SetUp() override { LLMINT8_SKIP_WITHOUT_CUDA_DEVICE(); }
};

void ExpectBits(const std::vector<Half>& got, const std::vector<float>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    ASSERT_EQ(got[i].bits, FloatToHalf(want[i]).bits) << "element " << i;
  }
}

// A rank holding vocab rows [100, 137): ids below, inside (both ends) and above the slice.
TEST_P(EmbeddingCudaTest, VocabSliceLookupAndAccumulate) {
  const int64_t dim = GetParam();
  const int64_t row_begin = 100, rows = 37;
  const std::vector<int32_t> ids = {100, 136, 5, 137, 120, 0, 50271, 101, 100};
  const int64_t m = static_cast<int64_t>(ids.size());
  const std::vector<Half> table = ToHalf(RandomNormal(rows * dim, 41, 0.02f));
  const std::vector<Half> prior = ToHalf(RandomNormal(m * dim, 42, 1.0f));

  std::vector<float> want_lookup(m * dim);
  ASSERT_TRUE(EmbeddingLookup(ids, table, row_begin, rows, dim, want_lookup).ok());
  std::vector<float> want_acc = ToFloat(prior);
  ASSERT_TRUE(EmbeddingAccumulate(ids, table, row_begin, rows, dim, want_acc).ok());

  auto stream = Stream::Create();
  ASSERT_TRUE(stream.ok()) << stream.status();
  DeviceBuffer<int32_t> dids = Upload(ids, *stream);
  DeviceBuffer<Half> dtable = Upload(table, *stream);
  DeviceBuffer<Half> dout = Upload(prior, *stream);  // overwritten by the lookup
  ASSERT_TRUE(EmbeddingLookupCuda(dids.data(), m, dtable.data(), row_begin, rows, dim,
                                  dout.data(), stream->get())
                  .ok());
  ExpectBits(Download(dout, m * dim, *stream), want_lookup);

  DeviceBuffer<Half> dacc = Upload(prior, *stream);
  ASSERT_TRUE(EmbeddingAccumulateCuda(dids.data(), m, dtable.data(), row_begin, rows, dim,
                                      dacc.data(), stream->get())
                  .ok());
  ExpectBits(Download(dacc, m * dim, *stream), want_acc);

  // A rank with no vocabulary rows (table null, rows 0) writes zeros.
  ASSERT_TRUE(
      EmbeddingLookupCuda(dids.data(), m, nullptr, 0, 0, dim, dout.data(), stream->get()).ok());
  ExpectBits(Download(dout, m * dim, *stream), std::vector<float>(m * dim, 0.0f));
}

// Token embedding (TP = 1) then OPT's learned positions for a batch of three sequences:
// a 5-token prefill (positions 0..4), a decode step at position 9 and a 4-token continuation
// from position 3; table rows are position + 2.
TEST_P(EmbeddingCudaTest, TokensPlusPositionsForABatchOfSequences) {
  const int64_t dim = GetParam();
  const int64_t vocab = 50, max_positions = 16, pos_rows = max_positions + kOptPositionOffset;
  const std::vector<int32_t> ids = {2, 7, 7, 49, 0, 13, 3, 4, 5, 6};
  const std::vector<int32_t> positions = {0, 1, 2, 3, 4, 9, 3, 4, 5, 6};
  const int64_t m = static_cast<int64_t>(ids.size());
  const std::vector<Half> tokens = ToHalf(RandomNormal(vocab * dim, 43, 0.02f));
  const std::vector<Half> pos_table = ToHalf(RandomNormal(pos_rows * dim, 44, 0.02f));

  std::vector<float> want(m * dim);
  ASSERT_TRUE(EmbeddingLookup(ids, tokens, 0, vocab, dim, want).ok());
  for (float& v : want) v = HalfToFloat(FloatToHalf(v));  // the GPU keeps fp16 in between
  std::vector<int32_t> rows(positions);
  for (int32_t& r : rows) r += kOptPositionOffset;
  ASSERT_TRUE(EmbeddingAccumulate(rows, pos_table, 0, pos_rows, dim, want).ok());

  auto stream = Stream::Create();
  ASSERT_TRUE(stream.ok()) << stream.status();
  DeviceBuffer<int32_t> dids = Upload(ids, *stream);
  DeviceBuffer<int32_t> dpos = Upload(positions, *stream);
  DeviceBuffer<Half> dtok = Upload(tokens, *stream);
  DeviceBuffer<Half> dptab = Upload(pos_table, *stream);
  auto out = DeviceBuffer<Half>::Allocate(m * dim);
  ASSERT_TRUE(out.ok());
  ASSERT_TRUE(
      EmbeddingLookupCuda(dids.data(), m, dtok.data(), 0, vocab, dim, out->data(), stream->get())
          .ok());
  ASSERT_TRUE(AddPositionEmbeddingCuda(dpos.data(), m, dptab.data(), pos_rows, dim, out->data(),
                                       stream->get())
                  .ok());
  ExpectBits(Download(*out, m * dim, *stream), want);
}

// Ids the host failed to validate cannot fault: negative ids and out-of-table positions add
// zero rows.
TEST_P(EmbeddingCudaTest, UnvalidatedIdsGiveZeroRows) {
  const int64_t dim = GetParam();
  const std::vector<int32_t> ids = {-1, 3, -2147483647 - 1};
  const std::vector<int32_t> positions = {-1, 14, 15};  // 15 + 2 is past the 17-row table
  const int64_t m = 3, rows = 17;
  const std::vector<Half> table = ToHalf(RandomNormal(rows * dim, 45, 1.0f));
  const std::vector<Half> prior = ToHalf(RandomNormal(m * dim, 46, 1.0f));
  auto stream = Stream::Create();
  ASSERT_TRUE(stream.ok()) << stream.status();
  DeviceBuffer<int32_t> dids = Upload(ids, *stream);
  DeviceBuffer<int32_t> dpos = Upload(positions, *stream);
  DeviceBuffer<Half> dtable = Upload(table, *stream);
  auto out = DeviceBuffer<Half>::Allocate(m * dim);
  ASSERT_TRUE(out.ok());
  ASSERT_TRUE(EmbeddingLookupCuda(dids.data(), m, dtable.data(), 0, rows, dim, out->data(),
                                  stream->get())
                  .ok());
  std::vector<float> want(m * dim, 0.0f);
  for (int64_t j = 0; j < dim; ++j) want[dim + j] = HalfToFloat(table[3 * dim + j]);
  ExpectBits(Download(*out, m * dim, *stream), want);

  DeviceBuffer<Half> dacc = Upload(prior, *stream);
  ASSERT_TRUE(AddPositionEmbeddingCuda(dpos.data(), m, dtable.data(), rows, dim, dacc.data(),
                                       stream->get())
                  .ok());
  want = ToFloat(prior);
  for (int64_t j = 0; j < dim; ++j) {
    want[dim + j] = HalfToFloat(prior[dim + j]) + HalfToFloat(table[16 * dim + j]);
  }
  ExpectBits(Download(dacc, m * dim, *stream), want);
}

INSTANTIATE_TEST_SUITE_P(Dims, EmbeddingCudaTest, ::testing::Values(1, 19, 768, 4097));

TEST(EmbeddingCudaErrorsTest, BadArgumentsAreInvalidArgument) {
  const int32_t* ids = reinterpret_cast<const int32_t*>(uintptr_t{256});
  const Half* table = reinterpret_cast<const Half*>(uintptr_t{512});
  Half* out = reinterpret_cast<Half*>(uintptr_t{1024});
  constexpr auto kBad = absl::StatusCode::kInvalidArgument;
  EXPECT_EQ(EmbeddingLookupCuda(ids, -1, table, 0, 4, 8, out, nullptr).code(), kBad);
  EXPECT_EQ(EmbeddingLookupCuda(ids, 2, table, 0, 4, 0, out, nullptr).code(), kBad);
  EXPECT_EQ(EmbeddingLookupCuda(ids, 2, table, -1, 4, 8, out, nullptr).code(), kBad);
  EXPECT_EQ(EmbeddingLookupCuda(ids, 2, table, 0, -4, 8, out, nullptr).code(), kBad);
  EXPECT_EQ(EmbeddingLookupCuda(nullptr, 2, table, 0, 4, 8, out, nullptr).code(), kBad);
  EXPECT_EQ(EmbeddingLookupCuda(ids, 2, nullptr, 0, 4, 8, out, nullptr).code(), kBad);
  EXPECT_EQ(EmbeddingAccumulateCuda(ids, 2, table, -3, 4, 8, out, nullptr).code(), kBad);
  EXPECT_EQ(EmbeddingAccumulateCuda(ids, 2, table, 0, 4, 8, nullptr, nullptr).code(), kBad);
  EXPECT_EQ(AddPositionEmbeddingCuda(ids, 2, nullptr, 4, 8, out, nullptr).code(), kBad);
  EXPECT_EQ(AddPositionEmbeddingCuda(ids, 2, table, 4, -8, out, nullptr).code(), kBad);
  EXPECT_TRUE(EmbeddingLookupCuda(ids, 0, table, 0, 4, 8, out, nullptr).ok());
}

}  // namespace
}  // namespace llmint8::kernels
