// The sum and the max of an AVX2 register's eight floats, for the CPU kernels' AVX2 paths
// (internal).
#ifndef LLMINT8_KERNELS_AVX2_SUM_H_
#define LLMINT8_KERNELS_AVX2_SUM_H_

#include <immintrin.h>

namespace llmint8::kernels::internal {

__attribute__((target("avx2,fma"))) inline float HorizontalSum(__m256 v) {
  const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 h = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(h, _mm_movehdup_ps(h)));
}

// For lanes without NaN (a NaN lane's result depends on its position). Plain AVX, so the
// kernels with and without FMA can inline it.
__attribute__((target("avx"))) inline float HorizontalMax(__m256 v) {
  const __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 h = _mm_max_ps(m, _mm_movehl_ps(m, m));
  return _mm_cvtss_f32(_mm_max_ss(h, _mm_movehdup_ps(h)));
}

}  // namespace llmint8::kernels::internal

#endif  // LLMINT8_KERNELS_AVX2_SUM_H_
