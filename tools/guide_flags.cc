#include "tools/guide_flags.h"

#include <string>
#include <utility>

#include "absl/flags/flag.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "common/file.h"
#include "common/status_macros.h"
#include "coordinator/json_schema.h"
#include "coordinator/tokenizer.h"
#include "tools/flags.h"

namespace llmint8::tools {
namespace {

// --guided_json=@FILE: the schema in FILE (at most what a request may hold; a pipe too, as
// <(...) or /dev/stdin pass).
absl::StatusOr<std::string> ReadSchemaFile(const std::string& path) {
  if (path.empty()) return absl::InvalidArgumentError("@ with no file name after it");
  ASSIGN_OR_RETURN(std::string text,
                   ReadFileToString(path, coordinator::kMaxJsonSchemaBytes, /*allow_pipe=*/true));
  if (text.find_first_not_of(" \t\n\r") == std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat(path, " holds no schema"));
  }
  if (std::optional<size_t> bad = coordinator::FindInvalidUtf8(text); bad.has_value()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, " is not valid UTF-8 (byte ", *bad, "); a schema is JSON text"));
  }
  return text;
}

}  // namespace

absl::StatusOr<std::optional<v1::Guide>> GuideFromFlags() {
  const std::vector<std::string>& choices = absl::GetFlag(FLAGS_guided_choice).values;
  const std::string regex = absl::GetFlag(FLAGS_guided_regex);
  const std::string schema = absl::GetFlag(FLAGS_guided_json);
  const bool json_object = absl::GetFlag(FLAGS_json_object);
  if (!choices.empty() + json_object + !regex.empty() + !schema.empty() > 1) {
    return absl::InvalidArgumentError(
        "pass one of --guided_choice, --guided_regex, --guided_json and --json_object");
  }
  v1::Guide guide;
  for (const std::string& choice : choices) {
    if (std::optional<size_t> bad = coordinator::FindInvalidUtf8(choice); bad.has_value()) {
      return absl::InvalidArgumentError(absl::StrCat("--guided_choice '", absl::CHexEscape(choice),
                                                     "' is not valid UTF-8 (byte ", *bad,
                                                     "); choices are text"));
    }
    guide.mutable_choice()->add_choices(choice);
  }
  if (!regex.empty()) {
    if (std::optional<size_t> bad = coordinator::FindInvalidUtf8(regex); bad.has_value()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--guided_regex is not valid UTF-8 (byte ", *bad, ")"));
    }
    guide.set_regex(regex);
  }
  if (!schema.empty()) {
    if (!schema.starts_with("@")) {
      if (std::optional<size_t> bad = coordinator::FindInvalidUtf8(schema); bad.has_value()) {
        return absl::InvalidArgumentError(
            absl::StrCat("--guided_json is not valid UTF-8 (byte ", *bad, ")"));
      }
      guide.set_json_schema(schema);
    } else {
      absl::StatusOr<std::string> text = ReadSchemaFile(schema.substr(1));
      if (!text.ok()) {
        return absl::InvalidArgumentError(absl::StrCat("--guided_json: ", text.status().message()));
      }
      guide.set_json_schema(*std::move(text));
    }
  }
  if (json_object) guide.set_json_object(true);
  if (choices.empty() && regex.empty() && schema.empty() && !json_object) return std::nullopt;
  return guide;
}

}  // namespace llmint8::tools
