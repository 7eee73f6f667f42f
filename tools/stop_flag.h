// The value of `generate --stop`: stop sequences separated by commas. A stop sequence may hold a
// comma written `\,`, and C escapes are read as C reads them (`\n`, `\t`, `\\`, `\x41`), so
// --stop='\n\n,\, and' stops at a blank line or at ", and". (The shell's $'\n' works too.)
#ifndef LLMINT8_TOOLS_STOP_FLAG_H_
#define LLMINT8_TOOLS_STOP_FLAG_H_

#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace llmint8::tools {

struct StopSequences {
  std::vector<std::string> values;
};

// "" is no stop sequences. False, with `error` saying what to change, for an empty sequence
// (",,", a leading or trailing comma) or an escape C does not have.
bool AbslParseFlag(absl::string_view text, StopSequences* out, std::string* error);
// The text AbslParseFlag reads back as `stops`.
std::string AbslUnparseFlag(const StopSequences& stops);

}  // namespace llmint8::tools

#endif  // LLMINT8_TOOLS_STOP_FLAG_H_
