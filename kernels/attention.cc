#include "kernels/attention.h"

#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/avx2_sum.h"
#include "kernels/cpu_features.h"
#include "kernels/softmax.h"
#include "kernels/zero_upper.h"

namespace llmint8::kernels {
namespace {

// What one query row `i` of `seq` (at position context - num_new + i) and head `h` reads and
// writes: its scaled query and scores in scratch (head_dim + context floats), the head's keys
// and values (row t at t * stride), its output.
struct HeadRow {
  int64_t d = 0, n_keys = 0, stride = 0;
  float* qs = nullptr;      // [d]: the scaled query
  float* scores = nullptr;  // [n_keys]
  const float* k = nullptr;
  const float* v = nullptr;
  float* out = nullptr;  // [d]
};

HeadRow PrepareRow(std::span<const float> q, const AttentionShape& s, const AttentionSequence& seq,
                   int64_t i, int64_t h, std::span<float> out, float* scratch) {
  HeadRow r;
  r.d = s.head_dim;
  r.n_keys = seq.context - seq.num_new + i + 1;
  r.stride = s.kv_stride;
  r.qs = scratch;
  r.scores = scratch + r.d;
  r.k = seq.k.data() + h * r.d;
  r.v = seq.v.data() + h * r.d;
  const int64_t row = seq.q_row + i;
  r.out = out.data() + row * s.out_stride + h * r.d;
  const float* qh = q.data() + row * s.q_stride + h * r.d;
  for (int64_t j = 0; j < r.d; ++j) r.qs[j] = qh[j] * s.scale;
  return r;
}

// The two loops of a row: scores[t] = q' . k[t], and out = sum over t of p[t] v[t] (the
// scores softmaxed in place between them). Each implementation sums a row in an order that
// depends only on head_dim, never on the batch or the thread.
struct RowLoops {
  void (*scores)(const HeadRow& r);
  void (*weighted_sum)(const HeadRow& r);
};

// Plain loops, for CPUs without AVX2 + FMA.
void ScoresPlain(const HeadRow& r) {
  for (int64_t t = 0; t < r.n_keys; ++t) {
    const float* kt = r.k + t * r.stride;
    float acc = 0.0f;
    for (int64_t j = 0; j < r.d; ++j) acc += r.qs[j] * kt[j];
    r.scores[t] = acc;
  }
}

void WeightedSumPlain(const HeadRow& r) {
  std::fill(r.out, r.out + r.d, 0.0f);
  for (int64_t t = 0; t < r.n_keys; ++t) {
    for (int64_t j = 0; j < r.d; ++j) r.out[j] += r.scores[t] * r.v[t * r.stride + j];
  }
}

// q' . k[t] for KEYS keys at once, k[t] = k + t * stride: eight lanes per key, the lanes
// summed, then the tail of head_dim past a multiple of 8 one element at a time; a key's sum is
// the same whichever group it is computed in.
template <int KEYS>
__attribute__((target("avx2,fma"), always_inline)) inline void DotKeys(const float* qs,
                                                                       const float* k,
                                                                       int64_t stride, int64_t d,
                                                                       float* scores) {
  __m256 acc[KEYS];
#pragma GCC unroll 4
  for (int t = 0; t < KEYS; ++t) acc[t] = _mm256_setzero_ps();
  int64_t j = 0;
  for (; j + 8 <= d; j += 8) {
    const __m256 qv = _mm256_loadu_ps(qs + j);
#pragma GCC unroll 4
    for (int t = 0; t < KEYS; ++t) {
      acc[t] = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k + t * stride + j), acc[t]);
    }
  }
#pragma GCC unroll 4
  for (int t = 0; t < KEYS; ++t) {
    float sum = internal::HorizontalSum(acc[t]);
    for (int64_t r = j; r < d; ++r) sum += qs[r] * k[t * stride + r];
    scores[t] = sum;
  }
}

// out[0, 8 * CHUNKS) = sum over t of p[t] v[t][0, 8 * CHUNKS), the sums kept in registers.
template <int CHUNKS>
__attribute__((target("avx2,fma"), always_inline)) inline void WeightedSumBlock(
    const float* p, int64_t n_keys, const float* v, int64_t stride, float* out) {
  __m256 acc[CHUNKS];
#pragma GCC unroll 8
  for (int c = 0; c < CHUNKS; ++c) acc[c] = _mm256_setzero_ps();
  for (int64_t t = 0; t < n_keys; ++t) {
    const __m256 pv = _mm256_set1_ps(p[t]);
    const float* vt = v + t * stride;
#pragma GCC unroll 8
    for (int c = 0; c < CHUNKS; ++c) {
      acc[c] = _mm256_fmadd_ps(pv, _mm256_loadu_ps(vt + 8 * c), acc[c]);
    }
  }
#pragma GCC unroll 8
  for (int c = 0; c < CHUNKS; ++c) _mm256_storeu_ps(out + 8 * c, acc[c]);
}

__attribute__((target("avx2,fma"))) void WeightedSumChunks(int chunks, const float* p,
                                                           int64_t n_keys, const float* v,
                                                           int64_t stride, float* out) {
  switch (chunks) {
    case 8:
      return WeightedSumBlock<8>(p, n_keys, v, stride, out);
    case 7:
      return WeightedSumBlock<7>(p, n_keys, v, stride, out);
    case 6:
      return WeightedSumBlock<6>(p, n_keys, v, stride, out);
    case 5:
      return WeightedSumBlock<5>(p, n_keys, v, stride, out);
    case 4:
      return WeightedSumBlock<4>(p, n_keys, v, stride, out);
    case 3:
      return WeightedSumBlock<3>(p, n_keys, v, stride, out);
    case 2:
      return WeightedSumBlock<2>(p, n_keys, v, stride, out);
    default:
      return WeightedSumBlock<1>(p, n_keys, v, stride, out);
  }
}

// AVX2 + FMA: scores four keys at a time (four independent sums), and the weighted sum of the
// values 64 dimensions at a time with the sums in registers.
__attribute__((target("avx2,fma"))) void ScoresAvx2(const HeadRow& r) {
  const internal::ZeroUpperOnExit zero_upper;
  const HeadRow row = r;  // in registers for the loops
  int64_t t = 0;
  for (; t + 4 <= row.n_keys; t += 4) {
    DotKeys<4>(row.qs, row.k + t * row.stride, row.stride, row.d, row.scores + t);
  }
  for (; t < row.n_keys; ++t) {
    DotKeys<1>(row.qs, row.k + t * row.stride, row.stride, row.d, row.scores + t);
  }
}

__attribute__((target("avx2,fma"))) void WeightedSumAvx2(const HeadRow& r) {
  const internal::ZeroUpperOnExit zero_upper;
  const HeadRow row = r;
  const int64_t vector_dims = row.d / 8 * 8;
  for (int64_t j0 = 0; j0 < vector_dims; j0 += 64) {
    const int chunks = static_cast<int>(std::min<int64_t>(64, vector_dims - j0) / 8);
    WeightedSumChunks(chunks, row.scores, row.n_keys, row.v + j0, row.stride, row.out + j0);
  }
  for (int64_t j = vector_dims; j < row.d; ++j) {
    float acc = 0.0f;
    for (int64_t t = 0; t < row.n_keys; ++t) acc += row.scores[t] * row.v[t * row.stride + j];
    row.out[j] = acc;
  }
}

const RowLoops& Loops() {
  static const RowLoops loops = Cpu().avx2 && Cpu().fma ? RowLoops{ScoresAvx2, WeightedSumAvx2}
                                                        : RowLoops{ScoresPlain, WeightedSumPlain};
  return loops;
}

void AttendRow(const RowLoops& loops, const HeadRow& r) {
  loops.scores(r);
  SoftmaxRowInPlace(std::span<float>(r.scores, r.n_keys));
  loops.weighted_sum(r);
}

absl::Status CheckSequence(const AttentionShape& s, const AttentionSequence& seq, size_t i,
                           size_t q_size, size_t out_size, size_t scratch_size) {
  const int64_t width = s.num_heads * s.head_dim;
  if (seq.num_new < 1 || seq.context < seq.num_new || seq.q_row < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("CausalAttention: sequence ", i, " has num_new=", seq.num_new,
                     " context=", seq.context, " q_row=", seq.q_row));
  }
  const int64_t last_row = seq.q_row + seq.num_new - 1;
  const size_t kv_need = static_cast<size_t>((seq.context - 1) * s.kv_stride + width);
  if (static_cast<size_t>(last_row * s.q_stride + width) > q_size ||
      static_cast<size_t>(last_row * s.out_stride + width) > out_size ||
      seq.k.size() < kv_need || seq.v.size() < kv_need) {
    return absl::InvalidArgumentError(absl::StrCat(
        "CausalAttention: sequence ", i, " (rows ", seq.q_row, "+", seq.num_new, ", context ",
        seq.context, ") overruns q (", q_size, "), out (", out_size, ") or k/v (", seq.k.size(),
        "/", seq.v.size(), ", need ", kv_need, ")"));
  }
  if (static_cast<int64_t>(scratch_size) < AttentionScratchFloats(s, seq.context)) {
    return absl::InvalidArgumentError(absl::StrCat("CausalAttention: scratch has ", scratch_size,
                                                   " floats, need ",
                                                   AttentionScratchFloats(s, seq.context)));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status CausalAttention(std::span<const float> q, const AttentionShape& s,
                             std::span<const AttentionSequence> seqs, std::span<float> out,
                             std::span<float> scratch) {
  const int64_t width = s.num_heads * s.head_dim;
  if (s.num_heads <= 0 || s.head_dim <= 0 || s.q_stride < width || s.kv_stride < width ||
      s.out_stride < width) {
    return absl::InvalidArgumentError(absl::StrCat(
        "CausalAttention: bad shape heads=", s.num_heads, " head_dim=", s.head_dim,
        " strides q/kv/out=", s.q_stride, "/", s.kv_stride, "/", s.out_stride));
  }
  for (size_t i = 0; i < seqs.size(); ++i) {
    absl::Status st = CheckSequence(s, seqs[i], i, q.size(), out.size(), scratch.size());
    if (!st.ok()) return st;
  }
  // Every (query row, head) is independent: they are spread over the OpenMP threads when the
  // step is large enough to pay for it, a sequence's pairs at a time. Thread 0 uses `scratch`,
  // the others a buffer of their own (kept across calls).
  int64_t work = 0, max_context = 0;
  for (const AttentionSequence& seq : seqs) {
    work += seq.num_new * s.num_heads * seq.context * s.head_dim;
    max_context = std::max(max_context, seq.context);
  }
  const RowLoops& loops = Loops();
#pragma omp parallel if (work >= (int64_t{1} << 18))
  {
    float* buffer = scratch.data();
    if (omp_get_thread_num() != 0) {
      thread_local std::vector<float> own;
      const size_t need = static_cast<size_t>(AttentionScratchFloats(s, max_context));
      if (own.size() < need) own.resize(need);
      buffer = own.data();
    }
    for (const AttentionSequence& seq : seqs) {
#pragma omp for schedule(dynamic, 4) nowait
      for (int64_t task = 0; task < seq.num_new * s.num_heads; ++task) {
        AttendRow(loops,
                  PrepareRow(q, s, seq, task / s.num_heads, task % s.num_heads, out, buffer));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace llmint8::kernels
