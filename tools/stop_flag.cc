#include "tools/stop_flag.h"

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"

namespace llmint8::tools {

bool AbslParseFlag(absl::string_view text, StopSequences* out, std::string* error) {
  out->values.clear();
  if (text.empty()) return true;
  // Split on the commas no backslash escapes; each piece keeps its escapes for CUnescape, but
  // `\,` becomes a plain comma (CUnescape has no such escape).
  std::vector<std::string> pieces(1);
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '\\' && i + 1 < text.size()) {
      if (text[i + 1] == ',') {
        pieces.back() += ',';
      } else {
        pieces.back().append(text.substr(i, 2).data(), 2);
      }
      ++i;
    } else if (text[i] == ',') {
      pieces.emplace_back();
    } else {
      pieces.back() += text[i];
    }
  }
  for (size_t i = 0; i < pieces.size(); ++i) {
    std::string value;
    std::string why;
    if (!absl::CUnescape(pieces[i], &value, &why)) {
      *error = absl::StrCat("stop sequence ", i + 1, " (", pieces[i], "): ", why,
                            "; write a backslash as \\\\ and a comma as \\,");
      return false;
    }
    if (value.empty()) {
      *error = absl::StrCat("stop sequence ", i + 1,
                            " is empty; separate stop sequences with single commas (a comma "
                            "inside one is \\,)");
      return false;
    }
    out->values.push_back(std::move(value));
  }
  return true;
}

std::string AbslUnparseFlag(const StopSequences& stops) {
  return absl::StrJoin(stops.values, ",", [](std::string* out, const std::string& s) {
    absl::StrAppend(out, absl::StrReplaceAll(absl::CEscape(s), {{",", "\\,"}}));
  });
}

}  // namespace llmint8::tools
