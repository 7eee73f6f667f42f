#include "coordinator/number_regex.h"

#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace llmint8::coordinator {
namespace {

// One piece of a range: the digits' lowest and highest value at each place, most significant
// first (a fixed digit, a class, or any digit).
using DigitRanges = std::vector<std::pair<char, char>>;

// Integers in [lo, hi], 0 <= lo <= hi, as pieces of one digit count each, each a fixed prefix,
// a class and any digits (the split of the to-regex-range algorithm).
std::vector<DigitRanges> RangePieces(int64_t lo, int64_t hi) {
  auto pow10 = [](int n) {
    int64_t p = 1;
    for (int i = 0; i < n; ++i) p *= 10;
    return p;
  };
  std::set<int64_t> stops = {hi};
  for (int nines = 1; nines <= 17; ++nines) {  // lo with its last digits 9s
    const int64_t stop = lo - lo % pow10(nines) + pow10(nines) - 1;
    if (stop < lo || stop >= hi) break;
    stops.insert(stop);
  }
  for (int zeros = 1; zeros <= 17; ++zeros) {  // hi + 1 with its last digits 0s, less one
    const int64_t stop = (hi + 1) - (hi + 1) % pow10(zeros) - 1;
    if (stop <= lo || stop > hi) break;
    stops.insert(stop);
  }
  std::vector<DigitRanges> pieces;
  int64_t start = lo;
  for (int64_t stop : stops) {
    const std::string a = std::to_string(start);
    const std::string b = std::to_string(stop);
    DigitRanges& piece = pieces.emplace_back();
    for (size_t i = 0; i < a.size(); ++i) piece.emplace_back(a[i], b[i]);
    start = stop + 1;
  }
  return pieces;
}

// One place's digits: the digit, a class, or [0-9].
std::string DigitClass(std::pair<char, char> r) {
  if (r.first == r.second) return std::string(1, r.first);
  return absl::StrCat("[", std::string(1, r.first), "-", std::string(1, r.second), "]");
}

// The places of a piece, runs of any digit written as one repetition.
std::string Digits(DigitRanges::const_iterator begin, DigitRanges::const_iterator end) {
  std::string out;
  for (auto it = begin; it != end;) {
    if (it->first != '0' || it->second != '9') {
      out += DigitClass(*it++);
      continue;
    }
    int run = 0;
    for (; it != end && it->first == '0' && it->second == '9'; ++it) ++run;
    absl::StrAppend(&out, "[0-9]", run > 1 ? absl::StrCat("{", run, "}") : "");
  }
  return out;
}

// The fraction's places from `place` on, each optional once every later place may be 0
// (a text may stop there: the rest are zeros).
std::string FractionPlaces(const DigitRanges& places, size_t place) {
  if (place == places.size()) return "";
  const std::string here =
      absl::StrCat(DigitClass(places[place]), FractionPlaces(places, place + 1));
  bool zeros_may_follow = true;
  for (size_t i = place; i < places.size(); ++i) zeros_may_follow &= places[i].first == '0';
  return zeros_may_follow ? absl::StrCat("(?:", here, ")?") : here;
}

// The digits of v >= 0.
int DigitCount(int64_t v) {
  int d = 1;
  for (; v >= 10; v /= 10) ++d;
  return d;
}

}  // namespace

std::string UnsignedRange(int64_t lo, int64_t hi) {
  std::vector<std::string> pieces;
  for (const DigitRanges& piece : RangePieces(lo, hi)) {
    pieces.push_back(Digits(piece.begin(), piece.end()));
  }
  return absl::StrCat("(?:", absl::StrJoin(pieces, "|"), ")");
}

std::string ScaledRange(int64_t lo, int64_t hi) {
  std::vector<std::string> pieces;
  for (DigitRanges piece : RangePieces(lo, hi)) {
    const size_t f = kBoundedNumberFraction;
    while (piece.size() < f) piece.insert(piece.begin(), {'0', '0'});  // 0.00xyz
    const std::string whole =
        piece.size() == f ? "0" : Digits(piece.begin(), piece.end() - static_cast<ptrdiff_t>(f));
    const DigitRanges fraction(piece.end() - static_cast<ptrdiff_t>(f), piece.end());
    std::string places = FractionPlaces(fraction, 0);
    // The point comes with the first place: "(?:d(?:...)?)?" becomes "(?:\.d(?:...)?)?".
    if (places.starts_with("(?:")) {
      places.insert(3, "\\.");
    } else {
      places.insert(0, "\\.");
    }
    pieces.push_back(absl::StrCat(whole, places));
  }
  return absl::StrJoin(pieces, "|");
}

std::string UnsignedFrom(int64_t lo) {
  const int d = DigitCount(lo);
  int64_t top = 1;
  for (int i = 0; i < d; ++i) top *= 10;
  std::string out = UnsignedRange(lo, top - 1);
  if (d < 16) out = absl::StrCat("(?:", out, "|[1-9][0-9]{", d, ",15})");
  return out;
}

}  // namespace llmint8::coordinator
