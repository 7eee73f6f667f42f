// The model `llmint8 serve` and `llmint8 coordinator` use when --model is not given: the small
// OPT the project trains and ships (docs/model.md), found next to the binary.
#ifndef LLMINT8_TOOLS_BUNDLED_MODEL_H_
#define LLMINT8_TOOLS_BUNDLED_MODEL_H_

#include <optional>
#include <string>
#include <vector>

namespace llmint8::tools {

inline constexpr char kBundledModelName[] = "opt-sotu-cpu";

// Where the bundled model may be, in order, for the executable at `exe` (an absolute path):
// <exe dir>/../share/llmint8/models/<name> (an install, e.g. the container image),
// <exe dir>/../models/<name> (the build tree: <build>/tools/llmint8, where <build>/models links
// to the source tree's), ./models/<name>.
std::vector<std::string> BundledModelCandidates(const std::string& exe);

// The first candidate holding a config.json, or nullopt.
std::optional<std::string> FindBundledModel(const std::string& exe);

}  // namespace llmint8::tools

#endif  // LLMINT8_TOOLS_BUNDLED_MODEL_H_
