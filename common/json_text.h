// JSON as text that never throws: nlohmann's dump() throws type_error 316 on a string that is not
// valid UTF-8, and paths, model names and token text may hold such bytes. They are replaced by
// U+FFFD instead.
//
//   std::printf("%s\n", JsonText(result, 2).c_str());
#ifndef LLMINT8_COMMON_JSON_TEXT_H_
#define LLMINT8_COMMON_JSON_TEXT_H_

#include <string>

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

}  // namespace llmint8

#endif  // LLMINT8_COMMON_JSON_TEXT_H_
