#include "kernels/linear.h"

#include <dnnl.h>
#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <type_traits>
#include <utility>
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

// The fp16 linear on CPUs with AVX2, FMA and F16C, for any number of rows: each output is
// computed by the same arithmetic whatever the rows around it, so a token's logits do not
// depend on its batch mates, on a prefill chunk's length or on a prefix-cache hit (and seeded
// sampling repeats). Output (i, r) is x_i . w_r in L fp32 lanes (lane l takes the products at
// j = l mod L, FMA in increasing j), their horizontal sum, then the k mod L remaining products
// in order, then the bias; L = 16 with AVX-512, else 8 (a machine always takes the same). Tiles
// of G rows of x by R weight rows keep G * R of these accumulators in registers: each weight
// vector read (fp16, widened with F16C) serves G rows, each x vector R weight rows, so the
// fp16 weight costs its 2 bytes/param of memory traffic instead of a 4-byte fp32 copy.
// oneDNN's sgemm would be faster at large m but picks its blocking, and so its summation
// order, by m (bench/README.md has both).

// Rows of x per pass over the weights: a pass's x rows stay in L2 (128 x 4 KiB at k = 1024).
constexpr int64_t kRowBlock = 128;

inline float WeightValue(Half w) { return HalfToFloat(w); }
inline float WeightValue(float w) { return w; }

// y[g * n + r] = x_g . w_r (+ bias[r]) for g < G, r < R, from the lane sums `acc` (Sum of
// a register: its lanes' sum) and the products past the last full register at j.
template <int G, int R, typename W, typename Vec, typename Sum>
inline void Finish(const Vec (&acc)[G][R], Sum sum, const float* x, const W* w, int64_t j,
                   int64_t n, int64_t k, const float* bias, float* y) {
#pragma GCC unroll 8
  for (int g = 0; g < G; ++g) {
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      float s = sum(acc[g][r]);
      for (int64_t t = j; t < k; ++t) s = std::fma(x[g * k + t], WeightValue(w[r * k + t]), s);
      y[g * n + r] = bias != nullptr ? s + bias[r] : s;
    }
  }
}

// The tiles of one instruction set: Tile<G, R, W> for G <= kRows, R <= kWeights, with weights
// W = Half (widened in registers) or float (their fp32 copy: the same values, the same result).
struct Avx2 {
  static constexpr int kRows = 4;
  static constexpr int kWeights = 3;  // G * R + R + 1 <= the 16 ymm registers
  template <int G, int R, typename W>
  __attribute__((target("avx2,fma,f16c"))) static void Tile(const float* x, const W* w, int64_t n,
                                                            int64_t k, const float* bias,
                                                            float* y) {
    __m256 acc[G][R];
#pragma GCC unroll 8
    for (int g = 0; g < G; ++g)
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) acc[g][r] = _mm256_setzero_ps();
    int64_t j = 0;
    for (; j + 8 <= k; j += 8) {
      __m256 wv[R];
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        if constexpr (std::is_same_v<W, Half>) {
          wv[r] = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w + r * k + j)));
        } else {
          wv[r] = _mm256_loadu_ps(w + r * k + j);
        }
      }
#pragma GCC unroll 8
      for (int g = 0; g < G; ++g) {
        const __m256 xv = _mm256_loadu_ps(x + g * k + j);
#pragma GCC unroll 8
        for (int r = 0; r < R; ++r) acc[g][r] = _mm256_fmadd_ps(xv, wv[r], acc[g][r]);
      }
    }
    Finish<G, R>(acc, internal::HorizontalSum, x, w, j, n, k, bias, y);
  }
};

struct Avx512 {
  static constexpr int kRows = 4;
  static constexpr int kWeights = 6;  // G * R + R + 1 <= the 32 zmm registers
  // The two halves added, then HorizontalSum's order for the eight. (Masked extracts: GCC 12's
  // unmasked ones, and so _mm512_reduce_add_ps, trip -Wuninitialized in its own header.)
  __attribute__((target("avx512f,avx2,fma,f16c"))) static float Sum(__m512 v) {
    const __m512d d = _mm512_castps_pd(v);
    const __m256 lo = _mm256_castpd_ps(_mm512_maskz_extractf64x4_pd(0xff, d, 0));
    const __m256 hi = _mm256_castpd_ps(_mm512_maskz_extractf64x4_pd(0xff, d, 1));
    return internal::HorizontalSum(_mm256_add_ps(lo, hi));
  }
  template <int G, int R, typename W>
  __attribute__((target("avx512f,avx2,fma,f16c"))) static void Tile(const float* x, const W* w,
                                                                    int64_t n, int64_t k,
                                                                    const float* bias, float* y) {
    __m512 acc[G][R];
#pragma GCC unroll 8
    for (int g = 0; g < G; ++g)
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) acc[g][r] = _mm512_setzero_ps();
    int64_t j = 0;
    for (; j + 16 <= k; j += 16) {
      __m512 wv[R];
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        if constexpr (std::is_same_v<W, Half>) {
          wv[r] = _mm512_maskz_cvtph_ps(
              0xffff, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + r * k + j)));
        } else {
          wv[r] = _mm512_loadu_ps(w + r * k + j);
        }
      }
#pragma GCC unroll 8
      for (int g = 0; g < G; ++g) {
        const __m512 xv = _mm512_loadu_ps(x + g * k + j);
#pragma GCC unroll 8
        for (int r = 0; r < R; ++r) acc[g][r] = _mm512_fmadd_ps(xv, wv[r], acc[g][r]);
      }
    }
    Finish<G, R>(acc, Sum, x, w, j, n, k, bias, y);
  }
};

template <typename W>
using TileFn = void (*)(const float*, const W*, int64_t, int64_t, const float*, float*);

// Isa::Tile<G, R, W> at [(G - 1) * Isa::kWeights + R - 1].
template <typename Isa, typename W, int... I>
constexpr std::array<TileFn<W>, sizeof...(I)> TileTable(std::integer_sequence<int, I...>) {
  return {&Isa::template Tile<I / Isa::kWeights + 1, I % Isa::kWeights + 1, W>...};
}
template <typename Isa, typename W>
constexpr auto kTiles =
    TileTable<Isa, W>(std::make_integer_sequence<int, Isa::kRows * Isa::kWeights>());

// The rows [i0, i0 + rows) of x against the weight rows [r0, r0 + weights) (w points at r0's).
template <typename Isa, typename W>
void TileColumn(const float* x, int64_t i0, int64_t rows, const W* w, int64_t r0, int weights,
                int64_t n, int64_t k, const float* bias, float* y) {
  const float* b = bias != nullptr ? bias + r0 : nullptr;
  for (int64_t g0 = 0; g0 < rows; g0 += Isa::kRows) {
    const int g = static_cast<int>(std::min<int64_t>(Isa::kRows, rows - g0));
    const int64_t i = i0 + g0;
    kTiles<Isa, W>[(g - 1) * Isa::kWeights + weights - 1](x + i * k, w, n, k, b, y + i * n + r0);
  }
}

template <typename Isa, typename W>
void LinearTiled(const float* x, int64_t m, const W* w, int64_t n, int64_t k, const float* bias,
                 float* y) {
  const int64_t weight_tiles = (n + Isa::kWeights - 1) / Isa::kWeights;
  for (int64_t i0 = 0; i0 < m; i0 += kRowBlock) {
    const int64_t rows = std::min(kRowBlock, m - i0);
#pragma omp parallel for schedule(static) if (rows * n * k >= (int64_t{1} << 16))
    for (int64_t t = 0; t < weight_tiles; ++t) {
      const int64_t r0 = t * Isa::kWeights;
      const int weights = static_cast<int>(std::min<int64_t>(Isa::kWeights, n - r0));
      const W* wt = w + r0 * k;
      if constexpr (std::is_same_v<W, Half>) {
        if (rows > Isa::kRows) {  // many passes over these fp16 rows: widen them once, into L1
          thread_local std::vector<float> wide;
          wide.resize(static_cast<size_t>(weights) * k);
          HalfToFloatF16c(wt, weights * k, wide.data());
          TileColumn<Isa, float>(x, i0, rows, wide.data(), r0, weights, n, k, bias, y);
          continue;
        }
      }
      TileColumn<Isa>(x, i0, rows, wt, r0, weights, n, k, bias, y);  // widened in registers
    }
  }
}

template <typename W>
using LinearFn = void (*)(const float*, int64_t, const W*, int64_t, int64_t, const float*, float*);

// The tiled kernel of this machine, or null (no AVX2 / FMA / F16C: oneDNN's sgemm instead).
template <typename W>
LinearFn<W> TiledKernel() {
  static const LinearFn<W> kernel = !Cpu().avx2_fma_f16c() ? nullptr
                                    : Cpu().avx512f        ? LinearTiled<Avx512, W>
                                                           : LinearTiled<Avx2, W>;
  return kernel;
}

}  // namespace

bool LinearRowsAreBatchInvariant() { return TiledKernel<Half>() != nullptr; }

absl::Status LinearF32(std::span<const float> x, int64_t m, std::span<const float> w, int64_t n,
                       int64_t k, std::span<const float> bias, std::span<float> y) {
  RETURN_IF_ERROR(CheckShapes("LinearF32", x.size(), m, w.size(), n, k, bias.size(), y.size()));
  if (const LinearFn<float> tiled = TiledKernel<float>(); tiled != nullptr) {
    tiled(x.data(), m, w.data(), n, k, bias.empty() ? nullptr : bias.data(), y.data());
    return absl::OkStatus();
  }
  const float beta = PrepareOutput(bias, m, n, y);
  return Sgemm(x.data(), m, w.data(), n, k, beta, y.data(), n);
}

absl::Status LinearF16(std::span<const float> x, int64_t m, std::span<const Half> w, int64_t n,
                       int64_t k, std::span<const float> bias, std::span<float> y) {
  RETURN_IF_ERROR(CheckShapes("LinearF16", x.size(), m, w.size(), n, k, bias.size(), y.size()));
  if (const LinearFn<Half> tiled = TiledKernel<Half>(); tiled != nullptr) {
    tiled(x.data(), m, w.data(), n, k, bias.empty() ? nullptr : bias.data(), y.data());
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
