#include "coordinator/json_string_pattern.h"

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "coordinator/regex_parser.h"

namespace llmint8::coordinator {
namespace {

using regex_internal::CharSet;
using regex_internal::Node;

// The hex digit `v` (0-15) in both cases, as a class's items: "7", or "Aa".
std::string HexCases(int v) {
  if (v < 10) return std::string(1, static_cast<char>('0' + v));
  return absl::StrCat(std::string(1, static_cast<char>('A' + v - 10)),
                      std::string(1, static_cast<char>('a' + v - 10)));
}

// `set`'s characters as a JSON string writes them: alternatives, none when it is empty.
std::vector<std::string> JsonForms(const CharSet& set) {
  std::vector<std::string> forms;
  // Printable ASCII but '"' and '\\' (and DEL) as themselves, in one class of \xHH ranges.
  std::string plain;
  for (int c = 0x20; c < 0x80;) {
    auto takes = [&](int x) { return x < 0x80 && x != '"' && x != '\\' && set.ascii[x]; };
    if (!takes(c)) {
      ++c;
      continue;
    }
    int last = c;
    while (takes(last + 1)) ++last;
    absl::StrAppend(&plain, absl::StrFormat("\\x%02X", c));
    if (last > c) absl::StrAppend(&plain, absl::StrFormat("-\\x%02X", last));
    c = last + 1;
  }
  if (!plain.empty()) forms.push_back(absl::StrCat("[", plain, "]"));
  if (set.all_multibyte) forms.push_back("[^\\x00-\\x7F]");
  for (const std::string& ch : set.multibyte) forms.push_back(ch);  // UTF-8, not special
  if (set.ascii['"']) forms.push_back("\\\\\"");
  if (set.ascii['\\']) forms.push_back("\\\\\\\\");
  // Control characters: the short escapes, and \u00XX by their high hex digit.
  std::string short_escapes;
  for (const auto& [c, e] : {std::pair{'\b', 'b'}, std::pair{'\f', 'f'}, std::pair{'\n', 'n'},
                             std::pair{'\r', 'r'}, std::pair{'\t', 't'}}) {
    if (set.ascii[static_cast<size_t>(c)]) short_escapes += e;
  }
  if (!short_escapes.empty()) forms.push_back(absl::StrCat("\\\\[", short_escapes, "]"));
  for (int high = 0; high < 2; ++high) {
    std::string lows;
    for (int low = 0; low < 16; ++low) {
      if (set.ascii[static_cast<size_t>(high * 16 + low)]) lows += HexCases(low);
    }
    if (!lows.empty()) forms.push_back(absl::StrCat("\\\\u00", high, "[", lows, "]"));
  }
  return forms;
}

absl::Status Write(const Node& n, std::string& out) {
  switch (n.kind) {
    case Node::Kind::kEmpty:
      return absl::OkStatus();
    case Node::Kind::kSet: {
      const std::vector<std::string> forms = JsonForms(n.set);
      if (forms.empty()) {
        return absl::InvalidArgumentError("a class that matches no character (not served)");
      }
      absl::StrAppend(&out, "(?:", absl::StrJoin(forms, "|"), ")");
      return absl::OkStatus();
    }
    case Node::Kind::kConcat:
      for (const Node& c : n.children) RETURN_IF_ERROR(Write(c, out));
      return absl::OkStatus();
    case Node::Kind::kAlt:
      out += "(?:";
      for (size_t i = 0; i < n.children.size(); ++i) {
        if (i > 0) out += "|";
        RETURN_IF_ERROR(Write(n.children[i], out));
      }
      out += ")";
      return absl::OkStatus();
    case Node::Kind::kRepeat:
      out += "(?:";
      RETURN_IF_ERROR(Write(n.children[0], out));
      absl::StrAppend(&out, "){", n.min, ",", n.max < 0 ? "" : absl::StrCat(n.max), "}");
      return absl::OkStatus();
  }
  return absl::InternalError("json string pattern: an unknown node");
}

}  // namespace

absl::StatusOr<std::string> JsonStringPattern(std::string_view pattern) {
  ASSIGN_OR_RETURN(const Node root,
                   regex_internal::ParsePattern(pattern, {.ascii_complements = true}));
  std::string out;
  RETURN_IF_ERROR(Write(root, out));
  return out;
}

}  // namespace llmint8::coordinator
