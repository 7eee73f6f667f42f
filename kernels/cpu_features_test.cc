#include "kernels/cpu_features.h"

#include <cstdio>
#include <cstdlib>
#include <string>

#include "gtest/gtest.h"

namespace llmint8::kernels {
namespace {

// CPUID read by hand agrees with the compiler's own test (GCC's; clang 14 knows no "f16c").
TEST(CpuFeaturesTest, AgreesWithTheCompilersBuiltin) {
  for (const char* cap : {"ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"}) {
    const char* value = std::getenv(cap);
    if (value != nullptr && *value != '\0') {
      GTEST_SKIP() << cap << "=" << value << " is set: Cpu() may report less than the CPU has";
    }
  }
  const CpuFeatures& cpu = Cpu();
  EXPECT_EQ(cpu.avx, __builtin_cpu_supports("avx") != 0);
  EXPECT_EQ(cpu.avx2, __builtin_cpu_supports("avx2") != 0);
  EXPECT_EQ(cpu.fma, __builtin_cpu_supports("fma") != 0);
#if !defined(__clang__)
  EXPECT_EQ(cpu.f16c, __builtin_cpu_supports("f16c") != 0);
#endif
  EXPECT_EQ(cpu.avx512f, __builtin_cpu_supports("avx512f") != 0);
  std::printf("avx %d avx2 %d fma %d f16c %d avx512f %d\n", cpu.avx, cpu.avx2, cpu.fma, cpu.f16c,
              cpu.avx512f);
}

// Under oneDNN's cap (the capped ctest runs: cpu_features_avx2_test, cpu_features_sse41_test)
// the kernels see no more than it allows.
TEST(CpuFeaturesTest, OneDnnsIsaCapLowersThem) {
  const char* cap = std::getenv("DNNL_MAX_CPU_ISA");
  const std::string isa = cap != nullptr ? cap : "";
  if (isa != "AVX2" && isa != "SSE41") GTEST_SKIP() << "no DNNL_MAX_CPU_ISA=AVX2 or SSE41 set";
  const CpuFeatures& cpu = Cpu();
  EXPECT_FALSE(cpu.avx512f);
  if (isa == "SSE41") {
    EXPECT_FALSE(cpu.avx2_fma_f16c());
  }
  if (isa == "AVX2") {
    EXPECT_EQ(cpu.avx2, __builtin_cpu_supports("avx2") != 0);
  }
}

// The detector itself: dirty after writing a YMM register's upper half, clean after VZEROUPPER.
TEST(CpuFeaturesTest, SeesDirtyUpperHalvesOfTheVectorRegisters) {
  if (!Cpu().avx) GTEST_SKIP() << "no AVX: there are no upper halves";
  if (!VectorUpperHalvesInUse().has_value())
    GTEST_SKIP() << "the vector state is not readable here (no XGETBV(1), or ASan)";
  __asm__ volatile("vcmpps $15, %%ymm0, %%ymm0, %%ymm0" ::: "xmm0");  // all ones (AVX)
  const std::optional<bool> dirty = VectorUpperHalvesInUse();
  __asm__ volatile("vzeroupper" ::: "xmm0");
  const std::optional<bool> clean = VectorUpperHalvesInUse();
  EXPECT_EQ(dirty, true);
  EXPECT_EQ(clean, false);
}

TEST(CpuFeaturesTest, AvxExtensionsImplyAvx) {
  const CpuFeatures& cpu = Cpu();
  if (cpu.avx2 || cpu.fma || cpu.f16c) {
    EXPECT_TRUE(cpu.avx);
  }
}

}  // namespace
}  // namespace llmint8::kernels
