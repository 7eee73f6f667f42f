// The safetensors header, untrusted: every length, offset, dtype and shape checked against the
// file before anything is read (the part the fuzzer runs: model/fuzz).
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/json_text.h"
#include "common/status_macros.h"
#include "model/safetensors.h"
#include "model/safetensors_internal.h"

namespace llmint8::model {

using internal::FileError;
using internal::Json;
using internal::kMaxHeaderBytes;
using internal::TensorError;

namespace {

constexpr int64_t kMaxRank = 8;

bool ParseDTypeString(std::string_view s, TensorDType* out) {
  if (s == "F16")
    *out = TensorDType::kF16;
  else if (s == "BF16")
    *out = TensorDType::kBF16;
  else if (s == "F32")
    *out = TensorDType::kF32;
  else if (s == "I8")
    *out = TensorDType::kI8;
  else
    return false;
  return true;
}

// A non-negative JSON integer that fits in int64.
bool GetNonNegative(const Json& v, int64_t* out) {
  if (v.is_number_unsigned()) {
    const uint64_t u = v.get<uint64_t>();
    if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return false;
    *out = static_cast<int64_t>(u);
    return true;
  }
  if (v.is_number_integer()) {
    *out = v.get<int64_t>();
    return *out >= 0;
  }
  return false;
}

absl::StatusOr<SafetensorsEntry> ParseEntry(std::string_view file, const std::string& name,
                                            const Json& v, int64_t data_size) {
  if (!v.is_object()) return TensorError(file, name, "header entry is not a JSON object");
  SafetensorsEntry e;
  e.name = name;
  auto dt = v.find("dtype");
  if (dt == v.end() || !dt->is_string()) return TensorError(file, name, "missing string \"dtype\"");
  const std::string dtype = dt->get<std::string>();
  if (!ParseDTypeString(dtype, &e.dtype)) {
    return TensorError(
        file, name,
        absl::StrCat("unsupported dtype \"", dtype, "\" (supported: F16, BF16, F32, I8)"));
  }
  auto sh = v.find("shape");
  if (sh == v.end() || !sh->is_array()) return TensorError(file, name, "missing array \"shape\"");
  if (static_cast<int64_t>(sh->size()) > kMaxRank) {
    return TensorError(file, name, absl::StrCat("rank ", sh->size(), " is above ", kMaxRank));
  }
  // Element count, guarded against overflow: no tensor can exceed the data buffer anyway.
  const int64_t elem_size = TensorDTypeSize(e.dtype);
  int64_t elements = 1;
  bool too_big = false;
  for (const Json& d : *sh) {
    int64_t dim = 0;
    if (!GetNonNegative(d, &dim)) {
      return TensorError(
          file, name, absl::StrCat("shape dim ", JsonSnippet(d), " is not a non-negative integer"));
    }
    e.shape.push_back(dim);
    if (dim == 0) {
      elements = 0;
    } else if (!too_big && elements != 0) {
      if (elements > std::numeric_limits<int64_t>::max() / elem_size / dim)
        too_big = true;
      else
        elements *= dim;
    }
  }
  if (too_big && elements != 0) {
    return TensorError(file, name, "shape's byte size overflows 64 bits");
  }
  auto off = v.find("data_offsets");
  if (off == v.end() || !off->is_array() || off->size() != 2 ||
      !GetNonNegative((*off)[0], &e.begin) || !GetNonNegative((*off)[1], &e.end)) {
    return TensorError(file, name,
                       "\"data_offsets\" must be [begin, end] of non-negative integers");
  }
  if (e.begin > e.end) {
    return TensorError(
        file, name, absl::StrCat("data_offsets [", e.begin, ", ", e.end, "] has begin after end"));
  }
  if (e.end > data_size) {
    return TensorError(
        file, name,
        absl::StrCat("data_offsets [", e.begin, ", ", e.end, "] extend past the data buffer of ",
                     data_size, " bytes (file truncated?)"));
  }
  const int64_t bytes = elements * elem_size;
  if (e.end - e.begin != bytes) {
    return TensorError(
        file, name,
        absl::StrCat("shape [", absl::StrJoin(e.shape, ", "), "] of ", dtype, " needs ", bytes,
                     " bytes but data_offsets span ", e.end - e.begin));
  }
  return e;
}

}  // namespace

absl::StatusOr<SafetensorsHeader> ParseSafetensorsHeader(std::span<const uint8_t> file_prefix,
                                                         uint64_t file_size,
                                                         std::string_view file_label) {
  if (file_size < 8 || file_prefix.size() < 8) {
    return FileError(file_label,
                     absl::StrCat("is ", file_size, " bytes, too small for a safetensors header"));
  }
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | file_prefix[i];  // little-endian
  if (n > file_size - 8) {
    return FileError(file_label, absl::StrCat("header length ", n, " is beyond the file size ",
                                              file_size, " (truncated or not safetensors)"));
  }
  if (n > kMaxHeaderBytes) {
    return FileError(file_label, absl::StrCat("header length ", n, " is above the limit of ",
                                              kMaxHeaderBytes, " bytes"));
  }
  if (n < 2) return FileError(file_label, "header is too short to be a JSON object");
  if (file_prefix.size() < 8 + n) {
    return absl::InvalidArgumentError(
        absl::StrCat("ParseSafetensorsHeader: ", std::string(file_label), ": only ",
                     file_prefix.size(), " bytes given, the header needs ", 8 + n));
  }
  const char* text = reinterpret_cast<const char*>(file_prefix.data() + 8);
  if (text[0] != '{') return FileError(file_label, "header does not start with '{'");
  // The JSON parser would stop at a NUL and ignore what follows (safetensors' own rejects it).
  if (std::memchr(text, '\0', n) != nullptr) {
    return FileError(file_label, "header holds a NUL byte");
  }
  if (absl::Status values = CheckUntrustedJson({text, static_cast<size_t>(n)}, "its header");
      !values.ok()) {
    return FileError(file_label, std::string(values.message()));
  }
  Json j = Json::parse(text, text + n, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return FileError(file_label, "header is not valid JSON");
  if (!j.is_object()) return FileError(file_label, "header is not a JSON object");

  SafetensorsHeader h;
  h.data_start = static_cast<int64_t>(8 + n);
  const int64_t data_size = static_cast<int64_t>(file_size - 8 - n);
  for (const auto& [key, value] : j.items()) {
    if (key == "__metadata__") {
      if (!value.is_object()) return FileError(file_label, "\"__metadata__\" is not an object");
      for (const auto& [mk, mv] : value.items()) {
        if (!mv.is_string()) {
          return FileError(file_label,
                           absl::StrCat("\"__metadata__\" value of \"", mk, "\" is not a string"));
        }
        h.metadata[mk] = mv.get<std::string>();
      }
      continue;
    }
    ASSIGN_OR_RETURN(SafetensorsEntry e, ParseEntry(file_label, key, value, data_size));
    h.entries.push_back(std::move(e));
  }
  std::sort(h.entries.begin(), h.entries.end(), [](const auto& a, const auto& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  // The data buffer must be tiled exactly: no overlap, no hole, nothing after the last tensor.
  int64_t expect = 0;
  for (size_t i = 0; i < h.entries.size(); ++i) {
    const SafetensorsEntry& e = h.entries[i];
    if (e.begin < expect) {
      return TensorError(file_label, e.name,
                         absl::StrCat("data_offsets [", e.begin, ", ", e.end, "] overlap tensor \"",
                                      h.entries[i - 1].name, "\""));
    }
    if (e.begin > expect) {
      return TensorError(
          file_label, e.name,
          absl::StrCat("data_offsets begin at ", e.begin, ", leaving a hole after byte ", expect,
                       " of the data buffer"));
    }
    expect = e.end;
  }
  if (expect != data_size) {
    return FileError(file_label, absl::StrCat("tensors cover ", expect, " bytes of a ", data_size,
                                              "-byte data buffer (trailing bytes or truncation)"));
  }
  return h;
}

}  // namespace llmint8::model
