#include "kernels/cpu_features.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

#include <cstdlib>
#include <string_view>

namespace llmint8::kernels {
namespace {

// Lowers `f` to oneDNN's ISA cap, if one is set (its names: SSE41, AVX, AVX2, AVX2_VNNI,
// AVX512_CORE, ...; case-insensitive, as oneDNN reads them). An empty or unknown value caps
// nothing, as oneDNN ignores it.
void ApplyIsaCap(CpuFeatures& f) {
  const char* cap = std::getenv("ONEDNN_MAX_CPU_ISA");
  if (cap == nullptr || *cap == '\0') cap = std::getenv("DNNL_MAX_CPU_ISA");
  if (cap == nullptr || *cap == '\0') return;
  std::string_view isa(cap);
  auto starts = [isa](std::string_view prefix) {
    if (isa.size() < prefix.size()) return false;
    for (size_t i = 0; i < prefix.size(); ++i) {
      if ((isa[i] | 0x20) != (prefix[i] | 0x20)) return false;
    }
    return true;
  };
  auto is = [&](std::string_view name) { return isa.size() == name.size() && starts(name); };
  if (starts("AVX2")) {
    f.avx512f = false;
  } else if (is("SSE41") || is("AVX")) {
    f.avx512f = f.avx2 = f.fma = f.f16c = false;
  }  // AVX512*, AVX10*, AMX*, ALL, or a name oneDNN does not know: no cap here
}

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
  if (__get_cpuid_count(7, 0, &a, &b, &c, &d) != 0) {
    f.avx2 = (b & (1u << 5)) != 0;
    // XCR0 bits 5-7: opmask, upper halves of ZMM0-15, ZMM16-31.
    f.avx512f = (b & (1u << 16)) != 0 && (xcr0_lo & 0xe0u) == 0xe0u;
  }
#endif
  ApplyIsaCap(f);
  return f;
}

}  // namespace

const CpuFeatures& Cpu() {
  static const CpuFeatures features = Detect();
  return features;
}

}  // namespace llmint8::kernels
