// Regular expressions for ranges of numbers, what JSON schemas' bounds (minimum, maximum,
// multipleOf) are written with in coordinator/json_schema.cc: a range split into pieces of one
// digit count each, each a fixed prefix, a class and any digits (the to-regex-range split).
// Every pattern is a group or an alternation of whole numbers' texts, without leading zeros.
#ifndef LLMINT8_COORDINATOR_NUMBER_REGEX_H_
#define LLMINT8_COORDINATOR_NUMBER_REGEX_H_

#include <cstdint>
#include <string>

namespace llmint8::coordinator {

// Bounded numbers are decimals of at most 9 digits before the point and 6 after it (their text
// is n / 10^kBoundedNumberFraction for an integer n < 10^15): at most 15 significant digits,
// so that two such decimals, a bound among them, are two doubles, and a validator comparing
// doubles agrees with the exact comparison the regex makes.
inline constexpr int kBoundedNumberFraction = 6;
inline constexpr int64_t kBoundedNumberTop = 1'000'000'000'000'000 - 1;  // the largest n

// Integers in [lo, hi], 0 <= lo <= hi, as one group "(?:...)".
std::string UnsignedRange(int64_t lo, int64_t hi);

// Integers >= lo >= 0, of at most 16 digits, as one group.
std::string UnsignedFrom(int64_t lo);

// Decimals n / 10^kBoundedNumberFraction for integers n in [lo, hi], 0 <= lo <= hi <=
// kBoundedNumberTop: the integer part without leading zeros, then at most
// kBoundedNumberFraction fraction digits (trailing zeros optional, no exponent); an
// alternation, not grouped.
std::string ScaledRange(int64_t lo, int64_t hi);

}  // namespace llmint8::coordinator

#endif  // LLMINT8_COORDINATOR_NUMBER_REGEX_H_
