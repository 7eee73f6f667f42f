#include "kernels/attention.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace llmint8::kernels {
namespace {

// Plain double attention of one query row over positions [0, n_keys) of one head, and how far
// an fp32 computation may be from it (as attention_cuda_test.cc derives it, fp16 rounding
// aside): each score's dot product is within (d + 8) 2^-24 S of exact, S = max_t sum_j
// |q'_j k_tj|, which moves the softmax weights by at most 2 ds relative and the output by
// 4 (d + 8) 2^-24 S V, V = max |v| over the context; the fp32 softmax and weighted sum add
// (4 n_keys + 32) 2^-24 V.
struct Reference {
  std::vector<double> out;
  double bound = 0;
};
Reference RefHead(const float* q, const float* k, const float* v, int64_t n_keys, int64_t d,
                  int64_t kv_stride, double scale) {
  std::vector<double> s(n_keys);
  double mx = -1e300, max_abs_dot = 0, max_v = 0;
  for (int64_t t = 0; t < n_keys; ++t) {
    double acc = 0, abs_dot = 0;
    for (int64_t j = 0; j < d; ++j) {
      acc += q[j] * scale * k[t * kv_stride + j];
      abs_dot += std::fabs(q[j] * scale * k[t * kv_stride + j]);
      max_v = std::max(max_v, std::fabs(double{v[t * kv_stride + j]}));
    }
    s[t] = acc;
    mx = std::max(mx, acc);
    max_abs_dot = std::max(max_abs_dot, abs_dot);
  }
  double sum = 0;
  for (double& x : s) sum += (x = std::exp(x - mx));
  Reference ref{std::vector<double>(d, 0.0)};
  for (int64_t t = 0; t < n_keys; ++t) {
    for (int64_t j = 0; j < d; ++j) ref.out[j] += s[t] / sum * v[t * kv_stride + j];
  }
  const double u = std::ldexp(1.0, -24);
  ref.bound = u * max_v * (4.0 * (d + 8) * max_abs_dot + 4.0 * n_keys + 32.0);
  return ref;
}

// Random keys and values for sequences of (num_new, context), their query rows one after
// another.
struct RandomBatch {
  std::vector<std::vector<float>> ks, vs;
  std::vector<AttentionSequence> seqs;
  int64_t rows = 0, longest = 0;

  RandomBatch(const std::vector<std::pair<int64_t, int64_t>>& cfg, int64_t width, std::mt19937& rng,
              std::normal_distribution<float>& nd) {
    for (auto [n, ctx] : cfg) {
      ks.emplace_back(ctx * width);
      vs.emplace_back(ctx * width);
      for (float& x : ks.back()) x = nd(rng);
      for (float& x : vs.back()) x = nd(rng);
      seqs.push_back({rows, n, ctx, {}, {}});
      rows += n;
      longest = std::max(longest, ctx);
    }
    for (size_t i = 0; i < seqs.size(); ++i) {  // spans once the vectors stay put
      seqs[i].k = ks[i];
      seqs[i].v = vs[i];
    }
  }
};

TEST(AttentionTest, BatchOfDifferentLengthsMatchesDoubleReference) {
  const int64_t heads = 3, d = 8, width = heads * d;
  AttentionShape shape{heads, d, /*q_stride=*/3 * width, /*kv_stride=*/width,
                       /*out_stride=*/width, static_cast<float>(1.0 / std::sqrt(d))};
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.0f, 1.5f);
  // (num_new, context): a prefill, a decode step deep into a context, a partial prefill.
  RandomBatch batch({{5, 5}, {1, 17}, {3, 9}}, width, rng, nd);
  const std::vector<AttentionSequence>& seqs = batch.seqs;
  const int64_t rows = batch.rows;
  std::vector<float> q(rows * shape.q_stride), out(rows * width, -1.0f);
  for (float& x : q) x = nd(rng);
  std::vector<float> scratch(AttentionScratchFloats(shape, 17));
  ASSERT_TRUE(CausalAttention(q, shape, seqs, out, scratch).ok());
  for (const AttentionSequence& s : seqs) {
    for (int64_t i = 0; i < s.num_new; ++i) {
      const int64_t row = s.q_row + i;
      const int64_t n_keys = s.context - s.num_new + i + 1;
      for (int64_t h = 0; h < heads; ++h) {
        const Reference ref = RefHead(q.data() + row * shape.q_stride + h * d, s.k.data() + h * d,
                                      s.v.data() + h * d, n_keys, d, width, shape.scale);
        for (int64_t j = 0; j < d; ++j) {
          EXPECT_NEAR(out[row * width + h * d + j], ref.out[j], ref.bound)
              << row << " " << h << " " << j;
        }
      }
    }
  }
}

// Head sizes around the AVX2 path's blocks: under one vector (4), OPT's 64, 80 and 128, and
// past two value blocks of 64 with a tail (136); a prefill and a decode step, every row
// against the double reference.
TEST(AttentionTest, HeadSizesAroundTheVectorBlocksMatchDoubleReference) {
  for (const int64_t d : {4, 64, 80, 128, 136}) {
    const int64_t heads = 2, width = heads * d;
    AttentionShape shape{heads, d, width, width, width, static_cast<float>(1.0 / std::sqrt(d))};
    std::mt19937 rng(static_cast<uint32_t>(d));
    std::normal_distribution<float> nd(0.0f, 1.0f);
    RandomBatch batch({{7, 7}, {1, 13}}, width, rng, nd);
    std::vector<float> q(batch.rows * width), out(batch.rows * width, -1.0f);
    for (float& x : q) x = nd(rng);
    std::vector<float> scratch(AttentionScratchFloats(shape, batch.longest));
    ASSERT_TRUE(CausalAttention(q, shape, batch.seqs, out, scratch).ok());
    for (const AttentionSequence& s : batch.seqs) {
      for (int64_t i = 0; i < s.num_new; ++i) {
        const int64_t row = s.q_row + i;
        const int64_t n_keys = s.context - s.num_new + i + 1;
        for (int64_t h = 0; h < heads; ++h) {
          const Reference ref = RefHead(q.data() + row * width + h * d, s.k.data() + h * d,
                                        s.v.data() + h * d, n_keys, d, width, shape.scale);
          for (int64_t j = 0; j < d; ++j) {
            EXPECT_NEAR(out[row * width + h * d + j], ref.out[j], ref.bound)
                << "d=" << d << " row " << row << " head " << h << " dim " << j;
          }
        }
      }
    }
  }
}

// A step large enough to run on several OpenMP threads (a 300-token prefill beside decode
// steps, head_dim 64 with a tail past the 8-lane loops: 68), on 4 threads: every row against
// the double reference, and bit for bit equal to the same sequence attended alone on one
// thread, so a row does not depend on its batch or on the threads.
TEST(AttentionTest, ALargeStepOnSeveralThreadsEqualsEachSequenceAlone) {
  const int threads_before = omp_get_max_threads();
  const int64_t heads = 4, d = 68, width = heads * d;
  AttentionShape shape{heads, d, width, width, width, static_cast<float>(1.0 / std::sqrt(d))};
  std::mt19937 rng(11);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  RandomBatch batch({{300, 300}, {1, 250}, {1, 40}, {7, 90}}, width, rng, nd);
  const std::vector<AttentionSequence>& seqs = batch.seqs;
  const int64_t rows = batch.rows, longest = batch.longest;
  std::vector<float> q(rows * width), out(rows * width, -1.0f);
  for (float& x : q) x = nd(rng);
  std::vector<float> scratch(AttentionScratchFloats(shape, longest));
  omp_set_num_threads(4);
  ASSERT_TRUE(CausalAttention(q, shape, seqs, out, scratch).ok());
  omp_set_num_threads(1);
  for (const AttentionSequence& s : seqs) {
    // Alone: its rows moved to the front of q and out.
    AttentionSequence alone = s;
    alone.q_row = 0;
    std::vector<float> q_alone(q.begin() + s.q_row * width,
                               q.begin() + (s.q_row + s.num_new) * width);
    std::vector<float> out_alone(s.num_new * width, -1.0f);
    ASSERT_TRUE(CausalAttention(q_alone, shape, {&alone, 1}, out_alone, scratch).ok());
    for (int64_t i = 0; i < s.num_new; ++i) {
      const int64_t row = s.q_row + i;
      for (int64_t h = 0; h < heads; ++h) {
        const Reference ref =
            RefHead(q.data() + row * width + h * d, s.k.data() + h * d, s.v.data() + h * d,
                    s.context - s.num_new + i + 1, d, width, shape.scale);
        for (int64_t j = 0; j < d; ++j) {
          const float got = out[row * width + h * d + j];
          ASSERT_NEAR(got, ref.out[j], ref.bound) << row << " " << h << " " << j;
          ASSERT_EQ(got, out_alone[i * width + h * d + j]) << "row " << row << " head " << h;
        }
      }
    }
  }
  omp_set_num_threads(threads_before);
}

TEST(AttentionTest, FirstPositionCopiesItsValue) {
  AttentionShape shape{1, 2, 2, 2, 2, 1.0f};
  std::vector<float> q = {3, 4}, k = {1, 1}, v = {0.5f, -2.0f}, out(2), scratch(3);
  std::vector<AttentionSequence> seqs = {{0, 1, 1, k, v}};
  ASSERT_TRUE(CausalAttention(q, shape, seqs, out, scratch).ok());
  EXPECT_EQ(out, v);
}

TEST(AttentionTest, RejectsOverrunsAndShortScratch) {
  AttentionShape shape{1, 2, 2, 2, 2, 1.0f};
  std::vector<float> q = {3, 4}, k = {1, 1}, v = {0.5f, -2.0f}, out(2), scratch(3), tiny(2);
  std::vector<AttentionSequence> seqs = {{0, 1, 2, k, v}};  // context 2 but cache holds 1
  EXPECT_EQ(CausalAttention(q, shape, seqs, out, scratch).code(),
            absl::StatusCode::kInvalidArgument);
  seqs = {{0, 1, 1, k, v}};
  EXPECT_EQ(CausalAttention(q, shape, seqs, out, tiny).code(),
            absl::StatusCode::kInvalidArgument);
  seqs = {{0, 2, 1, k, v}};  // more new tokens than context
  EXPECT_EQ(CausalAttention(q, shape, seqs, out, scratch).code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace llmint8::kernels
