// IEEE binary16 storage for host code, and exact conversions to and from float.
//
// `Half` is 2 bytes with the same bit layout as CUDA's __half, so buffers of Half can be
// copied to and from the GPU as they are. Host arithmetic is done in float.
#ifndef LLMINT8_COMMON_HALF_H_
#define LLMINT8_COMMON_HALF_H_

#include <cmath>
#include <cstdint>
#include <cstring>

namespace llmint8 {

struct Half {
  uint16_t bits = 0;
};
static_assert(sizeof(Half) == 2);

// Round-to-nearest-even float -> binary16, with overflow to +-inf and NaN kept NaN.
inline Half FloatToHalf(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t abs = x & 0x7fffffffu;
  Half h;
  if (abs >= 0x7f800000u) {  // inf or NaN
    h.bits = static_cast<uint16_t>(sign | 0x7c00u | (abs > 0x7f800000u ? 0x200u : 0u));
    return h;
  }
  if (abs >= 0x477ff000u) {  // rounds to >= 65520 -> inf
    h.bits = static_cast<uint16_t>(sign | 0x7c00u);
    return h;
  }
  if (abs < 0x38800000u) {  // zero or subnormal half: an integer count of 2^-24 ulps
    float af;
    std::memcpy(&af, &abs, 4);
    // Exact scaling by 2^24, then round-to-nearest-even; 1024 lands on the smallest normal.
    h.bits = static_cast<uint16_t>(sign | static_cast<uint32_t>(std::nearbyint(af * 16777216.0f)));
    return h;
  }
  // Normal: rebias exponent (127 -> 15) and round the 13 dropped mantissa bits to nearest even.
  uint32_t m = abs + 0xc8000fffu + ((abs >> 13) & 1u);
  h.bits = static_cast<uint16_t>(sign | (m >> 13));
  return h;
}

inline float HalfToFloat(Half h) {
  const uint32_t sign = (static_cast<uint32_t>(h.bits) & 0x8000u) << 16;
  const uint32_t exp = (h.bits >> 10) & 0x1fu;
  const uint32_t man = h.bits & 0x3ffu;
  uint32_t x;
  if (exp == 0) {
    // zero or subnormal: value = man * 2^-24
    float f = static_cast<float>(man) * 5.9604644775390625e-8f;
    std::memcpy(&x, &f, 4);
    x |= sign;
  } else if (exp == 31) {
    x = sign | 0x7f800000u | (man << 13);
  } else {
    x = sign | ((exp + 112u) << 23) | (man << 13);
  }
  float out;
  std::memcpy(&out, &x, 4);
  return out;
}

}  // namespace llmint8

#endif  // LLMINT8_COMMON_HALF_H_
