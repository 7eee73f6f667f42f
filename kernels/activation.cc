#include "kernels/activation.h"

#include <immintrin.h>

#include <cmath>

namespace llmint8::kernels {

void ReluInPlace(std::span<float> x) {
  // max(v, 0) four at a time: MAXPS returns its second operand (+0) when v is NaN and when
  // v is -0, so every value is v > 0 ? v : 0 exactly, without the branch a scalar loop takes
  // (and mispredicts on half the values).
  const __m128 zero = _mm_setzero_ps();
  size_t i = 0;
  for (; i + 4 <= x.size(); i += 4) {
    _mm_storeu_ps(x.data() + i, _mm_max_ps(_mm_loadu_ps(x.data() + i), zero));
  }
  for (; i < x.size(); ++i) x[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

void GeluInPlace(std::span<float> x) {
  constexpr float kInvSqrt2 = 0.70710678118654752440f;
  for (float& v : x) v = 0.5f * v * (1.0f + std::erf(v * kInvSqrt2));
}

}  // namespace llmint8::kernels
