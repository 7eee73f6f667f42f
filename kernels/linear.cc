#include "kernels/linear.h"

#include <dnnl.h>
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "kernels/cpu_features.h"
#include "kernels/zero_upper.h"

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
        op, ": m=", m, " n=", n, " k=", k, " needs x of m*k, wt of k*n, bias of n or none, ",
        "y of m*n; got ", x_size, ", ", w_size, ", ", bias_size, ", ", y_size));
  }
  return absl::OkStatus();
}

// y[:, :] = x[:, j0:j0+kb] * wt_block + beta * y; wt_block is [kb, n] row-major.
absl::Status Sgemm(const float* x, int64_t m, int64_t ldx, const float* wt_block, int64_t n,
                   int64_t kb, float beta, float* y) {
  const dnnl_status_t st = dnnl_sgemm('N', 'N', m, n, kb, 1.0f, x, ldx, wt_block, n, beta, y, n);
  if (st != dnnl_success) {
    // Out of memory (its packing buffers) is the step's size, not a broken library.
    return absl::Status(st == dnnl_out_of_memory ? absl::StatusCode::kResourceExhausted
                                                 : absl::StatusCode::kInternal,
                        absl::StrCat("oneDNN dnnl_sgemm failed with status ", static_cast<int>(st),
                                     " for m=", m, " n=", n, " k=", kb));
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
  const internal::ZeroUpperOnExit zero_upper;
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

// The linear on CPUs with AVX2, FMA and F16C, for any number of rows. Output (i, c) is one FMA
// chain over j in order, acc = fma(x[i][j], wt[j][c], acc) from 0, then + bias[c]: the vector
// lanes are columns of y, so there is no horizontal sum, and a tile of y that a pass leaves in
// memory and the next reloads keeps its exact values. Every tiling, block size and instruction set
// then gives every output the same bits, whatever m is (the batch invariance of linear.h).
//
// y is cut into strips of Isa::kVectors registers of columns (64 columns with AVX-512, 16 with
// AVX2); a tile holds G <= Isa::kRows rows of a strip in registers, each weight vector serving
// G rows and each broadcast x value the strip. Two ways through the weights, the same bits:
//   streamed (few rows, decode): blocks of kStreamRowsPerTile rows of wt per tile of x rows
//     (8 for one row, up to 32), each thread walking its columns of them left to right (that
//     many sequential streams), fp16 widened in registers: the weight costs its 2 bytes/param
//     of memory traffic;
//   widened (many rows, prefill): each strip's block of kWideRows rows of wt widened once into
//     a contiguous fp32 copy in L1, then every row tile of x passes over it.

constexpr int64_t kStreamRowsPerTile = 8;
constexpr int64_t kMaxStreamRows = 32;
constexpr int64_t kWideRows = 128;
// From this many rows of x the widened copy pays for itself (bench/README.md).
constexpr int64_t kWidenFromRows = 24;

struct Avx2 {
  static constexpr int kLanes = 8;
  static constexpr int kVectors = 2;  // a strip: 16 columns
  static constexpr int kRows = 6;     // 6 x 2 accumulators + 2 weight registers + x: 15 of 16
  // Rows [0, G) of `strips` strips side by side (w, y and bias advance a strip each).
  template <int G, typename W>
  __attribute__((target("avx2,fma,f16c"))) static void Tile(const float* x, int64_t ldx, const W* w,
                                                            int64_t ldw, int64_t len, float* y,
                                                            int64_t ldy, bool first,
                                                            const float* bias, int64_t strips) {
    const internal::ZeroUpperOnExit zero_upper;
    constexpr int V = kVectors, kWidth = V * kLanes;
    for (int64_t s = 0; s < strips; ++s) {
      const W* ws = w + s * kWidth;
      float* ys = y + s * kWidth;
      __m256 acc[G][V];
#pragma GCC unroll 8
      for (int g = 0; g < G; ++g)
#pragma GCC unroll 8
        for (int v = 0; v < V; ++v) {
          acc[g][v] = first ? _mm256_setzero_ps() : _mm256_loadu_ps(ys + g * ldy + v * kLanes);
        }
      for (int64_t j = 0; j < len; ++j) {
        __m256 wv[V];
#pragma GCC unroll 8
        for (int v = 0; v < V; ++v) {
          const W* p = ws + j * ldw + v * kLanes;
          if constexpr (std::is_same_v<W, Half>) {
            wv[v] = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
          } else {
            wv[v] = _mm256_loadu_ps(p);
          }
        }
#pragma GCC unroll 8
        for (int g = 0; g < G; ++g) {
          const __m256 xv = _mm256_broadcast_ss(x + g * ldx + j);
#pragma GCC unroll 8
          for (int v = 0; v < V; ++v) acc[g][v] = _mm256_fmadd_ps(xv, wv[v], acc[g][v]);
        }
      }
#pragma GCC unroll 8
      for (int g = 0; g < G; ++g)
#pragma GCC unroll 8
        for (int v = 0; v < V; ++v) {
          const __m256 out =
              bias != nullptr
                  ? _mm256_add_ps(acc[g][v], _mm256_loadu_ps(bias + s * kWidth + v * kLanes))
                  : acc[g][v];
          _mm256_storeu_ps(ys + g * ldy + v * kLanes, out);
        }
    }
  }
};

struct Avx512 {
  static constexpr int kLanes = 16;
  static constexpr int kVectors = 4;  // a strip: 64 columns
  static constexpr int kRows = 6;     // 6 x 4 accumulators + 4 weight registers + x: 29 of 32
  template <int G, typename W>
  __attribute__((target("avx512f,avx2,fma,f16c"))) static void Tile(
      const float* x, int64_t ldx, const W* w, int64_t ldw, int64_t len, float* y, int64_t ldy,
      bool first, const float* bias, int64_t strips) {
    const internal::ZeroUpperOnExit zero_upper;
    constexpr int V = kVectors, kWidth = V * kLanes;
    for (int64_t s = 0; s < strips; ++s) {
      const W* ws = w + s * kWidth;
      float* ys = y + s * kWidth;
      __m512 acc[G][V];
#pragma GCC unroll 8
      for (int g = 0; g < G; ++g)
#pragma GCC unroll 8
        for (int v = 0; v < V; ++v) {
          acc[g][v] = first ? _mm512_setzero_ps() : _mm512_loadu_ps(ys + g * ldy + v * kLanes);
        }
      for (int64_t j = 0; j < len; ++j) {
        __m512 wv[V];
#pragma GCC unroll 8
        for (int v = 0; v < V; ++v) {
          const W* p = ws + j * ldw + v * kLanes;
          if constexpr (std::is_same_v<W, Half>) {
            // Masked: GCC 12's unmasked form trips -Wuninitialized in its own header.
            wv[v] = _mm512_maskz_cvtph_ps(0xffff,
                                          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
          } else {
            wv[v] = _mm512_loadu_ps(p);
          }
        }
#pragma GCC unroll 8
        for (int g = 0; g < G; ++g) {
          const __m512 xv = _mm512_set1_ps(x[g * ldx + j]);
#pragma GCC unroll 8
          for (int v = 0; v < V; ++v) acc[g][v] = _mm512_fmadd_ps(xv, wv[v], acc[g][v]);
        }
      }
#pragma GCC unroll 8
      for (int g = 0; g < G; ++g)
#pragma GCC unroll 8
        for (int v = 0; v < V; ++v) {
          const __m512 out =
              bias != nullptr
                  ? _mm512_add_ps(acc[g][v], _mm512_loadu_ps(bias + s * kWidth + v * kLanes))
                  : acc[g][v];
          _mm512_storeu_ps(ys + g * ldy + v * kLanes, out);
        }
    }
  }
};

template <typename W>
using TileFn = void (*)(const float*, int64_t, const W*, int64_t, int64_t, float*, int64_t, bool,
                        const float*, int64_t);

// Isa::Tile<G, W> at [G - 1].
template <typename Isa, typename W, int... I>
constexpr std::array<TileFn<W>, sizeof...(I)> TileTable(std::integer_sequence<int, I...>) {
  return {&Isa::template Tile<I + 1, W>...};
}
template <typename Isa, typename W>
constexpr auto kTiles = TileTable<Isa, W>(std::make_integer_sequence<int, Isa::kRows>());

// Rows [0, m) of `strips` whole strips from column c0, wt's rows [j0, j0 + len) at w (ldw
// apart).
template <typename Isa, typename W>
void TileRows(const float* x, int64_t m, int64_t k, int64_t j0, const W* w, int64_t ldw,
              int64_t len, float* y, int64_t n, int64_t c0, const float* bias, int64_t strips) {
  const bool first = j0 == 0;
  const float* b = bias != nullptr && j0 + len == k ? bias + c0 : nullptr;
  for (int64_t i0 = 0; i0 < m; i0 += Isa::kRows) {
    const int g = static_cast<int>(std::min<int64_t>(Isa::kRows, m - i0));
    kTiles<Isa, W>[g - 1](x + i0 * k + j0, k, w, ldw, len, y + i0 * n + c0, n, first, b, strips);
  }
}

// wt's rows [j0, j0 + len), columns [c0, c0 + cols), as rows of `width` C values (zero past
// cols): widened to fp32 (C = float) or copied as they are (C = W).
template <typename W, typename C>
void CopyBlock(const W* wt, int64_t n, int64_t j0, int64_t len, int64_t c0, int64_t cols,
               int64_t width, C* out) {
  for (int64_t j = 0; j < len; ++j) {
    const W* src = wt + (j0 + j) * n + c0;
    C* dst = out + j * width;
    if constexpr (std::is_same_v<W, C>) {
      std::memcpy(dst, src, static_cast<size_t>(cols) * sizeof(C));
    } else {
      HalfToFloatF16c(src, cols, dst);
    }
    std::fill(dst + cols, dst + width, C{});  // +0 (Half{} is its bits)
  }
}

// The strip at column c0 of `cols` <= its width, through copies of its weight in blocks of
// `block_rows` rows: widened once for many rows of x (C = float), or, for the last, partial
// strip of few rows, copied as they are into a zero-padded strip (C = W). A partial strip
// computes a zero-padded copy of its columns of y.
template <typename Isa, typename W, typename C>
void CopiedStrip(const float* x, int64_t m, const W* wt, int64_t n, int64_t k, const float* bias,
                 float* y, int64_t c0, int64_t cols, int64_t block_rows) {
  constexpr int64_t kWidth = Isa::kLanes * Isa::kVectors;
  thread_local std::vector<C> wide;
  thread_local std::vector<float> padded_y, padded_bias;
  wide.resize(block_rows * kWidth);
  float* out = y;
  int64_t ldy = n, col = c0;
  const float* b = bias;
  if (cols < kWidth) {  // y and bias columns past n do not exist: work on padded copies
    padded_y.assign(static_cast<size_t>(m * kWidth), 0.0f);
    out = padded_y.data(), ldy = kWidth, col = 0;
    if (bias != nullptr) {
      padded_bias.assign(kWidth, 0.0f);
      std::copy(bias + c0, bias + c0 + cols, padded_bias.begin());
      b = padded_bias.data();
    }
  }
  for (int64_t j0 = 0; j0 < k; j0 += block_rows) {
    const int64_t len = std::min(block_rows, k - j0);
    CopyBlock(wt, n, j0, len, c0, cols, kWidth, wide.data());
    TileRows<Isa, C>(x, m, k, j0, wide.data(), kWidth, len, out, ldy, col, b, 1);
  }
  if (cols < kWidth) {
    for (int64_t i = 0; i < m; ++i) {
      std::copy(out + i * kWidth, out + i * kWidth + cols, y + i * n + c0);
    }
  }
}

// Rows of wt per streamed block: fewer streams for one tile of x rows (the prefetchers keep
// up); longer blocks for more tiles (each reloads its part of y once a block).
template <typename Isa>
int64_t StreamBlockRows(int64_t m) {
  const int64_t tiles = (m + Isa::kRows - 1) / Isa::kRows;
  return std::min(kMaxStreamRows, kStreamRowsPerTile * tiles);
}

// Whole strips [s0, s1), streaming wt in blocks of rows, widened in registers.
template <typename Isa, typename W>
void StreamedStrips(const float* x, int64_t m, const W* wt, int64_t n, int64_t k, const float* bias,
                    float* y, int64_t s0, int64_t s1) {
  constexpr int64_t kWidth = Isa::kLanes * Isa::kVectors;
  const int64_t block = StreamBlockRows<Isa>(m);
  for (int64_t j0 = 0; j0 < k; j0 += block) {
    const int64_t len = std::min(block, k - j0);
    TileRows<Isa, W>(x, m, k, j0, wt + j0 * n + s0 * kWidth, n, len, y, n, s0 * kWidth, bias,
                     s1 - s0);
  }
}

template <typename Isa, typename W>
void LinearStrips(const float* x, int64_t m, const W* wt, int64_t n, int64_t k, const float* bias,
                  float* y) {
  constexpr int64_t kWidth = Isa::kLanes * Isa::kVectors;
  const int64_t strips = (n + kWidth - 1) / kWidth;
  const int64_t whole = n / kWidth;
  const bool widen = m >= kWidenFromRows;
  // Each thread takes a contiguous range of strips (its columns of every row of wt).
#pragma omp parallel if (m * n * k >= (int64_t{1} << 16))
  {
    const int64_t parts = omp_get_num_threads(), part = omp_get_thread_num();
    const int64_t s0 = strips * part / parts, s1 = strips * (part + 1) / parts;
    const int64_t s1_whole = std::min(s1, whole);
    if (widen) {
      for (int64_t s = s0; s < s1_whole; ++s) {
        CopiedStrip<Isa, W, float>(x, m, wt, n, k, bias, y, s * kWidth, kWidth, kWideRows);
      }
    } else if (s0 < s1_whole) {
      StreamedStrips<Isa>(x, m, wt, n, k, bias, y, s0, s1_whole);
    }
    if (s1 > whole && s0 < s1) {  // the partial strip, last of the last range
      const int64_t c0 = whole * kWidth;
      if (widen) {
        CopiedStrip<Isa, W, float>(x, m, wt, n, k, bias, y, c0, n - c0, kWideRows);
      } else {
        CopiedStrip<Isa, W, W>(x, m, wt, n, k, bias, y, c0, n - c0, StreamBlockRows<Isa>(m));
      }
    }
  }
}

template <typename W>
using LinearFn = void (*)(const float*, int64_t, const W*, int64_t, int64_t, const float*, float*);

// The strip kernel of this machine, or null (no AVX2 / FMA / F16C: oneDNN's sgemm instead).
template <typename W>
LinearFn<W> StripKernel() {
  static const LinearFn<W> kernel = !Cpu().avx2_fma_f16c() ? nullptr
                                    : Cpu().avx512f        ? LinearStrips<Avx512, W>
                                                           : LinearStrips<Avx2, W>;
  return kernel;
}

template <typename T>
absl::Status Transpose(std::span<const T> w, int64_t rows, int64_t k, int64_t c0, int64_t n,
                       std::span<T> wt) {
  int64_t rk = 0, kn = 0;
  if (rows < 0 || k < 0 || c0 < 0 || c0 > n - rows || __builtin_mul_overflow(rows, k, &rk) ||
      __builtin_mul_overflow(k, n, &kn) || w.size() != static_cast<size_t>(rk) ||
      wt.size() != static_cast<size_t>(kn)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "TransposeWeight: ", rows, " rows of ", k, " into columns from ", c0, " of [", k, ", ", n,
        "] need w of rows*k and wt of k*n inside it, got ", w.size(), " and ", wt.size()));
  }
  constexpr int64_t kBlock = 32;  // a 32 x 32 tile of each side stays in L1
  for (int64_t r0 = 0; r0 < rows; r0 += kBlock) {
    for (int64_t j0 = 0; j0 < k; j0 += kBlock) {
      const int64_t r1 = std::min(rows, r0 + kBlock), j1 = std::min(k, j0 + kBlock);
      for (int64_t j = j0; j < j1; ++j) {
        T* out = wt.data() + j * n + c0;
        for (int64_t r = r0; r < r1; ++r) out[r] = w[r * k + j];
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace

bool LinearRowsAreBatchInvariant() { return StripKernel<Half>() != nullptr; }

absl::Status TransposeWeight(std::span<const Half> w, int64_t n, int64_t k, std::span<Half> wt) {
  return Transpose(w, n, k, 0, n, wt);
}
absl::Status TransposeWeight(std::span<const float> w, int64_t n, int64_t k, std::span<float> wt) {
  return Transpose(w, n, k, 0, n, wt);
}
absl::Status TransposeWeightRows(std::span<const Half> w, int64_t rows, int64_t k, int64_t c0,
                                 int64_t n, std::span<Half> wt) {
  return Transpose(w, rows, k, c0, n, wt);
}
absl::Status TransposeWeightRows(std::span<const float> w, int64_t rows, int64_t k, int64_t c0,
                                 int64_t n, std::span<float> wt) {
  return Transpose(w, rows, k, c0, n, wt);
}

absl::Status LinearF32(std::span<const float> x, int64_t m, std::span<const float> wt, int64_t n,
                       int64_t k, std::span<const float> bias, std::span<float> y) {
  RETURN_IF_ERROR(CheckShapes("LinearF32", x.size(), m, wt.size(), n, k, bias.size(), y.size()));
  if (const LinearFn<float> strips = StripKernel<float>(); strips != nullptr) {
    strips(x.data(), m, wt.data(), n, k, bias.empty() ? nullptr : bias.data(), y.data());
    return absl::OkStatus();
  }
  const float beta = PrepareOutput(bias, m, n, y);
  return Sgemm(x.data(), m, k, wt.data(), n, k, beta, y.data());
}

absl::Status LinearF16(std::span<const float> x, int64_t m, std::span<const Half> wt, int64_t n,
                       int64_t k, std::span<const float> bias, std::span<float> y) {
  RETURN_IF_ERROR(CheckShapes("LinearF16", x.size(), m, wt.size(), n, k, bias.size(), y.size()));
  if (const LinearFn<Half> strips = StripKernel<Half>(); strips != nullptr) {
    strips(x.data(), m, wt.data(), n, k, bias.empty() ? nullptr : bias.data(), y.data());
    return absl::OkStatus();
  }
  float beta = PrepareOutput(bias, m, n, y);
  const int64_t rows_per_block = std::clamp<int64_t>(kF16BlockValues / n, 1, k);
  // One buffer per thread, kept across calls (no allocation per call in steady state).
  thread_local std::vector<float> block;
  block.resize(rows_per_block * n);
  for (int64_t j0 = 0; j0 < k; j0 += rows_per_block) {
    const int64_t kb = std::min(rows_per_block, k - j0);
    HalfToFloatBlock(wt.data() + j0 * n, kb * n, block.data());
    RETURN_IF_ERROR(Sgemm(x.data() + j0, m, k, block.data(), n, kb, beta, y.data()));
    beta = 1.0f;  // the next block adds to this one's product
  }
  return absl::OkStatus();
}

}  // namespace llmint8::kernels
