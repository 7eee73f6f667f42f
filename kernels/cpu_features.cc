#include "kernels/cpu_features.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

namespace llmint8::kernels {
namespace {

CpuFeatures Detect() {
  CpuFeatures f;
#if defined(__x86_64__) || defined(__i386__)
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (__get_cpuid(1, &a, &b, &c, &d) == 0) return f;
  const unsigned leaf1_ecx = c;
  // AVX state (XMM and YMM) must be enabled by the OS: OSXSAVE, then XCR0 bits 1 and 2.
  if ((leaf1_ecx & (1u << 27)) == 0) return f;
  unsigned xcr0_lo = 0, xcr0_hi = 0;
  __asm__("xgetbv" : "=a"(xcr0_lo), "=d"(xcr0_hi) : "c"(0));
  if ((xcr0_lo & 0x6u) != 0x6u) return f;
  f.avx = (leaf1_ecx & (1u << 28)) != 0;
  if (!f.avx) return f;
  f.fma = (leaf1_ecx & (1u << 12)) != 0;
  f.f16c = (leaf1_ecx & (1u << 29)) != 0;
  if (__get_cpuid_count(7, 0, &a, &b, &c, &d) != 0) f.avx2 = (b & (1u << 5)) != 0;
#endif
  return f;
}

}  // namespace

const CpuFeatures& Cpu() {
  static const CpuFeatures features = Detect();
  return features;
}

}  // namespace llmint8::kernels
