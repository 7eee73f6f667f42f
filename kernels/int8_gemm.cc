#include "kernels/int8_gemm.h"

#include <dnnl.h>
#include <immintrin.h>

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace llmint8::kernels {
namespace {

// 127 * 127 * 2^17 < 2^31: no int32 accumulator can overflow up to this depth.
constexpr int64_t kMaxK = int64_t{1} << 17;

absl::Status CheckShapes(size_t a_size, size_t b_size, int64_t m, int64_t n, int64_t k,
                         size_t c_size) {
  if (m <= 0 || n <= 0 || k <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("Int8Gemm: m, n, k must be positive, got m=", m, " n=", n, " k=", k));
  }
  if (k > kMaxK) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Int8Gemm: k=", k, " exceeds ", kMaxK, " (int32 accumulators could overflow); split K"));
  }
  int64_t mk = 0, nk = 0, mn = 0;
  if (__builtin_mul_overflow(m, k, &mk) || __builtin_mul_overflow(n, k, &nk) ||
      __builtin_mul_overflow(m, n, &mn) || a_size != static_cast<size_t>(mk) ||
      b_size != static_cast<size_t>(nk) || c_size != static_cast<size_t>(mn)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Int8Gemm: m=", m, " n=", n, " k=", k, " needs a of m*k, b of n*k and c of m*n; got ",
        a_size, ", ", b_size, ", ", c_size));
  }
  return absl::OkStatus();
}

// oneDNN's s8s8s32 GEMM is exact only where it runs on VNNI (vpdpbusd accumulates straight into
// int32). On plain AVX2 / AVX-512 it uses vpmaddubsw, whose int16 pair sums saturate for large
// values (e.g. 127 * 127 * 2 with its +128 compensation), so those CPUs use our own kernel.
bool OneDnnGemmIsExact() {
  static const bool exact = [] {
    const unsigned isa = static_cast<unsigned>(dnnl_get_effective_cpu_isa());
    constexpr unsigned kAvx512VnniBit = 0x40;  // set in avx512_core_vnni, _bf16, _amx
    return (isa & kAvx512VnniBit) != 0;
  }();
  return exact;
}

// AVX2 fallback: sign-extend int8 to int16 and vpmaddwd into int32 (exact: |pair| <= 2 * 127^2).
// A tile of MR rows of A times NR rows of B keeps MR * NR accumulators in registers.
template <int MR, int NR>
__attribute__((target("avx2"))) void Avx2Tile(const int8_t* a, const int8_t* b, int64_t n,
                                              int64_t k, int32_t* c) {
  __m256i acc[MR][NR];
  for (int i = 0; i < MR; ++i)
    for (int r = 0; r < NR; ++r) acc[i][r] = _mm256_setzero_si256();
  int64_t j = 0;
  for (; j + 16 <= k; j += 16) {
    __m256i av[MR];
    for (int i = 0; i < MR; ++i) {
      av[i] = _mm256_cvtepi8_epi16(
          _mm_loadu_si128(reinterpret_cast<const __m128i*>(a + i * k + j)));
    }
    for (int r = 0; r < NR; ++r) {
      const __m256i bv = _mm256_cvtepi8_epi16(
          _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + r * k + j)));
      for (int i = 0; i < MR; ++i) acc[i][r] = _mm256_add_epi32(acc[i][r], _mm256_madd_epi16(av[i], bv));
    }
  }
  for (int i = 0; i < MR; ++i) {
    for (int r = 0; r < NR; ++r) {
      const __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(acc[i][r]),
                                       _mm256_extracti128_si256(acc[i][r], 1));
      const __m128i s2 = _mm_add_epi32(s4, _mm_unpackhi_epi64(s4, s4));
      const __m128i s1 = _mm_add_epi32(s2, _mm_shuffle_epi32(s2, 1));
      int32_t sum = _mm_cvtsi128_si32(s1);
      for (int64_t t = j; t < k; ++t) sum += int32_t{a[i * k + t]} * int32_t{b[r * k + t]};
      c[i * n + r] = sum;
    }
  }
}

template <int MR>
void Avx2TileN(int nr, const int8_t* a, const int8_t* b, int64_t n, int64_t k, int32_t* c) {
  switch (nr) {
    case 4: return Avx2Tile<MR, 4>(a, b, n, k, c);
    case 3: return Avx2Tile<MR, 3>(a, b, n, k, c);
    case 2: return Avx2Tile<MR, 2>(a, b, n, k, c);
    default: return Avx2Tile<MR, 1>(a, b, n, k, c);
  }
}

void Avx2Gemm(const int8_t* a, const int8_t* b, int64_t m, int64_t n, int64_t k, int32_t* c) {
  constexpr int64_t kMr = 2, kNr = 4;
  // Each thread owns a panel of kNc rows of B (kept in L2) and streams A through it in chunks
  // of kMc rows, so B is read from memory about m / kMc times.
  constexpr int64_t kNc = 64, kMc = 64;
  const int64_t panels = (n + kNc - 1) / kNc;
#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < panels; ++p) {
    const int64_t n0 = p * kNc, n1 = std::min(n, n0 + kNc);
    for (int64_t m0 = 0; m0 < m; m0 += kMc) {
      const int64_t m1 = std::min(m, m0 + kMc);
      for (int64_t r = n0; r < n1; r += kNr) {
        const int nr = static_cast<int>(std::min(kNr, n1 - r));
        int64_t i = m0;
        for (; i + kMr <= m1; i += kMr) Avx2TileN<2>(nr, a + i * k, b + r * k, n, k, c + i * n + r);
        if (i < m1) Avx2TileN<1>(nr, a + i * k, b + r * k, n, k, c + i * n + r);
      }
    }
  }
}

void ScalarGemm(const int8_t* a, const int8_t* b, int64_t m, int64_t n, int64_t k, int32_t* c) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t i = 0; i < m; ++i) {
      int32_t acc = 0;
      for (int64_t j = 0; j < k; ++j) acc += int32_t{a[i * k + j]} * int32_t{b[r * k + j]};
      c[i * n + r] = acc;
    }
  }
}

}  // namespace

absl::Status Int8GemmReference(std::span<const int8_t> a, std::span<const int8_t> b, int64_t m,
                               int64_t n, int64_t k, std::span<int32_t> c) {
  if (auto s = CheckShapes(a.size(), b.size(), m, n, k, c.size()); !s.ok()) return s;
  for (int64_t i = 0; i < m; ++i) {
    const int8_t* arow = a.data() + i * k;
    for (int64_t r = 0; r < n; ++r) {
      const int8_t* brow = b.data() + r * k;
      int32_t acc = 0;
      for (int64_t j = 0; j < k; ++j) acc += int32_t{arow[j]} * int32_t{brow[j]};
      c[i * n + r] = acc;
    }
  }
  return absl::OkStatus();
}

absl::Status Int8Gemm(std::span<const int8_t> a, std::span<const int8_t> b, int64_t m, int64_t n,
                      int64_t k, std::span<int32_t> c) {
  if (auto s = CheckShapes(a.size(), b.size(), m, n, k, c.size()); !s.ok()) return s;
  if (!OneDnnGemmIsExact()) {
    if (__builtin_cpu_supports("avx2")) {
      Avx2Gemm(a.data(), b.data(), m, n, k, c.data());
    } else {
      ScalarGemm(a.data(), b.data(), m, n, k, c.data());
    }
    return absl::OkStatus();
  }
  // oneDNN's BLAS-like API is row-major: C[m, n] = A[m, k] * B[n, k]^T with alpha = 1, beta = 0
  // and zero offsets is a plain int32 accumulation (no float rounding on that path).
  const int32_t zero_offset = 0;
  const dnnl_status_t st =
      dnnl_gemm_s8s8s32('N', 'T', 'F', m, n, k, 1.0f, a.data(), k, 0, b.data(), k, 0, 0.0f,
                        c.data(), n, &zero_offset);
  if (st != dnnl_success) {
    return absl::InternalError(
        absl::StrCat("oneDNN dnnl_gemm_s8s8s32 failed with status ", static_cast<int>(st),
                     " for m=", m, " n=", n, " k=", k));
  }
  return absl::OkStatus();
}

}  // namespace llmint8::kernels
