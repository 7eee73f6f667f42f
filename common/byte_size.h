// Byte sizes as people type and read them, one syntax for every flag that takes one
// (`--memory_limit`, `plan --gpu-memory`): the units of Kubernetes resource quantities and IEC.
//
//   ParseByteSize("16Gi") == 16 * kGiB;  ParseByteSize("24GB") == 24 * kGB;
//   ParseByteSize("80", kGiB) == 80 * kGiB;  FormatBytes(3 * kGiB / 2) == "1.5 GiB"
#ifndef LLMINT8_COMMON_BYTE_SIZE_H_
#define LLMINT8_COMMON_BYTE_SIZE_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace llmint8 {

inline constexpr int64_t kKiB = int64_t{1} << 10;
inline constexpr int64_t kMiB = int64_t{1} << 20;
inline constexpr int64_t kGiB = int64_t{1} << 30;
inline constexpr int64_t kGB = 1000 * 1000 * 1000;

// A number (fractions allowed: "1.5GiB") and a unit, case and spaces ignored:
//   B; K, KB, M, MB, G, GB, T, TB: powers of 1000 (as Kubernetes reads "16G");
//   Ki, KiB, Mi, MiB, Gi, GiB, Ti, TiB: powers of 1024;
//   no unit: the number times `bare_unit` (bytes unless the caller says otherwise).
// Rounds to whole bytes. InvalidArgument, saying what is accepted, for anything else, a negative
// size or one of 8 EiB (2^63 bytes) or more. Zero parses; a caller for whom it means
// nothing refuses it.
absl::StatusOr<int64_t> ParseByteSize(std::string_view text, int64_t bare_unit = 1);

// Binary units, two decimals at most: "80 GiB", "1.5 GiB", "512 MiB", "1000 B"; a whole number
// of decimal GB that is not a whole number of MiB prints as typed: "24 GB".
std::string FormatBytes(int64_t bytes);

}  // namespace llmint8

#endif  // LLMINT8_COMMON_BYTE_SIZE_H_
