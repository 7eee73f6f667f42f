// JSON as text that never throws: nlohmann's dump() throws type_error 316 on a string that is not
// valid UTF-8, and paths, model names and token text may hold such bytes. They are replaced by
// U+FFFD instead.
//
//   std::printf("%s\n", JsonText(result, 2).c_str());
#ifndef LLMINT8_COMMON_JSON_TEXT_H_
#define LLMINT8_COMMON_JSON_TEXT_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace llmint8 {

// `indent` as dump()'s: -1 for one line.
template <typename Json>
std::string JsonText(const Json& j, int indent = -1) {
  return j.dump(indent, ' ', false, Json::error_handler_t::replace);
}

// An untrusted value, for an error message: a number or boolean as written, a string cut to
// 64 bytes, an array or object by its size only. Never dump() such a value: dump() recurses
// once per level of nesting, and a file 200,000 levels deep overflows the stack.
template <typename Json>
std::string JsonSnippet(const Json& j) {
  if (j.is_array()) return "an array of " + std::to_string(j.size()) + " elements";
  if (j.is_object()) return "an object of " + std::to_string(j.size()) + " keys";
  if (j.is_string()) {
    const auto& s = j.template get_ref<const typename Json::string_t&>();
    if (s.size() > 64) return JsonText(Json(s.substr(0, 64))) + "...";
  }
  return JsonText(j);
}

// About how many values a JSON text holds: its '{', '[' and ',' outside strings (each opens a
// container or adds a member or element). One pass, nothing allocated.
inline int64_t CountJsonValues(std::string_view text) {
  int64_t count = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') {
        ++i;  // the escaped character is the string's
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '{' || c == '[' || c == ',') {
      ++count;
    }
  }
  return count;
}

// Parsed, a JSON value takes tens of bytes (up to ~40x its text for a file of tiny values: a
// 64 MB file of "0," would take gigabytes). The files read here hold far fewer: a checkpoint
// header ~15 per tensor, a GPT-2 tokenizer.json ~100k.
inline constexpr int64_t kMaxJsonValues = int64_t{1} << 20;

// Before parsing an untrusted JSON text: InvalidArgument naming `what` when it holds more than
// `max` values.
inline absl::Status CheckJsonValueCount(std::string_view text, std::string_view what,
                                        int64_t max = kMaxJsonValues) {
  const int64_t values = CountJsonValues(text);
  if (values <= max) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat(absl::string_view(what.data(), what.size()), " holds about ", values,
                   " JSON values, more than the ", max, " it can need"));
}

}  // namespace llmint8

#endif  // LLMINT8_COMMON_JSON_TEXT_H_
