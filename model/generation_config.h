// A Hugging Face generation_config.json: the end-of-sequence ids and the sampling defaults a
// model's authors chose for transformers' generate(). The coordinator stops on those ids and
// takes the defaults for OpenAI API requests that leave a field out (coordinator/openai_api.h),
// as vLLM's --generation-config auto does.
//
// Only the fields below are read; the others (num_beams, max_length, ...) are ignored. A field
// that is null or absent is unset. The file is untrusted input: a field of the wrong type or out
// of range is InvalidArgument naming it.
#ifndef LLMINT8_MODEL_GENERATION_CONFIG_H_
#define LLMINT8_MODEL_GENERATION_CONFIG_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace llmint8::model {

inline constexpr char kGenerationConfigFile[] = "generation_config.json";

struct GenerationConfig {
  // "eos_token_id": one id or a list (any of them ends a sequence); empty when unset. Each is
  // below the model's vocab_size, at most kMaxEosTokenIds of them.
  std::vector<int32_t> eos_token_ids;
  std::optional<bool> do_sample;
  std::optional<float> temperature;         // finite, >= 0
  std::optional<int32_t> top_k;             // >= 0 (0: off)
  std::optional<float> top_p;               // in (0, 1]
  std::optional<float> min_p;               // in [0, 1]
  std::optional<float> repetition_penalty;  // finite, > 0
  std::optional<int32_t> max_new_tokens;    // >= 1

  friend bool operator==(const GenerationConfig&, const GenerationConfig&) = default;
};

inline constexpr int kMaxEosTokenIds = 64;

// `base` with the fields `over` sets (its eos list, when it has one) in their place.
GenerationConfig Overlay(GenerationConfig base, const GenerationConfig& over);

// `vocab_size`: the model's (config.json), which every eos id must be below. `source`: where
// the text came from (a path, a flag), which errors name first.
absl::StatusOr<GenerationConfig> ParseGenerationConfig(
    std::string_view json, int64_t vocab_size, std::string_view source = kGenerationConfigFile);

// `path`: a generation_config.json, or a directory holding one. NotFound when there is none;
// errors name the file.
absl::StatusOr<GenerationConfig> LoadGenerationConfig(const std::string& path, int64_t vocab_size);

}  // namespace llmint8::model

#endif  // LLMINT8_MODEL_GENERATION_CONFIG_H_
