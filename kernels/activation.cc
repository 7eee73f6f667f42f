#include "kernels/activation.h"

#include <cmath>

namespace llmint8::kernels {

void ReluInPlace(std::span<float> x) {
  for (float& v : x) v = v > 0.0f ? v : 0.0f;
}

void GeluInPlace(std::span<float> x) {
  constexpr float kInvSqrt2 = 0.70710678118654752440f;
  for (float& v : x) v = 0.5f * v * (1.0f + std::erf(v * kInvSqrt2));
}

}  // namespace llmint8::kernels
