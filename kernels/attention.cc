#include "kernels/attention.h"

#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/avx2_sum.h"
#include "kernels/softmax.h"

namespace llmint8::kernels {
namespace {

// One query row `i` of `seq` (at position context - num_new + i) and head `h`: its scores,
// their softmax and the weighted sum of the values. `scratch` holds head_dim + context floats.
// Each implementation sums a row in an order that depends only on head_dim, never on the batch
// or the thread.
using AttendRowFn = void (*)(std::span<const float> q, const AttentionShape& s,
                             const AttentionSequence& seq, int64_t i, int64_t h,
                             std::span<float> out, float* scratch);

// Plain loops, for CPUs without AVX2 + FMA.
void AttendRowPlain(std::span<const float> q, const AttentionShape& s, const AttentionSequence& seq,
                    int64_t i, int64_t h, std::span<float> out, float* scratch) {
  const int64_t d = s.head_dim;
  const int64_t row = seq.q_row + i;
  const int64_t n_keys = seq.context - seq.num_new + i + 1;
  float* qs = scratch;          // [head_dim]: the scaled query
  float* scores = scratch + d;  // [n_keys]
  const float* qh = q.data() + row * s.q_stride + h * d;
  for (int64_t j = 0; j < d; ++j) qs[j] = qh[j] * s.scale;
  const float* kh = seq.k.data() + h * d;
  for (int64_t t = 0; t < n_keys; ++t) {
    const float* kt = kh + t * s.kv_stride;
    float acc = 0.0f;
    for (int64_t j = 0; j < d; ++j) acc += qs[j] * kt[j];
    scores[t] = acc;
  }
  SoftmaxRowInPlace(std::span<float>(scores, n_keys));
  float* oh = out.data() + row * s.out_stride + h * d;
  std::fill(oh, oh + d, 0.0f);
  const float* vh = seq.v.data() + h * d;
  for (int64_t t = 0; t < n_keys; ++t) {
    for (int64_t j = 0; j < d; ++j) oh[j] += scores[t] * vh[t * s.kv_stride + j];
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
__attribute__((target("avx2,fma"))) void AttendRowAvx2(std::span<const float> q,
                                                       const AttentionShape& s,
                                                       const AttentionSequence& seq, int64_t i,
                                                       int64_t h, std::span<float> out,
                                                       float* scratch) {
  const int64_t d = s.head_dim;
  const int64_t row = seq.q_row + i;
  const int64_t n_keys = seq.context - seq.num_new + i + 1;
  float* qs = scratch;          // [head_dim]: the scaled query
  float* scores = scratch + d;  // [n_keys]
  const float* qh = q.data() + row * s.q_stride + h * d;
  for (int64_t j = 0; j < d; ++j) qs[j] = qh[j] * s.scale;
  const float* kh = seq.k.data() + h * d;
  int64_t t = 0;
  for (; t + 4 <= n_keys; t += 4) DotKeys<4>(qs, kh + t * s.kv_stride, s.kv_stride, d, scores + t);
  for (; t < n_keys; ++t) DotKeys<1>(qs, kh + t * s.kv_stride, s.kv_stride, d, scores + t);
  SoftmaxRowInPlace(std::span<float>(scores, n_keys));
  float* oh = out.data() + row * s.out_stride + h * d;
  const float* vh = seq.v.data() + h * d;
  const int64_t vector_dims = d / 8 * 8;
  for (int64_t j0 = 0; j0 < vector_dims; j0 += 64) {
    const int chunks = static_cast<int>(std::min<int64_t>(64, vector_dims - j0) / 8);
    WeightedSumChunks(chunks, scores, n_keys, vh + j0, s.kv_stride, oh + j0);
  }
  for (int64_t j = vector_dims; j < d; ++j) {
    float acc = 0.0f;
    for (int64_t k = 0; k < n_keys; ++k) acc += scores[k] * vh[k * s.kv_stride + j];
    oh[j] = acc;
  }
}

AttendRowFn BestAttendRow() {
  static const AttendRowFn fn = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")
                                    ? AttendRowAvx2
                                    : AttendRowPlain;
  return fn;
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
  const AttendRowFn attend_row = BestAttendRow();
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
        attend_row(q, s, seq, task / s.num_heads, task % s.num_heads, out, buffer);
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace llmint8::kernels
