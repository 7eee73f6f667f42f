#include "common/byte_size.h"

#include <cctype>
#include <cmath>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace llmint8 {
namespace {

// Debian's abseil 20220623 has its own string_view.
absl::string_view Av(std::string_view s) { return absl::string_view(s.data(), s.size()); }

constexpr std::pair<std::string_view, int64_t> kUnits[] = {
    {"b", 1},
    {"k", 1000},
    {"kb", 1000},
    {"ki", kKiB},
    {"kib", kKiB},
    {"m", 1000 * 1000},
    {"mb", 1000 * 1000},
    {"mi", kMiB},
    {"mib", kMiB},
    {"g", kGB},
    {"gb", kGB},
    {"gi", kGiB},
    {"gib", kGiB},
    {"t", 1000 * kGB},
    {"tb", 1000 * kGB},
    {"ti", 1024 * kGiB},
    {"tib", 1024 * kGiB},
};

std::string Trimmed(double value) {
  std::string s = absl::StrFormat("%.2f", value);
  while (!s.empty() && s.back() == '0') s.pop_back();
  if (!s.empty() && s.back() == '.') s.pop_back();
  return s;
}

}  // namespace

absl::StatusOr<int64_t> ParseByteSize(std::string_view text, int64_t bare_unit) {
  const absl::string_view s = absl::StripAsciiWhitespace(Av(text));
  size_t i = 0;
  while (i < s.size() && (std::isdigit(static_cast<unsigned char>(s[i])) || s[i] == '.')) ++i;
  const absl::string_view number = s.substr(0, i);
  const std::string unit = absl::AsciiStrToLower(absl::StripAsciiWhitespace(s.substr(i)));
  double value = 0;
  int64_t scale = unit.empty() ? bare_unit : 0;
  for (const auto& [name, unit_scale] : kUnits) {
    if (unit == name) scale = unit_scale;
  }
  // Digits and dots only, so no sign, exponent, "nan" or "inf" reaches SimpleAtod.
  if (number.empty() || !absl::SimpleAtod(number, &value) || scale == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("\"", Av(text),
                     "\" is not a size: write e.g. 16Gi or 16GiB (powers of 1024), 24G or 24GB "
                     "(powers of 1000), 512Mi or 4096B"));
  }
  const double bytes = std::round(value * static_cast<double>(scale));
  if (!(bytes < 0x1p63)) {  // 2^63 bytes, 8 EiB: the largest double below it fits an int64
    return absl::InvalidArgumentError(absl::StrCat(
        "size \"", Av(text), "\" is too large: it must be under 8388608 TiB (2^63 bytes)"));
  }
  return static_cast<int64_t>(bytes);
}

std::string FormatBytes(int64_t bytes) {
  // The magnitude as unsigned: -INT64_MIN does not fit an int64.
  const uint64_t a = bytes < 0 ? 0 - static_cast<uint64_t>(bytes) : static_cast<uint64_t>(bytes);
  // A size typed in decimal GB (and not a whole number of MiB) reads back as typed.
  const auto at_least = [a](int64_t unit) { return a >= static_cast<uint64_t>(unit); };
  if (at_least(kGB) && a % kGB == 0 && a % kMiB != 0) return absl::StrCat(bytes / kGB, " GB");
  if (at_least(kGiB)) return absl::StrCat(Trimmed(static_cast<double>(bytes) / kGiB), " GiB");
  if (at_least(kMiB)) return absl::StrCat(Trimmed(static_cast<double>(bytes) / kMiB), " MiB");
  if (at_least(kKiB)) return absl::StrCat(Trimmed(static_cast<double>(bytes) / kKiB), " KiB");
  return absl::StrCat(bytes, " B");
}

}  // namespace llmint8
