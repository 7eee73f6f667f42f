#include "kernels/cpu_features.h"

#include <dnnl.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

namespace llmint8::kernels {
namespace {

// Lowers `f` to oneDNN's cap on the instruction sets it uses (ONEDNN_MAX_CPU_ISA or
// DNNL_MAX_CPU_ISA), read as oneDNN reads it: its effective ISA, a mask of feature bits.
void ApplyIsaCap(CpuFeatures& f) {
  const unsigned isa = static_cast<unsigned>(dnnl_get_effective_cpu_isa());
  if (isa == dnnl_cpu_isa_all) return;
  auto allows = [isa](dnnl_cpu_isa_t set) {
    return (isa & static_cast<unsigned>(set)) == static_cast<unsigned>(set);
  };
  if (!allows(dnnl_cpu_isa_avx512_core)) f.avx512f = false;
  if (!allows(dnnl_cpu_isa_avx2)) f.avx2 = f.fma = f.f16c = false;
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

std::optional<bool> VectorUpperHalvesInUse() {
#if defined(__SANITIZE_ADDRESS__)
  return std::nullopt;  // see the header
#elif defined(__x86_64__) || defined(__i386__)
  // State component 2: the upper halves of YMM0-15; 6: the upper 256 bits of ZMM0-15.
  auto dirty = [] {
    unsigned in_use = 0, high = 0;
    __asm__ volatile("xgetbv" : "=a"(in_use), "=d"(high) : "c"(1));
    return (in_use & ((1u << 2) | (1u << 6))) != 0;
  };
  static const bool readable = [&dirty] {
    unsigned a = 0, b = 0, c = 0, d = 0;
    // OSXSAVE, then CPUID.(EAX=0DH, ECX=1):EAX bit 2: XGETBV with ECX = 1.
    if (__get_cpuid(1, &a, &b, &c, &d) == 0 || (c & (1u << 27)) == 0) return false;
    if (__get_cpuid_count(0xd, 1, &a, &b, &c, &d) == 0 || (a & (1u << 2)) == 0) return false;
    if (!Cpu().avx) return false;  // no upper halves (and no VZEROUPPER)
    // The manual lets a CPU report a component in use when it is not: trust the bits only if
    // they read clean right after a VZEROUPPER.
    __asm__ volatile("vzeroupper" ::: "memory");
    return !dirty();
  }();
  if (!readable) return std::nullopt;
  return dirty();
#else
  return std::nullopt;
#endif
}

}  // namespace llmint8::kernels
