#include "common/half.h"

#include <cmath>
#include <cstring>
#include <limits>

#include "gtest/gtest.h"

namespace llmint8 {
namespace {

// The compiler's _Float16 (GCC 12+ on x86-64) is the independent oracle for both directions.
// A compiler without it (clang 14) builds the tests, and they skip.
#ifdef __FLT16_MANT_DIG__
using Float16 = _Float16;
constexpr bool kHaveFloat16 = true;
#else
using Float16 = uint16_t;  // stands in so the tests compile; they skip
constexpr bool kHaveFloat16 = false;
#endif
#define SKIP_WITHOUT_FLOAT16() \
  if (!kHaveFloat16) GTEST_SKIP() << "this compiler has no _Float16 to compare with"

TEST(HalfTest, EveryHalfRoundTripsAndMatchesCompiler) {
  SKIP_WITHOUT_FLOAT16();
  for (uint32_t b = 0; b < 65536; ++b) {
    Half h{static_cast<uint16_t>(b)};
    Float16 ref;
    std::memcpy(&ref, &h.bits, 2);
    const float f = HalfToFloat(h);
    if (std::isnan(static_cast<float>(ref))) {
      EXPECT_TRUE(std::isnan(f)) << b;
      EXPECT_TRUE(std::isnan(HalfToFloat(FloatToHalf(f)))) << b;
      continue;
    }
    ASSERT_EQ(f, static_cast<float>(ref)) << b;
    ASSERT_EQ(FloatToHalf(f).bits, b) << b;
  }
}

TEST(HalfTest, FloatToHalfRoundsLikeCompiler) {
  SKIP_WITHOUT_FLOAT16();
  // Walk float bit patterns with a stride that hits every exponent and many mantissas.
  for (uint64_t x = 0; x < 0x100000000ull; x += 4093) {
    const uint32_t bits = static_cast<uint32_t>(x);
    float f;
    std::memcpy(&f, &bits, 4);
    if (std::isnan(f)) continue;
    const Float16 ref = static_cast<Float16>(f);
    uint16_t ref_bits;
    std::memcpy(&ref_bits, &ref, 2);
    ASSERT_EQ(FloatToHalf(f).bits, ref_bits) << std::hexfloat << f;
  }
}

TEST(HalfTest, SpecialValues) {
  EXPECT_EQ(FloatToHalf(65504.0f).bits, 0x7bffu);
  EXPECT_EQ(FloatToHalf(65520.0f).bits, 0x7c00u);  // rounds up to inf
  EXPECT_EQ(FloatToHalf(-std::numeric_limits<float>::infinity()).bits, 0xfc00u);
  EXPECT_TRUE(std::isnan(HalfToFloat(FloatToHalf(std::nanf("")))));
  EXPECT_EQ(FloatToHalf(-0.0f).bits, 0x8000u);
}

}  // namespace
}  // namespace llmint8
