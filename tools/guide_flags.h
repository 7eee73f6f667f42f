// The guided-decoding flags of the clients (`generate`, `loadtest`): --guided_choice,
// --guided_regex, --guided_json (a schema, or @FILE) and --json_object, as a request's Guide.
#ifndef LLMINT8_TOOLS_GUIDE_FLAGS_H_
#define LLMINT8_TOOLS_GUIDE_FLAGS_H_

#include <optional>

#include "absl/status/statusor.h"
#include "llmint8/v1/generation.pb.h"

namespace llmint8::tools {

// The guide the flags ask for (nullopt: none), read before anything is sent: InvalidArgument
// naming the flag when more than one is given, text is not UTF-8, or a schema file cannot be
// read (the server checks the rest: the pattern's syntax, the schema's keywords).
absl::StatusOr<std::optional<v1::Guide>> GuideFromFlags();

}  // namespace llmint8::tools

#endif  // LLMINT8_TOOLS_GUIDE_FLAGS_H_
