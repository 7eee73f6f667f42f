// What the CPU this process runs on can do, for the CPU kernels' runtime dispatch: read once
// from CPUID (and XGETBV: an AVX feature counts only when the OS saves the YMM registers, as
// GCC's __builtin_cpu_supports decides). One place instead of a __builtin_cpu_supports per
// kernel, which clang 14 does not accept for "f16c".
//
// oneDNN's cap on the instruction sets it uses, ONEDNN_MAX_CPU_ISA (or DNNL_MAX_CPU_ISA), caps
// these kernels too: AVX2 or AVX2_VNNI... leaves out AVX-512, SSE41 or AVX the AVX2 kernels
// (so that, e.g., a test can run the 8-wide kernels on an AVX-512 machine).
//
// Thread-safe: Cpu() reads a function-local static.
#ifndef LLMINT8_KERNELS_CPU_FEATURES_H_
#define LLMINT8_KERNELS_CPU_FEATURES_H_

#include <optional>

namespace llmint8::kernels {

struct CpuFeatures {
  bool avx = false;
  bool avx2 = false;
  bool fma = false;
  bool f16c = false;
  bool avx512f = false;  // and the OS saves the ZMM and opmask registers
  // The set the AVX2 kernels use (8-wide fp32 FMA, fp16 <-> fp32 conversions).
  bool avx2_fma_f16c() const { return avx2 && fma && f16c; }
};

const CpuFeatures& Cpu();

// Whether the calling thread's vector registers hold non-zero upper halves (XGETBV with ECX = 1:
// the XINUSE bits of the YMM and ZMM_Hi256 state). A kernel that returns so (no VZEROUPPER after
// its 256/512-bit code) makes every later SSE instruction of the thread pay the AVX-SSE
// transition penalty: glibc's exp, which the sampler and the perplexity scorer call per logit,
// ran 25x slower after such a kernel here. Tests check each CPU kernel returns clean.
// nullopt where the CPU cannot tell (not x86, no AVX, no XGETBV with ECX = 1, or bits that read
// in use even right after a VZEROUPPER, which the manual allows), and in an
// AddressSanitizer build: its epilogue clears a target("avx512f") function's stack shadow with
// ZMM / YMM stores after the function's own VZEROUPPER (objdump of Avx512::Tile<1, float>), so
// the answer would be about ASan's code, not the kernel's.
std::optional<bool> VectorUpperHalvesInUse();

}  // namespace llmint8::kernels

#endif  // LLMINT8_KERNELS_CPU_FEATURES_H_
