#include "kernels/int8_gemm.h"

#include <dnnl.h>
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cstdlib>
#include <memory>

#include "absl/strings/str_cat.h"
#include "kernels/cpu_features.h"
#include "kernels/zero_upper.h"

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
    return absl::InvalidArgumentError(absl::StrCat("Int8Gemm: m=", m, " n=", n, " k=", k,
                                                   " needs a of m*k, b of n*k and c of m*n; got ",
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

// AVX2 fallback, decode sizes (small m): sign-extend int8 to int16 and vpmaddwd into int32
// (exact: |pair| <= 2 * 128^2). A tile of MR rows of A times NR rows of B keeps MR * NR
// accumulators in registers and reads both straight from the caller's int8 rows, so B streams
// from memory once.
template <int MR, int NR>
__attribute__((target("avx2"))) void Avx2Tile(const int8_t* a, const int8_t* b, int64_t n,
                                              int64_t k, int32_t* c) {
  const internal::ZeroUpperOnExit zero_upper;
  // (The loops over the accumulators are unrolled so that they stay in registers.)
  __m256i acc[MR][NR];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
    for (int r = 0; r < NR; ++r) acc[i][r] = _mm256_setzero_si256();
  int64_t j = 0;
  for (; j + 16 <= k; j += 16) {
    __m256i av[MR];
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      av[i] =
          _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a + i * k + j)));
    }
#pragma GCC unroll 8
    for (int r = 0; r < NR; ++r) {
      const __m256i bv =
          _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b + r * k + j)));
#pragma GCC unroll 8
      for (int i = 0; i < MR; ++i)
        acc[i][r] = _mm256_add_epi32(acc[i][r], _mm256_madd_epi16(av[i], bv));
    }
  }
  for (int i = 0; i < MR; ++i) {
    for (int r = 0; r < NR; ++r) {
      const __m128i s4 =
          _mm_add_epi32(_mm256_castsi256_si128(acc[i][r]), _mm256_extracti128_si256(acc[i][r], 1));
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
    case 4:
      return Avx2Tile<MR, 4>(a, b, n, k, c);
    case 3:
      return Avx2Tile<MR, 3>(a, b, n, k, c);
    case 2:
      return Avx2Tile<MR, 2>(a, b, n, k, c);
    default:
      return Avx2Tile<MR, 1>(a, b, n, k, c);
  }
}

void Avx2GemmSmallM(const int8_t* a, const int8_t* b, int64_t m, int64_t n, int64_t k, int32_t* c) {
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

// AVX2 fallback, prefill sizes (large m): both operands are widened to int16 once, into layouts
// where one vpmaddwd multiplies a broadcast pair (a[i][2p], a[i][2p+1]) with the same pair of
// 8 rows of B and adds a[i][2p] * b[r][2p] + a[i][2p+1] * b[r][2p+1] into lane r: C[i][r] over
// two k at once, no widening or horizontal sums in the inner loop (exact as above).
//   A panel: kPanelRows rows; per k pair p, kPanelRows int32 words (a[i][2p], a[i][2p+1]).
//   B strip: kStripRows rows; per k pair p, kStripRows int32 words (b[r][2p], b[r][2p+1]).
// Rows past m or n and k past k are packed as zeros, so the kernels need no tails in k.
constexpr int kPanelRows = 6;   // 6 x 16 tile: 12 accumulators + 2 B + 1 A + 1 temp = 16 ymm
constexpr int kStripRows = 16;  // two ymm of 8 int32 lanes
// Blocking (per core: 32 KiB L1d, 512 KiB L2): a B strip of kKc columns (kKc * 64 bytes) stays
// in L1 while all A panels of the m block stream past it from L2 (kMc * kKc * 2 bytes); the
// thread's B block (kNc * kKc * 2 bytes) and its C tile (kMc * kNc * 4 bytes) stay in L2.
constexpr int64_t kKc = 512;  // k columns per block, a multiple of 64
constexpr int64_t kMc = 192;  // m rows per block, a multiple of kPanelRows
constexpr int64_t kNc = 64;   // n rows of B per thread task, a multiple of kStripRows

constexpr int64_t kStripWords = kKc / 2 * kStripRows;  // one packed strip of one k block

int64_t Pairs(int64_t k) { return (k + 1) / 2; }

// Packs all of A (m x k) into ceil(m / kPanelRows) panels of Pairs(k) * kPanelRows words.
void PackA(const int8_t* a, int64_t m, int64_t k, int32_t* out) {
  const int64_t pairs = Pairs(k);
  const int64_t panels = (m + kPanelRows - 1) / kPanelRows;
#pragma omp for schedule(static)
  for (int64_t panel = 0; panel < panels; ++panel) {
    int32_t* dst = out + panel * pairs * kPanelRows;
    for (int i = 0; i < kPanelRows; ++i) {
      const int64_t row = panel * kPanelRows + i;
      const int8_t* src = a + row * k;
      for (int64_t p = 0; p < pairs; ++p) {
        int32_t lo = 0, hi = 0;
        if (row < m) {
          lo = src[2 * p];
          hi = 2 * p + 1 < k ? src[2 * p + 1] : 0;
        }
        dst[p * kPanelRows + i] =
            static_cast<int32_t>(static_cast<uint16_t>(lo) | (static_cast<uint32_t>(hi) << 16));
      }
    }
  }
}

// Transposes an 8 x 8 matrix of int32 held as 8 rows in r[0..7].
__attribute__((target("avx2"), always_inline)) inline void Transpose8x8(__m256i r[8]) {
  __m256i t[8], u[8];
#pragma GCC unroll 4
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_epi32(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_epi32(r[i], r[i + 1]);
  }
#pragma GCC unroll 2
  for (int i = 0; i < 8; i += 4) {
    u[i] = _mm256_unpacklo_epi64(t[i], t[i + 2]);
    u[i + 1] = _mm256_unpackhi_epi64(t[i], t[i + 2]);
    u[i + 2] = _mm256_unpacklo_epi64(t[i + 1], t[i + 3]);
    u[i + 3] = _mm256_unpackhi_epi64(t[i + 1], t[i + 3]);
  }
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i) {
    r[i] = _mm256_permute2x128_si256(u[i], u[i + 4], 0x20);
    r[i + 4] = _mm256_permute2x128_si256(u[i], u[i + 4], 0x31);
  }
}

// Packs 16 columns of 8 rows of B (row stride 64 bytes) as 8 pairs of the 8 rows:
// dst[p * kStripRows + i] = pair p of row i.
__attribute__((target("avx2"), always_inline)) inline void PackBlock8x16(const int8_t* src,
                                                                         int32_t* dst) {
  __m256i rows[8];
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i) {
    rows[i] = _mm256_cvtepi8_epi16(_mm_load_si128(reinterpret_cast<const __m128i*>(src + 64 * i)));
  }
  Transpose8x8(rows);
#pragma GCC unroll 8
  for (int p = 0; p < 8; ++p) {
    _mm256_store_si256(reinterpret_cast<__m256i*>(dst + p * kStripRows), rows[p]);
  }
}

// Packs rows [r0, r0 + kStripRows) x columns [k0, k0 + kc) of B into one strip of
// RoundUp(kc, 64) / 2 pairs. Each 64-byte piece of the 16 rows is first copied to a contiguous
// stage: the rows are k bytes apart, often a multiple of 4 KiB, so all 16 would fall into one
// 8-way L1 set and evict each other between the 16-byte loads of the transpose. The copy also
// zero-pads rows past n and columns past k, and prefetches a few lines ahead in each row (the
// rows are too short and too many for the hardware prefetchers to pick up).
__attribute__((target("avx2"))) void PackBStrip(const int8_t* b, int64_t n, int64_t k, int64_t r0,
                                                int64_t k0, int64_t kc, int32_t* out) {
  const internal::ZeroUpperOnExit zero_upper;
  constexpr int64_t kPrefetchAhead = 4 * 64;
  alignas(64) int8_t stage[kStripRows][64];
  for (int64_t j = k0; j < k0 + kc; j += 64) {
    const int64_t width = std::min<int64_t>(64, k - j);
    for (int i = 0; i < kStripRows; ++i) {
      if (r0 + i >= n) {
        std::fill_n(stage[i], 64, 0);
        continue;
      }
      const int8_t* row = b + (r0 + i) * k + j;
      if (j + kPrefetchAhead + 64 <= k) _mm_prefetch(row + kPrefetchAhead, _MM_HINT_T0);
      if (width == 64) {
        const __m256i lo = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row));
        const __m256i hi = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + 32));
        _mm256_store_si256(reinterpret_cast<__m256i*>(stage[i]), lo);
        _mm256_store_si256(reinterpret_cast<__m256i*>(stage[i] + 32), hi);
      } else {
        std::fill_n(std::copy(row, row + width, stage[i]), 64 - width, 0);
      }
    }
#pragma GCC unroll 4
    for (int q = 0; q < 4; ++q) {
      int32_t* dst = out + ((j - k0) / 2 + 8 * q) * kStripRows;
      PackBlock8x16(&stage[0][16 * q], dst);
      PackBlock8x16(&stage[8][16 * q], dst + 8);
    }
  }
}

// C[0 .. rows) x [0 .. cols) (+)= A panel x B strip over `pairs` k pairs. MR <= kPanelRows rows
// are computed; the first k block stores, later ones accumulate.
template <int MR>
__attribute__((target("avx2"))) void PackedTile(const int32_t* ap, const int32_t* bp, int64_t pairs,
                                                bool accumulate, int cols, int32_t* c,
                                                int64_t ldc) {
  const internal::ZeroUpperOnExit zero_upper;
  __m256i acc[MR][2];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) acc[i][0] = acc[i][1] = _mm256_setzero_si256();
  for (int64_t p = 0; p < pairs; ++p) {
    const __m256i b0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(bp + p * kStripRows));
    const __m256i b1 = _mm256_load_si256(reinterpret_cast<const __m256i*>(bp + p * kStripRows + 8));
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      const __m256i av = _mm256_set1_epi32(ap[p * kPanelRows + i]);
      acc[i][0] = _mm256_add_epi32(acc[i][0], _mm256_madd_epi16(av, b0));
      acc[i][1] = _mm256_add_epi32(acc[i][1], _mm256_madd_epi16(av, b1));
    }
  }
  // Full tiles go straight to C; edge tiles (cols < kStripRows) through a buffer. The loops over
  // the accumulators are unrolled so that they stay in registers.
  alignas(32) int32_t tile[MR][kStripRows];
  const bool full = cols == kStripRows;
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 2
    for (int h = 0; h < 2; ++h) {
      auto* dst = reinterpret_cast<__m256i*>(full ? c + i * ldc + 8 * h : &tile[i][8 * h]);
      __m256i v = acc[i][h];
      if (full && accumulate) v = _mm256_add_epi32(v, _mm256_loadu_si256(dst));
      _mm256_storeu_si256(dst, v);
    }
  }
  if (full) return;
  for (int i = 0; i < MR; ++i) {
    for (int r = 0; r < cols; ++r) c[i * ldc + r] = (accumulate ? c[i * ldc + r] : 0) + tile[i][r];
  }
}

void PackedTileRows(int rows, const int32_t* ap, const int32_t* bp, int64_t pairs, bool accumulate,
                    int cols, int32_t* c, int64_t ldc) {
  switch (rows) {
    case 6:
      return PackedTile<6>(ap, bp, pairs, accumulate, cols, c, ldc);
    case 5:
      return PackedTile<5>(ap, bp, pairs, accumulate, cols, c, ldc);
    case 4:
      return PackedTile<4>(ap, bp, pairs, accumulate, cols, c, ldc);
    case 3:
      return PackedTile<3>(ap, bp, pairs, accumulate, cols, c, ldc);
    case 2:
      return PackedTile<2>(ap, bp, pairs, accumulate, cols, c, ldc);
    default:
      return PackedTile<1>(ap, bp, pairs, accumulate, cols, c, ldc);
  }
}
static_assert(kPanelRows == 6, "PackedTileRows dispatches up to 6 rows");

// One thread task: C[:, n0 .. n1) from packed A and B rows [n0, n1), k block by k block.
// `bbuf` holds kNc / kStripRows strips of kKc / 2 pairs.
void PackedGemmColumns(const int32_t* apack, const int8_t* b, int64_t m, int64_t n, int64_t k,
                       int64_t n0, int64_t n1, int32_t* bbuf, int32_t* c) {
  const int64_t a_panel_words = Pairs(k) * kPanelRows;
  for (int64_t k0 = 0; k0 < k; k0 += kKc) {
    const int64_t kc = std::min(kKc, k - k0), pairs = Pairs(kc);
    for (int64_t r = n0; r < n1; r += kStripRows) {
      PackBStrip(b, n, k, r, k0, kc, bbuf + (r - n0) / kStripRows * kStripWords);
    }
    for (int64_t m0 = 0; m0 < m; m0 += kMc) {
      const int64_t m1 = std::min(m, m0 + kMc);
      for (int64_t r = n0; r < n1; r += kStripRows) {
        const int32_t* bp = bbuf + (r - n0) / kStripRows * kStripWords;
        const int cols = static_cast<int>(std::min<int64_t>(kStripRows, n1 - r));
        for (int64_t i = m0; i < m1; i += kPanelRows) {
          const int32_t* ap = apack + i / kPanelRows * a_panel_words + k0 / 2 * kPanelRows;
          const int rows = static_cast<int>(std::min<int64_t>(kPanelRows, m1 - i));
          PackedTileRows(rows, ap, bp, pairs, k0 > 0, cols, c + i * n + r, n);
        }
      }
    }
  }
}

struct FreeDeleter {
  void operator()(int32_t* p) const { std::free(p); }
};
using AlignedWords = std::unique_ptr<int32_t[], FreeDeleter>;

// 64-byte aligned (whole cache lines for the packed operands), uninitialized; null when the
// memory is not there.
AlignedWords AllocateAlignedWords(int64_t count) {
  const size_t bytes = (static_cast<size_t>(count) * sizeof(int32_t) + 63) / 64 * 64;
  return AlignedWords(static_cast<int32_t*>(std::aligned_alloc(64, bytes)));
}

absl::Status Avx2GemmLargeM(const int8_t* a, const int8_t* b, int64_t m, int64_t n, int64_t k,
                            int32_t* c) {
  const int64_t panels = (m + kPanelRows - 1) / kPanelRows;
  const int threads = omp_get_max_threads();
  // Both buffers are taken before the parallel region: nothing inside it may fail.
  const AlignedWords apack = AllocateAlignedWords(panels * kPanelRows * Pairs(k));
  constexpr int64_t kBlockWords = kNc / kStripRows * kStripWords;  // one thread's B block
  const AlignedWords bbufs = AllocateAlignedWords(threads * kBlockWords);
  if (apack == nullptr || bbufs == nullptr) {
    return absl::ResourceExhaustedError(
        absl::StrCat("Int8Gemm: no memory for the packed operands (m=", m, " k=", k, ": ",
                     panels * kPanelRows * Pairs(k) * 4 + threads * kBlockWords * 4, " bytes)"));
  }
  const int64_t tasks = (n + kNc - 1) / kNc;
#pragma omp parallel num_threads(threads)
  {
    PackA(a, m, k, apack.get());  // an omp for: the threads share the packing, then a barrier
    int32_t* bbuf = bbufs.get() + omp_get_thread_num() * kBlockWords;
#pragma omp for schedule(static)
    for (int64_t t = 0; t < tasks; ++t) {
      PackedGemmColumns(apack.get(), b, m, n, k, t * kNc, std::min(n, (t + 1) * kNc), bbuf, c);
    }
  }
  return absl::OkStatus();
}

// Below this m the packing does not pay: each B element would be widened and transposed for
// only a few rows of A. (One-off timings by hand with this constant changed, not a benchmark in
// the repo: 2-core Zen 3, one thread, 4096 x 4096: equal at m = 6, the packed kernel 10% faster
// at m = 8, 1.4x at m = 16 and 2x at m = 128.)
constexpr int64_t kLargeM = 8;

absl::Status Avx2Gemm(const int8_t* a, const int8_t* b, int64_t m, int64_t n, int64_t k,
                      int32_t* c) {
  if (m >= kLargeM) return Avx2GemmLargeM(a, b, m, n, k, c);
  Avx2GemmSmallM(a, b, m, n, k, c);
  return absl::OkStatus();
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
    if (Cpu().avx2) return Avx2Gemm(a.data(), b.data(), m, n, k, c.data());
    ScalarGemm(a.data(), b.data(), m, n, k, c.data());
    return absl::OkStatus();
  }
  // oneDNN's BLAS-like API is row-major: C[m, n] = A[m, k] * B[n, k]^T with alpha = 1, beta = 0
  // and zero offsets is a plain int32 accumulation (no float rounding on that path).
  const int32_t zero_offset = 0;
  const dnnl_status_t st = dnnl_gemm_s8s8s32('N', 'T', 'F', m, n, k, 1.0f, a.data(), k, 0, b.data(),
                                             k, 0, 0.0f, c.data(), n, &zero_offset);
  if (st != dnnl_success) {
    return absl::Status(
        st == dnnl_out_of_memory ? absl::StatusCode::kResourceExhausted
                                 : absl::StatusCode::kInternal,
        absl::StrCat("oneDNN dnnl_gemm_s8s8s32 failed with status ", static_cast<int>(st),
                     " for m=", m, " n=", n, " k=", k));
  }
  return absl::OkStatus();
}

}  // namespace llmint8::kernels
