// The model's generation_config.json as the coordinator serves it (--generation_config): the
// end-of-sequence ids every request stops at, the OpenAI API's defaults for fields a request
// leaves out (openai::RequestDefaultsFrom), and what GetModelInfo reports of them.
#ifndef LLMINT8_COORDINATOR_GENERATION_DEFAULTS_H_
#define LLMINT8_COORDINATOR_GENERATION_DEFAULTS_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "llmint8/v1/generation.pb.h"
#include "model/config.h"
#include "model/generation_config.h"

namespace llmint8::coordinator {

struct ServedGenerationConfig {
  // The file read (and " with --override_generation_config"), or
  // "--override_generation_config" alone.
  std::string source;
  model::GenerationConfig config;
};

// `flag`: "auto" (the directory of `model_spec`'s generation_config.json when it has one;
// nothing for a synthetic model), "none", or a generation_config.json or a directory holding
// one (NotFound when it does not). A file that is not one is InvalidArgument naming it.
// `override_json` (vLLM's --override-generation-config): a generation_config.json's text whose
// fields replace the file's (or stand alone, without one); empty: none. Its temperature,
// top_k, top_p or min_p, without a do_sample of its own, also lift the file's do_sample false
// (they ask for sampling). Unlike vLLM's, its eos_token_id is read too (replacing the file's).
absl::StatusOr<std::optional<ServedGenerationConfig>> LoadServedGenerationConfig(
    const std::string& flag, const std::string& override_json, const std::string& model_spec,
    const model::OptConfig& config);

// The ids that end a sequence, sorted, once each: config.json's eos_token_id and the file's
// (as vLLM adds them to the tokenizer's; transformers would stop at the file's alone).
std::vector<int32_t> EosTokenIds(const model::OptConfig& config,
                                 const std::optional<ServedGenerationConfig>& served);

// GetModelInfo's generation_defaults: what the OpenAI API applies (temperature 0 for a file
// whose do_sample is false), each field only where the file sets it.
v1::GenerationDefaults GenerationDefaultsMessage(
    const std::optional<ServedGenerationConfig>& served);

// For the coordinator's log: "temperature 0.8, top_k 40, max_new_tokens 64", or "none".
std::string DescribeGenerationDefaults(const v1::GenerationDefaults& defaults);

}  // namespace llmint8::coordinator

#endif  // LLMINT8_COORDINATOR_GENERATION_DEFAULTS_H_
