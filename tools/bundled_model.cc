#include "tools/bundled_model.h"

#include <filesystem>
#include <system_error>

namespace llmint8::tools {

namespace fs = std::filesystem;

std::vector<std::string> BundledModelCandidates(const std::string& exe) {
  const fs::path dir = fs::path(exe).parent_path();
  return {(dir / ".." / "share" / "llmint8" / "models" / kBundledModelName).lexically_normal(),
          (dir / ".." / "models" / kBundledModelName).lexically_normal(),
          (fs::path("models") / kBundledModelName).string()};
}

std::optional<std::string> FindBundledModel(const std::string& exe) {
  for (const std::string& candidate : BundledModelCandidates(exe)) {
    std::error_code ec;
    if (fs::is_regular_file(fs::path(candidate) / "config.json", ec)) return candidate;
  }
  return std::nullopt;
}

}  // namespace llmint8::tools
