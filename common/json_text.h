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

}  // namespace llmint8

#endif  // LLMINT8_COMMON_JSON_TEXT_H_
