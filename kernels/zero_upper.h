// VZEROUPPER on the way out of a CPU kernel's AVX code (internal). GCC inserts it itself only
// when optimizing with -fexpensive-optimizations (-O2 and up): a -O0 / -O1 build (Debug, the
// sanitizer build) would return with the upper halves of the vector registers dirty, and every
// later SSE instruction of the thread, glibc's exp in the sampler included, would pay the
// AVX-SSE transition penalty (kernels/cpu_features.h, VectorUpperHalvesInUse). Each AVX entry
// point (a target("avx...") function called from plain code) holds one:
//   const internal::ZeroUpperOnExit zero_upper;
#ifndef LLMINT8_KERNELS_ZERO_UPPER_H_
#define LLMINT8_KERNELS_ZERO_UPPER_H_

#include <immintrin.h>

namespace llmint8::kernels::internal {

struct ZeroUpperOnExit {
  ZeroUpperOnExit() = default;
  ZeroUpperOnExit(const ZeroUpperOnExit&) = delete;
  ZeroUpperOnExit& operator=(const ZeroUpperOnExit&) = delete;
  __attribute__((target("avx"), always_inline)) inline ~ZeroUpperOnExit() { _mm256_zeroupper(); }
};

}  // namespace llmint8::kernels::internal

#endif  // LLMINT8_KERNELS_ZERO_UPPER_H_
