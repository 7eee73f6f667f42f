#include "model/generation_config.h"

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <system_error>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "common/file.h"
#include "common/json_text.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"

namespace llmint8::model {
namespace {

using Json = nlohmann::json;

// ParseGenerationConfig names the source before it.
absl::Status FieldError(const char* field, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("field \"", field, "\": ", what));
}

// The field's value, or nullptr when it is absent or null (unset).
const Json* Find(const Json& j, const char* field) {
  auto it = j.find(field);
  return it == j.end() || it->is_null() ? nullptr : &*it;
}

absl::Status GetBool(const Json& j, const char* field, std::optional<bool>* out) {
  const Json* v = Find(j, field);
  if (v == nullptr) return absl::OkStatus();
  if (!v->is_boolean()) {
    return FieldError(field, absl::StrCat("must be true/false, got ", JsonSnippet(*v)));
  }
  *out = v->get<bool>();
  return absl::OkStatus();
}

// An integer in [min_value, max_value].
absl::StatusOr<int64_t> IntValue(const Json& v, const char* field, int64_t min_value,
                                 int64_t max_value) {
  std::optional<int64_t> value;
  if (v.is_number_unsigned()) {
    if (v.get<uint64_t>() <= static_cast<uint64_t>(max_value)) {
      value = static_cast<int64_t>(v.get<uint64_t>());
    }
  } else if (v.is_number_integer()) {
    value = v.get<int64_t>();
  }
  if (!value.has_value() || *value < min_value || *value > max_value) {
    return FieldError(field, absl::StrCat("must be an integer in [", min_value, ", ", max_value,
                                          "], got ", JsonSnippet(v)));
  }
  return *value;
}

absl::Status GetInt(const Json& j, const char* field, int32_t min_value,
                    std::optional<int32_t>* out) {
  const Json* v = Find(j, field);
  if (v == nullptr) return absl::OkStatus();
  ASSIGN_OR_RETURN(const int64_t value,
                   IntValue(*v, field, min_value, std::numeric_limits<int32_t>::max()));
  *out = static_cast<int32_t>(value);
  return absl::OkStatus();
}

// A number in [min_value, max_value]; `open_min`: min_value itself excluded.
absl::Status GetFloat(const Json& j, const char* field, double min_value, bool open_min,
                      double max_value, std::optional<float>* out) {
  const Json* v = Find(j, field);
  if (v == nullptr) return absl::OkStatus();
  // Checked as the sampler will hold it: 1e39 is inf as a float, 1e-46 is 0.
  const float value = v->is_number() ? static_cast<float>(v->get<double>()) : std::nanf("");
  const bool above_min = open_min ? value > min_value : value >= min_value;
  if (!std::isfinite(value) || !above_min || value > max_value) {
    const std::string range =
        std::isinf(max_value)
            ? absl::StrCat(open_min ? "> " : ">= ", min_value)
            : absl::StrCat("in ", open_min ? "(" : "[", min_value, ", ", max_value, "]");
    return FieldError(field, absl::StrCat("must be a number ", range, ", got ", JsonSnippet(*v)));
  }
  *out = value;
  return absl::OkStatus();
}

// "eos_token_id": an id or a list of them (transformers accepts both).
absl::Status GetEosTokenIds(const Json& j, int64_t vocab_size, GenerationConfig& c) {
  constexpr char kField[] = "eos_token_id";
  const Json* v = Find(j, kField);
  if (v == nullptr) return absl::OkStatus();
  // Never copied: a copy recurses once per level of nesting, and a file's value may be nested
  // deeper than the stack holds.
  const std::span<const Json> list = v->is_array()
                                         ? std::span<const Json>(v->get_ref<const Json::array_t&>())
                                         : std::span<const Json>(v, 1);
  if (list.size() > static_cast<size_t>(kMaxEosTokenIds)) {
    return FieldError(kField, absl::StrCat("lists ", list.size(), " ids, more than the ",
                                           kMaxEosTokenIds, " supported"));
  }
  const int64_t below = std::min<int64_t>(vocab_size, std::numeric_limits<int32_t>::max());
  for (const Json& id : list) {
    if (!id.is_number_integer()) {
      return FieldError(
          kField, absl::StrCat("must be a token id or a list of them, got ", JsonSnippet(id)));
    }
    absl::StatusOr<int64_t> value = IntValue(id, kField, 0, below - 1);
    if (!value.ok()) {
      return FieldError(kField, absl::StrCat(JsonSnippet(id), " is not a token id of this model (",
                                             "vocab_size ", vocab_size, ")"));
    }
    c.eos_token_ids.push_back(static_cast<int32_t>(*value));
  }
  return absl::OkStatus();
}

absl::Status ParseFields(const Json& j, int64_t vocab_size, GenerationConfig& c) {
  constexpr double kInf = std::numeric_limits<double>::infinity();
  RETURN_IF_ERROR(GetEosTokenIds(j, vocab_size, c));
  RETURN_IF_ERROR(GetBool(j, "do_sample", &c.do_sample));
  RETURN_IF_ERROR(GetFloat(j, "temperature", 0, /*open_min=*/false, kInf, &c.temperature));
  RETURN_IF_ERROR(GetInt(j, "top_k", 0, &c.top_k));
  RETURN_IF_ERROR(GetFloat(j, "top_p", 0, /*open_min=*/true, 1, &c.top_p));
  RETURN_IF_ERROR(GetFloat(j, "min_p", 0, /*open_min=*/false, 1, &c.min_p));
  RETURN_IF_ERROR(
      GetFloat(j, "repetition_penalty", 0, /*open_min=*/true, kInf, &c.repetition_penalty));
  RETURN_IF_ERROR(GetInt(j, "max_new_tokens", 1, &c.max_new_tokens));
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<GenerationConfig> ParseGenerationConfig(std::string_view text, int64_t vocab_size,
                                                       std::string_view source) {
  const std::string name(source);  // absl::StrCat takes no std::string_view here
  RETURN_IF_ERROR(CheckUntrustedJson(text, name));
  const Json j = Json::parse(text.begin(), text.end(), /*cb=*/nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    return absl::InvalidArgumentError(absl::StrCat(name, " is not valid JSON"));
  }
  if (!j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(name, " must be a JSON object"));
  }
  GenerationConfig c;
  if (const absl::Status fields = ParseFields(j, vocab_size, c); !fields.ok()) {
    return absl::Status(fields.code(), absl::StrCat(name, ": ", fields.message()));
  }
  return c;
}

GenerationConfig Overlay(GenerationConfig base, const GenerationConfig& over) {
  if (!over.eos_token_ids.empty()) base.eos_token_ids = over.eos_token_ids;
  auto take = [](auto& field, const auto& value) {
    if (value.has_value()) field = value;
  };
  take(base.do_sample, over.do_sample);
  take(base.temperature, over.temperature);
  take(base.top_k, over.top_k);
  take(base.top_p, over.top_p);
  take(base.min_p, over.min_p);
  take(base.repetition_penalty, over.repetition_penalty);
  take(base.max_new_tokens, over.max_new_tokens);
  return base;
}

absl::StatusOr<GenerationConfig> LoadGenerationConfig(const std::string& path, int64_t vocab_size) {
  std::error_code error;
  const std::string file = std::filesystem::is_directory(path, error)
                               ? (std::filesystem::path(path) / kGenerationConfigFile).string()
                               : path;
  if (!std::filesystem::exists(file, error)) {
    return absl::NotFoundError(absl::StrCat("no ", file));
  }
  ASSIGN_OR_RETURN(const std::string text, ReadFileToString(file));
  return ParseGenerationConfig(text, vocab_size, file);
}

}  // namespace llmint8::model
