#include "coordinator/generation_defaults.h"

#include <algorithm>
#include <filesystem>
#include <system_error>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "coordinator/openai_api.h"
#include "model/model_spec.h"

namespace llmint8::coordinator {

namespace {

// The model's file as `flag` names it, nullopt for none.
absl::StatusOr<std::optional<ServedGenerationConfig>> LoadFile(const std::string& flag,
                                                               const std::string& model_spec,
                                                               const model::OptConfig& config) {
  if (flag == "none") return std::nullopt;
  std::string path = flag;
  if (flag == "auto") {
    const std::optional<std::string> dir = model::ModelSpecDirectory(model_spec);
    std::error_code error;
    if (!dir.has_value() ||
        !std::filesystem::exists(std::filesystem::path(*dir) / model::kGenerationConfigFile,
                                 error)) {
      return std::nullopt;
    }
    path = *dir;
  }
  absl::StatusOr<model::GenerationConfig> loaded =
      model::LoadGenerationConfig(path, config.vocab_size);
  if (!loaded.ok()) {
    return absl::Status(
        loaded.status().code(),
        // The message names the file first.
        absl::StrCat("--generation_config", flag == "auto" ? "=auto" : "", ": ",
                     loaded.status().message(), " (--generation_config=none serves without it)"));
  }
  std::error_code error;
  const bool is_dir = std::filesystem::is_directory(path, error);
  ServedGenerationConfig served;
  served.source =
      is_dir ? (std::filesystem::path(path) / model::kGenerationConfigFile).string() : path;
  served.config = *std::move(loaded);
  return served;
}

}  // namespace

absl::StatusOr<std::optional<ServedGenerationConfig>> LoadServedGenerationConfig(
    const std::string& flag, const std::string& override_json, const std::string& model_spec,
    const model::OptConfig& config) {
  ASSIGN_OR_RETURN(std::optional<ServedGenerationConfig> served,
                   LoadFile(flag, model_spec, config));
  if (override_json.empty()) return served;
  ASSIGN_OR_RETURN(const model::GenerationConfig over,
                   model::ParseGenerationConfig(override_json, config.vocab_size,
                                                "--override_generation_config"));
  if (!served.has_value()) {
    served.emplace();
    served->source = "--override_generation_config";
  } else {
    served->source += " with --override_generation_config";
  }
  // Sampling fields set over a file whose do_sample is false ask for sampling: vLLM applies
  // them whatever do_sample says, and an operator who sets a temperature means it.
  const bool samples = over.temperature.has_value() || over.top_k.has_value() ||
                       over.top_p.has_value() || over.min_p.has_value();
  if (samples && !over.do_sample.has_value()) served->config.do_sample.reset();
  served->config = model::Overlay(std::move(served->config), over);
  return served;
}

std::vector<int32_t> EosTokenIds(const model::OptConfig& config,
                                 const std::optional<ServedGenerationConfig>& served) {
  std::vector<int32_t> ids = {static_cast<int32_t>(config.eos_token_id)};
  if (served.has_value()) {
    ids.insert(ids.end(), served->config.eos_token_ids.begin(), served->config.eos_token_ids.end());
  }
  std::sort(ids.begin(), ids.end());
  ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
  return ids;
}

v1::GenerationDefaults GenerationDefaultsMessage(
    const std::optional<ServedGenerationConfig>& served) {
  v1::GenerationDefaults m;
  if (!served.has_value()) return m;
  const model::GenerationConfig& file = served->config;
  const openai::RequestDefaults d = openai::RequestDefaultsFrom(file);
  m.set_source(served->source);
  if (file.do_sample == false || file.temperature.has_value()) m.set_temperature(d.temperature);
  if (d.top_k.has_value()) m.set_top_k(*d.top_k);
  if (d.top_p.has_value()) m.set_top_p(*d.top_p);
  if (d.min_p.has_value()) m.set_min_p(*d.min_p);
  if (d.repetition_penalty.has_value()) m.set_repetition_penalty(*d.repetition_penalty);
  if (d.max_tokens.has_value()) m.set_max_new_tokens(*d.max_tokens);
  return m;
}

std::string DescribeGenerationDefaults(const v1::GenerationDefaults& m) {
  std::vector<std::string> parts;
  if (m.has_temperature()) parts.push_back(absl::StrCat("temperature ", m.temperature()));
  if (m.has_top_k()) parts.push_back(absl::StrCat("top_k ", m.top_k()));
  if (m.has_top_p()) parts.push_back(absl::StrCat("top_p ", m.top_p()));
  if (m.has_min_p()) parts.push_back(absl::StrCat("min_p ", m.min_p()));
  if (m.has_repetition_penalty()) {
    parts.push_back(absl::StrCat("repetition_penalty ", m.repetition_penalty()));
  }
  if (m.has_max_new_tokens()) parts.push_back(absl::StrCat("max_new_tokens ", m.max_new_tokens()));
  return parts.empty() ? "none" : absl::StrJoin(parts, ", ");
}

}  // namespace llmint8::coordinator
