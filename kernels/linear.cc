#include "kernels/linear.h"

#include <dnnl.h>
#include <immintrin.h>

#include <algorithm>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "kernels/avx2_sum.h"
#include "kernels/cpu_features.h"

namespace llmint8::kernels {
namespace {

// fp16 weights are widened to fp32 in blocks of about this many values (4 MiB of fp32), so a
// huge matrix is never converted whole and the block is still hot in cache for the GEMM.
constexpr int64_t kF16BlockValues = int64_t{1} << 20;

absl::Status CheckShapes(const char* op, size_t x_size, int64_t m, size_t w_size, int64_t n,
                         int64_t k, size_t bias_size, size_t y_size) {
  if (m <= 0 || n <= 0 || k <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": m, n, k must be positive, got m=", m, " n=", n, " k=", k));
  }
  int64_t mk = 0, nk = 0, mn = 0;
  if (__builtin_mul_overflow(m, k, &mk) || __builtin_mul_overflow(n, k, &nk) ||
      __builtin_mul_overflow(m, n, &mn) || x_size != static_cast<size_t>(mk) ||
      w_size != static_cast<size_t>(nk) || y_size != static_cast<size_t>(mn) ||
      (bias_size != 0 && bias_size != static_cast<size_t>(n))) {
    return absl::InvalidArgumentError(absl::StrCat(
        op, ": m=", m, " n=", n, " k=", k, " needs x of m*k, w of n*k, bias of n or none, ",
        "y of m*n; got ", x_size, ", ", w_size, ", ", bias_size, ", ", y_size));
  }
  return absl::OkStatus();
}

// y[:, n0:n0+nb] = x * w_block^T + beta * y[:, n0:n0+nb]; w_block is [nb, k] row-major.
absl::Status Sgemm(const float* x, int64_t m, const float* w_block, int64_t nb, int64_t k,
                   float beta, float* y, int64_t ldy) {
  const dnnl_status_t st = dnnl_sgemm('N', 'T', m, nb, k, 1.0f, x, k, w_block, k, beta, y, ldy);
  if (st != dnnl_success) {
    // Out of memory (its packing buffers) is the step's size, not a broken library.
    return absl::Status(
        st == dnnl_out_of_memory ? absl::StatusCode::kResourceExhausted
                                 : absl::StatusCode::kInternal,
        absl::StrCat("oneDNN dnnl_sgemm failed with status ", static_cast<int>(st), " for m=", m,
                     " n=", nb, " k=", k));
  }
  return absl::OkStatus();
}

// Fills y [m, n] with the bias rows and returns the beta that keeps it (1), or 0 without bias.
float PrepareOutput(std::span<const float> bias, int64_t m, int64_t n, std::span<float> y) {
  if (bias.empty()) return 0.0f;
  for (int64_t i = 0; i < m; ++i) std::copy(bias.begin(), bias.end(), y.begin() + i * n);
  return 1.0f;
}

__attribute__((target("avx,f16c"))) void HalfToFloatF16c(const Half* src, int64_t size,
                                                           float* dst) {
  int64_t i = 0;
  for (; i + 8 <= size; i += 8) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i));
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(h));
  }
  for (; i < size; ++i) dst[i] = HalfToFloat(src[i]);
}

void HalfToFloatBlock(const Half* src, int64_t size, float* dst) {
  static const bool has_f16c = Cpu().f16c;
  constexpr int64_t kChunk = 1 << 14;
#pragma omp parallel for schedule(static) if (size >= 4 * kChunk)
  for (int64_t c = 0; c < size; c += kChunk) {
    const int64_t len = std::min(kChunk, size - c);
    if (has_f16c) {
      HalfToFloatF16c(src + c, len, dst + c);
    } else {
      for (int64_t i = 0; i < len; ++i) dst[c + i] = HalfToFloat(src[c + i]);
    }
  }
}

// Decode-size fp16 linear: each weight row is read from memory once, widened in registers
// (F16C) and dotted with every row of x (FMA, 8 lanes, fp32), eight rows of x at a time while
// the weight row stays in L1; so the weight costs its 2 bytes/param of memory traffic instead
// of a 4-byte fp32 copy written and read again by the block path. Up to kDirectMaxRows rows of
// x, a decode batch: beyond, the blocked SGEMM wins (int8_linear_benchmark's LM-head shapes,
// 2026-11-29, one run: at 32 rows this kernel took 8.7 ms, the SGEMM 6.0; bench/README.md).
constexpr int64_t kDirectMaxRows = 16;
constexpr int kGroupRows = 8;

// y[i * n] = x_i . row (+ bias) for the G rows x_0 .. x_{G-1} of x (k floats apart). The loops
// over the G accumulators are unrolled so that they stay in registers (1.7-1.9x at G = 8,
// bench/README.md).
template <int G>
__attribute__((target("avx2,fma,f16c"))) void DotRows(const float* x, const Half* row, int64_t n,
                                                      int64_t k, const float* bias, float* y) {
  __m256 acc[G];
#pragma GCC unroll 8
  for (int i = 0; i < G; ++i) acc[i] = _mm256_setzero_ps();
  int64_t j = 0;
  for (; j + 8 <= k; j += 8) {
    const __m256 wv = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + j)));
#pragma GCC unroll 8
    for (int i = 0; i < G; ++i)
      acc[i] = _mm256_fmadd_ps(_mm256_loadu_ps(x + i * k + j), wv, acc[i]);
  }
  for (int i = 0; i < G; ++i) {
    float s = internal::HorizontalSum(acc[i]);
    for (int64_t t = j; t < k; ++t) s += x[i * k + t] * HalfToFloat(row[t]);
    y[i * n] = bias != nullptr ? s + *bias : s;
  }
}

using DotRowsFn = void (*)(const float*, const Half*, int64_t, int64_t, const float*, float*);
constexpr DotRowsFn kDotRows[kGroupRows] = {DotRows<1>, DotRows<2>, DotRows<3>, DotRows<4>,
                                            DotRows<5>, DotRows<6>, DotRows<7>, DotRows<8>};

void LinearF16Direct(const float* x, int64_t m, const Half* w, int64_t n, int64_t k,
                     const float* bias, float* y) {
  const DotRowsFn tail = m % kGroupRows != 0 ? kDotRows[m % kGroupRows - 1] : nullptr;
#pragma omp parallel for schedule(static) if (n * k >= (int64_t{1} << 16))
  for (int64_t r = 0; r < n; ++r) {
    const Half* row = w + r * k;
    const float* b = bias != nullptr ? bias + r : nullptr;
    int64_t i = 0;
    for (; i + kGroupRows <= m; i += kGroupRows) {
      DotRows<kGroupRows>(x + i * k, row, n, k, b, y + i * n + r);
    }
    if (tail != nullptr) tail(x + i * k, row, n, k, b, y + i * n + r);
  }
}

// Whether the direct kernel takes m rows: few enough, and the CPU has AVX2 / FMA / F16C.
bool UseDirect(int64_t m) {
  static const bool supported = Cpu().avx2_fma_f16c();
  return supported && m >= 1 && m <= kDirectMaxRows;
}

}  // namespace

absl::Status LinearF32(std::span<const float> x, int64_t m, std::span<const float> w, int64_t n,
                       int64_t k, std::span<const float> bias, std::span<float> y) {
  RETURN_IF_ERROR(CheckShapes("LinearF32", x.size(), m, w.size(), n, k, bias.size(), y.size()));
  const float beta = PrepareOutput(bias, m, n, y);
  return Sgemm(x.data(), m, w.data(), n, k, beta, y.data(), n);
}

absl::Status LinearF16(std::span<const float> x, int64_t m, std::span<const Half> w, int64_t n,
                       int64_t k, std::span<const float> bias, std::span<float> y) {
  RETURN_IF_ERROR(CheckShapes("LinearF16", x.size(), m, w.size(), n, k, bias.size(), y.size()));
  if (UseDirect(m)) {
    LinearF16Direct(x.data(), m, w.data(), n, k, bias.empty() ? nullptr : bias.data(), y.data());
    return absl::OkStatus();
  }
  const float beta = PrepareOutput(bias, m, n, y);
  const int64_t rows_per_block = std::clamp<int64_t>(kF16BlockValues / k, 1, n);
  // One buffer per thread, kept across calls (no allocation per call in steady state).
  thread_local std::vector<float> block;
  block.resize(rows_per_block * k);
  for (int64_t n0 = 0; n0 < n; n0 += rows_per_block) {
    const int64_t nb = std::min(rows_per_block, n - n0);
    HalfToFloatBlock(w.data() + n0 * k, nb * k, block.data());
    RETURN_IF_ERROR(Sgemm(x.data(), m, block.data(), nb, k, beta, y.data() + n0, n));
  }
  return absl::OkStatus();
}

}  // namespace llmint8::kernels
