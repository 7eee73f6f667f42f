#include "kernels/linear.h"

#include <dnnl.h>
#include <immintrin.h>

#include <algorithm>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "kernels/avx2_sum.h"

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
    return absl::InternalError(absl::StrCat("oneDNN dnnl_sgemm failed with status ",
                                            static_cast<int>(st), " for m=", m, " n=", nb,
                                            " k=", k));
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
  static const bool has_f16c = __builtin_cpu_supports("f16c") && __builtin_cpu_supports("avx");
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

// Decode-size fp16 linear: each weight row is read once, widened in registers (F16C) and dotted
// with the M rows of x (FMA, 8 lanes, fp32), so the weight costs its 2 bytes/param of memory
// traffic instead of a 4-byte fp32 copy written and read again by the block path.
constexpr int64_t kDirectMaxRows = 8;

template <int M>
__attribute__((target("avx2,fma,f16c"))) void LinearF16DirectRows(const float* x, const Half* w,
                                                                     int64_t n, int64_t k,
                                                                     const float* bias, float* y) {
#pragma omp parallel for schedule(static) if (n * k >= (int64_t{1} << 16))
  for (int64_t r = 0; r < n; ++r) {
    const Half* row = w + r * k;
    __m256 acc[M];
    for (int i = 0; i < M; ++i) acc[i] = _mm256_setzero_ps();
    int64_t j = 0;
    for (; j + 8 <= k; j += 8) {
      const __m256 wv = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + j)));
      for (int i = 0; i < M; ++i) {
        acc[i] = _mm256_fmadd_ps(_mm256_loadu_ps(x + i * k + j), wv, acc[i]);
      }
    }
    for (int i = 0; i < M; ++i) {
      float s = internal::HorizontalSum(acc[i]);
      for (int64_t t = j; t < k; ++t) s += x[i * k + t] * HalfToFloat(row[t]);
      y[i * n + r] = bias != nullptr ? s + bias[r] : s;
    }
  }
}

using DirectFn = void (*)(const float*, const Half*, int64_t, int64_t, const float*, float*);

// The kernel for m rows, or null when m is too large or the CPU lacks AVX2 / FMA / F16C.
DirectFn DirectKernel(int64_t m) {
  static const bool supported = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                                __builtin_cpu_supports("f16c");
  if (!supported) return nullptr;
  static constexpr DirectFn kByRows[kDirectMaxRows] = {
      LinearF16DirectRows<1>, LinearF16DirectRows<2>, LinearF16DirectRows<3>,
      LinearF16DirectRows<4>, LinearF16DirectRows<5>, LinearF16DirectRows<6>,
      LinearF16DirectRows<7>, LinearF16DirectRows<8>};
  return m >= 1 && m <= kDirectMaxRows ? kByRows[m - 1] : nullptr;
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
  if (const DirectFn direct = DirectKernel(m); direct != nullptr) {
    direct(x.data(), w.data(), n, k, bias.empty() ? nullptr : bias.data(), y.data());
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
