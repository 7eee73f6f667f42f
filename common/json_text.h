// JSON as text that never throws: nlohmann's dump() throws type_error 316 on a string that is not
// valid UTF-8, and paths, model names and token text may hold such bytes. They are replaced by
// U+FFFD instead.
//
//   std::printf("%s\n", JsonText(result, 2).c_str());
#ifndef LLMINT8_COMMON_JSON_TEXT_H_
#define LLMINT8_COMMON_JSON_TEXT_H_

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
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

// How deep untrusted JSON may nest. nlohmann's parser and destructor are iterative, but dump()
// and copies recurse once per level: a text a million arrays deep (2 MB) would overflow the
// stack. Nothing llmint8 reads needs more (a JSON schema nests at most 32 schemas, about 70 levels
// in a request).
inline constexpr int64_t kMaxJsonNesting = 256;

// What a JSON text holds, by its brackets, quotes and commas outside strings: about how many
// values (each '{', '[' and ',' opens a container or adds a member or element), how many
// objects, arrays and strings (keys included: each is an allocation of its own when parsed),
// and how deep the containers nest. One pass, nothing allocated; malformed text is counted
// as written.
struct JsonShape {
  int64_t values = 0;
  int64_t allocated = 0;
  int64_t nesting = 0;
};
inline JsonShape MeasureJson(std::string_view text) {
  JsonShape shape;
  int64_t depth = 0;
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
      ++shape.allocated;
    } else if (c == '{' || c == '[') {
      ++shape.values;
      ++shape.allocated;
      shape.nesting = std::max(shape.nesting, ++depth);
    } else if (c == '}' || c == ']') {
      --depth;
    } else if (c == ',') {
      ++shape.values;
    }
  }
  return shape;
}

// Parsed, a JSON value takes tens of bytes (up to ~40x its text for a file of tiny values: a
// 64 MB file of "0," would take gigabytes). The files read here hold far fewer: a checkpoint
// header ~15 per tensor, a GPT-2 tokenizer.json ~100k.
inline constexpr int64_t kMaxJsonValues = int64_t{1} << 20;

// Before parsing an untrusted JSON text: InvalidArgument naming `what` when it holds more than
// `max_values` values, more than `max_allocated` objects, arrays and strings (an empty one, 3
// bytes of text as "{}," or "\"\",", takes ~60-80 bytes parsed), or nests deeper than
// kMaxJsonNesting.
inline absl::Status CheckUntrustedJson(
    std::string_view text, std::string_view what, int64_t max_values = kMaxJsonValues,
    int64_t max_allocated = std::numeric_limits<int64_t>::max()) {
  const JsonShape shape = MeasureJson(text);
  const absl::string_view name(what.data(), what.size());
  if (shape.values > max_values) {
    return absl::InvalidArgumentError(absl::StrCat(name, " holds about ", shape.values,
                                                   " JSON values, more than the ", max_values,
                                                   " it can need"));
  }
  if (shape.nesting > kMaxJsonNesting) {
    return absl::InvalidArgumentError(absl::StrCat(name, " is nested ", shape.nesting,
                                                   " deep; JSON nested more than ", kMaxJsonNesting,
                                                   " deep is refused"));
  }
  if (shape.allocated > max_allocated) {
    return absl::InvalidArgumentError(absl::StrCat(name, " holds ", shape.allocated,
                                                   " JSON objects, arrays and strings (keys "
                                                   "included), more than the ",
                                                   max_allocated, " it can need"));
  }
  return absl::OkStatus();
}

}  // namespace llmint8

#endif  // LLMINT8_COMMON_JSON_TEXT_H_
