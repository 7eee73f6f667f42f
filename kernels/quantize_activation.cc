#include "kernels/quantize_activation.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "common/grow_to.h"
#include "kernels/avx2_sum.h"
#include "kernels/cpu_features.h"
#include "kernels/zero_upper.h"

namespace llmint8::kernels {
namespace {

// Whether x is quantized in int8 (|x| < t) rather than carried in the fp outlier product.
// False for |x| >= t and for NaN and +-Inf alike. With t == 0 nothing is an outlier.
bool IsInlier(float x, float threshold) { return threshold == 0.0f || std::fabs(x) < threshold; }

// The three loops over a row, in plain C++ (the reference) and with AVX2 (the same results
// bit for bit: max is exact, and the rounding below is round-half-away computed exactly).
struct RowLoops {
  // is_outlier[j] |= x[j] is an outlier (t > 0).
  void (*mark_outliers)(const float* x, int64_t k, float t, uint8_t* is_outlier);
  // The absmax of the row's inliers; *finite = false when one of them is not finite (t == 0).
  float (*inlier_absmax)(const float* x, int64_t k, float t, bool* finite);
  // q[j] = QuantizeToInt8(x[j], scale) for inliers, 0 for outliers; `scale` is finite.
  void (*quantize)(const float* x, int64_t k, float t, float scale, int8_t* q);
};

void MarkOutliersPlain(const float* x, int64_t k, float t, uint8_t* is_outlier) {
  for (int64_t j = 0; j < k; ++j) is_outlier[j] |= !IsInlier(x[j], t);
}

float InlierAbsmaxPlain(const float* x, int64_t k, float t, bool* finite) {
  float amax = 0.0f;
  for (int64_t j = 0; j < k; ++j) {
    if (!IsInlier(x[j], t)) continue;
    *finite &= std::isfinite(x[j]);
    amax = std::max(amax, std::fabs(x[j]));
  }
  return amax;
}

void QuantizePlain(const float* x, int64_t k, float t, float scale, int8_t* q) {
  for (int64_t j = 0; j < k; ++j) q[j] = IsInlier(x[j], t) ? QuantizeToInt8(x[j], scale) : 0;
}

// All-ones lanes where |x| < t (ordered: NaN is not), or everywhere when t == 0.
__attribute__((target("avx2"), always_inline)) inline __m256 InlierMask(__m256 ax, __m256 t,
                                                                        bool all) {
  return all ? _mm256_castsi256_ps(_mm256_set1_epi32(-1)) : _mm256_cmp_ps(ax, t, _CMP_LT_OQ);
}

__attribute__((target("avx2"), always_inline)) inline __m256 Abs(__m256 x) {
  return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), x);
}

__attribute__((target("avx2"))) void MarkOutliersAvx2(const float* x, int64_t k, float t,
                                                      uint8_t* is_outlier) {
  const internal::ZeroUpperOnExit zero_upper;
  const __m256 tv = _mm256_set1_ps(t);
  int64_t j = 0;
  for (; j + 8 <= k; j += 8) {
    const __m256 inlier = _mm256_cmp_ps(Abs(_mm256_loadu_ps(x + j)), tv, _CMP_LT_OQ);
    unsigned bits = ~static_cast<unsigned>(_mm256_movemask_ps(inlier)) & 0xffu;
    while (bits != 0) {  // outliers are rare
      is_outlier[j + __builtin_ctz(bits)] = 1;
      bits &= bits - 1;
    }
  }
  MarkOutliersPlain(x + j, k - j, t, is_outlier + j);
}

__attribute__((target("avx2"))) float InlierAbsmaxAvx2(const float* x, int64_t k, float t,
                                                       bool* finite) {
  const internal::ZeroUpperOnExit zero_upper;
  const bool all = t == 0.0f;
  const __m256 tv = _mm256_set1_ps(t);
  const __m256 max_finite = _mm256_set1_ps(std::numeric_limits<float>::max());
  __m256 amax = _mm256_setzero_ps();
  __m256 not_finite = _mm256_setzero_ps();
  int64_t j = 0;
  for (; j + 8 <= k; j += 8) {
    const __m256 ax = Abs(_mm256_loadu_ps(x + j));
    const __m256 inlier = InlierMask(ax, tv, all);
    // Outlier lanes (NaN included) become +0, which max ignores.
    amax = _mm256_max_ps(amax, _mm256_and_ps(ax, inlier));
    // An inlier that is NaN or infinite is not <= FLT_MAX.
    not_finite = _mm256_or_ps(not_finite,
                              _mm256_andnot_ps(_mm256_cmp_ps(ax, max_finite, _CMP_LE_OQ), inlier));
  }
  if (_mm256_movemask_ps(not_finite) != 0) *finite = false;
  // The lanes hold no NaN (masked to +0 above).
  return std::max(internal::HorizontalMax(amax), InlierAbsmaxPlain(x + j, k - j, t, finite));
}

__attribute__((target("avx2"))) void QuantizeAvx2(const float* x, int64_t k, float t, float scale,
                                                  int8_t* q) {
  const internal::ZeroUpperOnExit zero_upper;
  const bool all = t == 0.0f;
  const __m256 tv = _mm256_set1_ps(t), sv = _mm256_set1_ps(scale);
  const __m256 half = _mm256_set1_ps(0.5f), one = _mm256_set1_ps(1.0f);
  const __m256 sign = _mm256_set1_ps(-0.0f);
  const __m256 lo = _mm256_set1_ps(-127.0f), hi = _mm256_set1_ps(127.0f);
  int64_t j = 0;
  for (; j + 8 <= k; j += 8) {
    const __m256 xv = _mm256_loadu_ps(x + j);
    const __m256 inlier = InlierMask(Abs(xv), tv, all);
    // round_half_away(v): trunc(v), plus sign(v) when the dropped fraction (exact) is >= 0.5.
    const __m256 v = _mm256_mul_ps(xv, sv);
    const __m256 tr = _mm256_round_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    const __m256 up = _mm256_cmp_ps(Abs(_mm256_sub_ps(v, tr)), half, _CMP_GE_OQ);
    const __m256 step = _mm256_and_ps(up, _mm256_or_ps(_mm256_and_ps(v, sign), one));
    __m256 r = _mm256_min_ps(_mm256_max_ps(_mm256_add_ps(tr, step), lo), hi);
    r = _mm256_and_ps(r, inlier);  // outliers (NaN, Inf included) become 0
    const __m256i i32 = _mm256_cvtps_epi32(r);
    const __m128i i16 =
        _mm_packs_epi32(_mm256_castsi256_si128(i32), _mm256_extracti128_si256(i32, 1));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(q + j), _mm_packs_epi16(i16, i16));
  }
  QuantizePlain(x + j, k - j, t, scale, q + j);
}

constexpr RowLoops kPlainLoops = {MarkOutliersPlain, InlierAbsmaxPlain, QuantizePlain};

const RowLoops& FastLoops() {
  static const RowLoops loops =
      Cpu().avx2 ? RowLoops{MarkOutliersAvx2, InlierAbsmaxAvx2, QuantizeAvx2} : kPlainLoops;
  return loops;
}

absl::Status Quantize(const RowLoops& loops, std::span<const float> x, int64_t m, int64_t k,
                      float threshold, QuantizedActivation* out) {
  if (out == nullptr) return absl::InvalidArgumentError("QuantizeActivation: out is null");
  if (m <= 0 || k <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("activation shape must be positive, got [", m, ", ", k, "]"));
  }
  if (!(threshold >= 0.0f)) {  // also rejects NaN
    return absl::InvalidArgumentError(absl::StrCat(
        "outlier threshold must be >= 0 (0 disables decomposition), got ", threshold));
  }
  int64_t mk = 0;
  if (__builtin_mul_overflow(m, k, &mk) || x.size() != static_cast<size_t>(mk)) {
    return absl::InvalidArgumentError(
        absl::StrCat("activation [", m, ", ", k, "] needs m*k values, got ", x.size()));
  }
  out->m = m;
  out->k = k;
  GrowTo(out->q, mk);
  GrowTo(out->absmax, m);
  out->outlier_cols.clear();

  // Pass 1 (t > 0): the outlier columns, those holding any outlier value.
  if (threshold > 0.0f) {
    std::vector<uint8_t> is_outlier(k, 0);
    for (int64_t i = 0; i < m; ++i)
      loops.mark_outliers(x.data() + i * k, k, threshold, is_outlier.data());
    for (int64_t j = 0; j < k; ++j) {
      if (is_outlier[j]) out->outlier_cols.push_back(static_cast<int32_t>(j));
    }
  }
  const auto& cols = out->outlier_cols;
  const int64_t n_out = static_cast<int64_t>(cols.size());
  GrowTo(out->outliers, m * n_out);

  // Pass 2, per row: absmax over the row's own non-outlier values, then quantize. With t > 0
  // the outlier test is per element, so a row never depends on the others: rows spread over
  // the OpenMP threads of a large step, each computed as alone.
#pragma omp parallel for schedule(static) if (mk >= (int64_t{1} << 16))
  for (int64_t i = 0; i < m; ++i) {
    const float* row = x.data() + i * k;
    int8_t* qrow = out->q.data() + i * k;
    bool finite = true;  // stays true with t > 0: values that are not outliers are finite
    float amax = loops.inlier_absmax(row, k, threshold, &finite);
    if (!finite) amax = std::numeric_limits<float>::quiet_NaN();
    out->absmax[i] = amax;
    for (int64_t c = 0; c < n_out; ++c) {
      const float v = row[cols[c]];
      out->outliers[i * n_out + c] = IsInlier(v, threshold) ? 0.0f : v;
    }
    if (!(amax > 0.0f) || !std::isfinite(amax)) {  // zero row, or NaN row with t == 0
      std::fill(qrow, qrow + k, int8_t{0});
      continue;
    }
    // Outlier values (which may be NaN or Inf) are never converted: 0 in q.
    const float scale = 127.0f / amax;
    if (std::isfinite(scale)) {
      loops.quantize(row, k, threshold, scale, qrow);
    } else {  // subnormal absmax: 127 / absmax overflows
      for (int64_t j = 0; j < k; ++j) {
        qrow[j] = IsInlier(row[j], threshold) ? QuantizeToInt8(row[j] / amax, 127.0f) : int8_t{0};
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status QuantizeActivation(std::span<const float> x, int64_t m, int64_t k, float threshold,
                                QuantizedActivation* out) {
  return Quantize(FastLoops(), x, m, k, threshold, out);
}

absl::Status QuantizeActivationReference(std::span<const float> x, int64_t m, int64_t k,
                                         float threshold, QuantizedActivation* out) {
  return Quantize(kPlainLoops, x, m, k, threshold, out);
}

}  // namespace llmint8::kernels
