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

// The two inner loops of one query row and head, over head_dim floats: q' . k[t] and
// out += p[t] v[t]. With AVX2 + FMA (checked at run time) eight lanes at a time; the order of
// a row's sums depends only on head_dim, never on the batch or the thread.
struct RowLoops {
  float (*dot)(const float* a, const float* b, int64_t n);
  void (*axpy)(float p, const float* x, float* y, int64_t n);
};

__attribute__((target("avx2,fma"))) float DotAvx2(const float* a, const float* b, int64_t n) {
  __m256 acc = _mm256_setzero_ps();
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + j), _mm256_loadu_ps(b + j), acc);
  }
  float sum = internal::HorizontalSum(acc);
  for (; j < n; ++j) sum += a[j] * b[j];
  return sum;
}

__attribute__((target("avx2,fma"))) void AxpyAvx2(float p, const float* x, float* y, int64_t n) {
  const __m256 pv = _mm256_set1_ps(p);
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    _mm256_storeu_ps(y + j, _mm256_fmadd_ps(pv, _mm256_loadu_ps(x + j), _mm256_loadu_ps(y + j)));
  }
  for (; j < n; ++j) y[j] += p * x[j];
}

float DotPlain(const float* a, const float* b, int64_t n) {
  float acc = 0.0f;
  for (int64_t j = 0; j < n; ++j) acc += a[j] * b[j];
  return acc;
}

void AxpyPlain(float p, const float* x, float* y, int64_t n) {
  for (int64_t j = 0; j < n; ++j) y[j] += p * x[j];
}

const RowLoops& Loops() {
  static const RowLoops loops = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")
                                    ? RowLoops{DotAvx2, AxpyAvx2}
                                    : RowLoops{DotPlain, AxpyPlain};
  return loops;
}

// Query row `i` of `seq` (at position context - num_new + i), head `h`; `scratch` holds
// head_dim + context floats.
void AttendRow(const RowLoops& loops, std::span<const float> q, const AttentionShape& s,
               const AttentionSequence& seq, int64_t i, int64_t h, std::span<float> out,
               float* scratch) {
  const int64_t d = s.head_dim;
  const int64_t row = seq.q_row + i;
  const int64_t n_keys = seq.context - seq.num_new + i + 1;
  float* qs = scratch;          // [head_dim]: the scaled query
  float* scores = scratch + d;  // [n_keys]
  const float* qh = q.data() + row * s.q_stride + h * d;
  for (int64_t j = 0; j < d; ++j) qs[j] = qh[j] * s.scale;
  const float* kh = seq.k.data() + h * d;
  for (int64_t t = 0; t < n_keys; ++t) scores[t] = loops.dot(qs, kh + t * s.kv_stride, d);
  SoftmaxRowInPlace(std::span<float>(scores, n_keys));
  float* oh = out.data() + row * s.out_stride + h * d;
  std::fill(oh, oh + d, 0.0f);
  const float* vh = seq.v.data() + h * d;
  for (int64_t t = 0; t < n_keys; ++t) loops.axpy(scores[t], vh + t * s.kv_stride, oh, d);
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
        AttendRow(loops, q, s, seq, task / s.num_heads, task % s.num_heads, out, buffer);
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace llmint8::kernels
