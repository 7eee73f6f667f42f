// AppendKvCuda + CausalAttentionCuda against the CPU reference (kernels/attention.h) for a batch
// of sequences of different lengths in one call: a 7-token prefill, decode steps at contexts 33
// and 151, a 5-token and a 23-token continuation of cached prefixes, and a 1-token prompt. The
// paged pool interleaves K and V pages ([pages][2][page_size][kv_stride]), the page ids are a
// shuffled permutation, and every unused slot holds NaN, so a read of a wrong position shows.
//
// AppendKvCuda copies fp16 values: the pool must match bit for bit.
//
// Attention bound (per output element of row r, head h). Scores: the GPU's dot product
// (per-lane sums of D/32 terms, a 5-level warp tree, q * scale rounded) and the CPU's
// sequential one are each within (D + 8) 2^-24 S of the exact value, S = max_t sum_d
// |q'_d k_td|; a score perturbation ds changes the softmax weights by at most 2 ds relative,
// so the output by at most 4 (D + 8) 2^-24 S V, V = max |v| over the head's context. The fp32
// softmax/accumulation (exp within 2 ulp, the online rescaling once per key on the GPU, a
// sequential sum on the CPU) adds at most (4 n_keys + 32) 2^-24 V. Rounding to fp16: 2^-10
// |want| (half an ulp, one more across a rounding boundary) + 2^-24.
#include "kernels/cuda/attention_cuda.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/attention.h"
#include "kernels/cuda/cuda_test_util.h"
#include "kernels/cuda/device.h"
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

constexpr uint16_t kNaNBits = 0x7e00;

struct Case {
  int64_t heads;
  int64_t head_dim;
  int64_t page_size;
  int64_t kv_pad;  // kv_stride = heads * head_dim + kv_pad
};

struct SeqSpec {
  int64_t past;
  int64_t num_new;
};

const std::vector<SeqSpec>& Sequences() {
  static const std::vector<SeqSpec> seqs = {{0, 7}, {32, 1}, {15, 5}, {0, 1}, {150, 1}, {9, 23}};
  return seqs;
}

// Everything a case needs, on the host.
struct Problem {
  int64_t width = 0, kv_stride = 0, rows = 0, num_pages = 0, page_stride = 0, entries = 0;
  AttentionShape shape;
  std::vector<Half> qkv;                   // [rows][3 * width]
  std::vector<std::vector<float>> k, v;    // per sequence [context][width], fp16 values
  std::vector<std::vector<int32_t>> pages; // per sequence
  std::vector<Half> pool_before, pool_after;
  std::vector<AttentionSequenceCuda> batch;
  std::vector<AttentionSequence> cpu_batch;
};

Problem MakeProblem(const Case& c, uint32_t seed) {
  Problem p;
  const std::vector<SeqSpec>& seqs = Sequences();
  p.width = c.heads * c.head_dim;
  p.kv_stride = p.width + c.kv_pad;
  p.shape = {c.heads, c.head_dim, 3 * p.width, p.kv_stride, p.width,
             static_cast<float>(1.0 / std::sqrt(static_cast<double>(c.head_dim)))};
  for (const SeqSpec& s : seqs) {
    p.rows += s.num_new;
    p.entries += (s.past + s.num_new + c.page_size - 1) / c.page_size;
  }
  p.num_pages = p.entries + 3;  // a few pages nobody uses
  p.page_stride = 2 * c.page_size * p.kv_stride;
  p.qkv = ToHalf(RandomNormal(p.rows * 3 * p.width, seed));

  std::vector<int32_t> perm(p.num_pages);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), std::mt19937(seed + 1));
  p.pool_before.assign(p.num_pages * p.page_stride, Half{kNaNBits});
  p.pool_after = p.pool_before;
  int64_t next_page = 0, row = 0;
  for (size_t i = 0; i < seqs.size(); ++i) {
    const int64_t context = seqs[i].past + seqs[i].num_new;
    const int64_t need = (context + c.page_size - 1) / c.page_size;
    p.pages.emplace_back(perm.begin() + next_page, perm.begin() + next_page + need);
    next_page += need;
    const std::vector<Half> past_k = ToHalf(RandomNormal(seqs[i].past * p.width, seed + 2 + i));
    const std::vector<Half> past_v =
        ToHalf(RandomNormal(seqs[i].past * p.width, seed + 100 + i, 2.0f));
    std::vector<float> k(context * p.width), v(context * p.width);
    for (int64_t t = 0; t < context; ++t) {
      const int64_t page = p.pages[i][t / c.page_size];
      const int64_t base = page * p.page_stride + (t % c.page_size) * p.kv_stride;
      for (int64_t j = 0; j < p.width; ++j) {
        Half hk, hv;
        if (t < seqs[i].past) {
          hk = past_k[t * p.width + j];
          hv = past_v[t * p.width + j];
          p.pool_before[base + j] = hk;
          p.pool_before[base + c.page_size * p.kv_stride + j] = hv;
        } else {
          const int64_t r = row + (t - seqs[i].past);
          hk = p.qkv[r * 3 * p.width + p.width + j];
          hv = p.qkv[r * 3 * p.width + 2 * p.width + j];
        }
        p.pool_after[base + j] = hk;
        p.pool_after[base + c.page_size * p.kv_stride + j] = hv;
        k[t * p.width + j] = HalfToFloat(hk);
        v[t * p.width + j] = HalfToFloat(hv);
      }
    }
    p.k.push_back(std::move(k));
    p.v.push_back(std::move(v));
    row += seqs[i].num_new;
  }
  row = 0;
  for (size_t i = 0; i < seqs.size(); ++i) {
    const int64_t context = seqs[i].past + seqs[i].num_new;
    p.batch.push_back({seqs[i].num_new, context, p.pages[i]});
    p.cpu_batch.push_back({row, seqs[i].num_new, context, p.k[i], p.v[i]});
    row += seqs[i].num_new;
  }
  return p;
}

// The error scale of one (row, head) of sequence i: the bound for its output element with CPU
// value `want` is 2^-10 |want| + scale.
double ErrorScale(const Problem& p, size_t i, int64_t row_in_seq, int64_t q_row, int64_t h) {
  const int64_t d = p.shape.head_dim;
  const int64_t n_keys = p.cpu_batch[i].context - p.cpu_batch[i].num_new + row_in_seq + 1;
  double s = 0, vmax = 0;
  for (int64_t t = 0; t < n_keys; ++t) {
    double dot = 0;
    for (int64_t j = 0; j < d; ++j) {
      const double q = HalfToFloat(p.qkv[q_row * 3 * p.width + h * d + j]) * p.shape.scale;
      dot += std::fabs(q * p.k[i][t * p.width + h * d + j]);
      vmax = std::max(vmax, std::fabs(double{p.v[i][t * p.width + h * d + j]}));
    }
    s = std::max(s, dot);
  }
  const double u = std::ldexp(1.0, -24);
  return u + 4 * (d + 8) * u * s * vmax + (4 * n_keys + 32) * u * vmax;
}

class AttentionCudaTest : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override { LLMINT8_SKIP_WITHOUT_CUDA_DEVICE(); }
};

TEST_P(AttentionCudaTest, BatchOfSequencesMatchesCpu) {
  const Case c = GetParam();
  const Problem p = MakeProblem(c, 61 + static_cast<uint32_t>(c.head_dim * 7 + c.page_size));

  // CPU reference on the same fp16 values.
  const std::vector<float> qf = ToFloat(p.qkv);
  std::vector<float> want(p.rows * p.width);
  std::vector<float> scratch(AttentionScratchFloats(p.shape, 256));
  const AttentionShape cpu_shape{c.heads, c.head_dim, 3 * p.width, p.width, p.width,
                                 p.shape.scale};
  ASSERT_TRUE(CausalAttention(qf, cpu_shape, p.cpu_batch, want, scratch).ok());

  auto stream = Stream::Create();
  ASSERT_TRUE(stream.ok()) << stream.status();
  DeviceBuffer<Half> qkv = Upload(p.qkv, *stream);
  DeviceBuffer<Half> pool = Upload(p.pool_before, *stream);
  auto out = DeviceBuffer<Half>::Allocate(p.rows * p.width);
  ASSERT_TRUE(out.ok());
  auto batch = AttentionBatchCuda::Create(8, p.entries);
  ASSERT_TRUE(batch.ok()) << batch.status();
  ASSERT_TRUE(batch->Set(p.batch, c.page_size, p.num_pages, stream->get()).ok());
  EXPECT_EQ(batch->num_rows(), p.rows);
  EXPECT_EQ(batch->max_context(), 151);
  const PagedKvCudaView kv{pool.data(), pool.data() + c.page_size * p.kv_stride, p.page_stride};

  ASSERT_TRUE(AppendKvCuda(qkv.data() + p.width, qkv.data() + 2 * p.width, 3 * p.width, p.shape,
                           *batch, kv, stream->get())
                  .ok());
  const std::vector<Half> got_pool = Download(pool, p.pool_after.size(), *stream);
  for (size_t i = 0; i < got_pool.size(); ++i) {
    ASSERT_EQ(got_pool[i].bits, p.pool_after[i].bits) << "pool element " << i;
  }

  ASSERT_TRUE(CausalAttentionCuda(qkv.data(), p.shape, *batch, kv, out->data(), stream->get())
                  .ok());
  const std::vector<Half> got = Download(*out, p.rows * p.width, *stream);
  int failures = 0;
  for (size_t i = 0; i < p.cpu_batch.size(); ++i) {
    for (int64_t j = 0; j < p.cpu_batch[i].num_new; ++j) {
      const int64_t row = p.cpu_batch[i].q_row + j;
      for (int64_t h = 0; h < c.heads; ++h) {
        const double scale = ErrorScale(p, i, j, row, h);
        for (int64_t d = 0; d < c.head_dim; ++d) {
          const int64_t e = row * p.width + h * c.head_dim + d;
          const double bound = std::ldexp(std::fabs(want[e]), -10) + scale;
          const double diff = std::fabs(double{HalfToFloat(got[e])} - want[e]);
          if (!(diff <= bound) && ++failures <= 10) {
            ADD_FAILURE() << "sequence " << i << " row " << row << " head " << h << " dim " << d
                          << ": got " << HalfToFloat(got[e]) << ", want " << want[e] << " +- "
                          << bound;
          }
        }
      }
    }
  }
  EXPECT_EQ(failures, 0);

  // A sequence's rows do not depend on the rest of the batch: sequence 2 alone, its q rows at
  // the start of its own q buffer, gives the same bits (the scheduler adds and removes
  // sequences between steps).
  const size_t solo = 2;
  auto alone = AttentionBatchCuda::Create(1, p.entries);
  ASSERT_TRUE(alone.ok());
  ASSERT_TRUE(alone->Set({&p.batch[solo], 1}, c.page_size, p.num_pages, stream->get()).ok());
  auto out_alone = DeviceBuffer<Half>::Allocate(p.batch[solo].num_new * p.width);
  ASSERT_TRUE(out_alone.ok());
  const int64_t first = p.cpu_batch[solo].q_row;
  ASSERT_TRUE(CausalAttentionCuda(qkv.data() + first * 3 * p.width, p.shape, *alone, kv,
                                  out_alone->data(), stream->get())
                  .ok());
  const std::vector<Half> got_alone =
      Download(*out_alone, p.batch[solo].num_new * p.width, *stream);
  for (size_t e = 0; e < got_alone.size(); ++e) {
    ASSERT_EQ(got_alone[e].bits, got[first * p.width + e].bits) << e;
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, AttentionCudaTest,
                         ::testing::Values(Case{3, 16, 4, 0}, Case{2, 64, 16, 3},
                                           Case{1, 7, 5, 0}, Case{5, 80, 8, 0},
                                           Case{4, 128, 1024, 0},  // one page per sequence
                                           Case{2, 256, 16, 1}, Case{2, 33, 1, 0}));

class AttentionCudaErrorsTest : public ::testing::Test {
 protected:
  void SetUp() override { LLMINT8_SKIP_WITHOUT_CUDA_DEVICE(); }
};

TEST_F(AttentionCudaErrorsTest, BadBatchesAreRejectedAndTheOldBatchIsKept) {
  auto stream = Stream::Create();
  ASSERT_TRUE(stream.ok());
  auto batch = AttentionBatchCuda::Create(2, 4);
  ASSERT_TRUE(batch.ok()) << batch.status();
  const std::vector<int32_t> pages = {0, 1, 2, 3, 4};
  const std::vector<int32_t> bad_page = {0, 9};
  const std::span<const int32_t> two(pages.data(), 2);
  ASSERT_TRUE(batch->Set(std::vector<AttentionSequenceCuda>{{3, 5, two}}, 4, 8, stream->get())
                  .ok());
  constexpr auto kBad = absl::StatusCode::kInvalidArgument;
  using Seqs = std::vector<AttentionSequenceCuda>;
  auto set = [&](const Seqs& seqs, int64_t page_size, int64_t num_pages) {
    return batch->Set(seqs, page_size, num_pages, stream->get()).code();
  };
  EXPECT_EQ(set(Seqs(3, {1, 1, two}), 4, 8), kBad);           // over sequence capacity
  EXPECT_EQ(set(Seqs{{1, 20, pages}}, 4, 8), kBad);           // 5 entries > capacity 4
  EXPECT_EQ(set(Seqs{{1, 1, two}}, 0, 8), kBad);              // page_size 0
  EXPECT_EQ(set(Seqs{{0, 1, two}}, 4, 8), kBad);              // num_new 0
  EXPECT_EQ(set(Seqs{{3, 2, two}}, 4, 8), kBad);              // context < num_new
  EXPECT_EQ(set(Seqs{{1, 9, two}}, 4, 8), kBad);              // 9 positions need 3 pages
  EXPECT_EQ(set(Seqs{{1, 5, bad_page}}, 4, 8), kBad);         // page id 9 outside [0, 8)
  EXPECT_EQ(set(Seqs{{1, 5, two}}, 4, 1), kBad);              // page id 1 outside [0, 1)
  EXPECT_EQ(set(Seqs{{1, int64_t{1} << 31, pages}}, int64_t{1} << 30, 8), kBad);
  EXPECT_EQ(batch->num_rows(), 3);  // the first batch is still in place
  EXPECT_EQ(batch->max_context(), 5);

  auto buf = DeviceBuffer<Half>::Allocate(4096);
  ASSERT_TRUE(buf.ok());
  Half* d = buf->data();
  const PagedKvCudaView kv{d, d + 64, 128};
  const AttentionShape ok_shape{2, 8, 48, 16, 16, 0.35f};
  ASSERT_TRUE(CausalAttentionCuda(d, ok_shape, *batch, kv, d + 2048, stream->get()).ok());
  ASSERT_TRUE(stream->Synchronize().ok());
  auto attend = [&](const AttentionShape& s, const PagedKvCudaView& view, const Half* q,
                    Half* out) {
    return CausalAttentionCuda(q, s, *batch, view, out, stream->get()).code();
  };
  EXPECT_EQ(attend({0, 8, 48, 16, 16, 0.35f}, kv, d, d + 2048), kBad);
  EXPECT_EQ(attend({1, 257, 771, 257, 257, 0.35f}, kv, d, d + 2048), kBad);
  EXPECT_EQ(attend({2, 8, 15, 16, 16, 0.35f}, kv, d, d + 2048), kBad);
  EXPECT_EQ(attend({2, 8, 48, 15, 16, 0.35f}, kv, d, d + 2048), kBad);
  EXPECT_EQ(attend({2, 8, 48, 16, 15, 0.35f}, kv, d, d + 2048), kBad);
  EXPECT_EQ(attend({2, 8, 48, 16, 16, NAN}, kv, d, d + 2048), kBad);
  EXPECT_EQ(attend(ok_shape, {d, d + 64, 63}, d, d + 2048), kBad);  // pages overlap
  EXPECT_EQ(attend(ok_shape, {nullptr, d, 128}, d, d + 2048), kBad);
  EXPECT_EQ(attend(ok_shape, kv, nullptr, d + 2048), kBad);
  EXPECT_EQ(attend(ok_shape, kv, d, nullptr), kBad);
  EXPECT_EQ(AppendKvCuda(d, d, 15, ok_shape, *batch, kv, stream->get()).code(), kBad);
  EXPECT_EQ(AppendKvCuda(nullptr, d, 48, ok_shape, *batch, kv, stream->get()).code(), kBad);
}

// Capacity checks come before any allocation: they run without a GPU too.
TEST(AttentionBatchCudaTest, CreateRejectsBadCapacities) {
  EXPECT_EQ(AttentionBatchCuda::Create(0, 4).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(AttentionBatchCuda::Create(4, 0).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(AttentionBatchCuda::Create(int64_t{1} << 31, 4).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace llmint8::kernels
