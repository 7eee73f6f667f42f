// What the OpenAI completions and chat completions APIs share (coordinator/openai_api.h,
// coordinator/openai_chat.h): reading JSON fields with errors that name them, the sampling and
// streaming fields of a request, and the pieces of an answer (usage, finish reasons, logprob
// labels, the envelope). Internal to those two files and their tests.
#ifndef LLMINT8_COORDINATOR_OPENAI_FIELDS_H_
#define LLMINT8_COORDINATOR_OPENAI_FIELDS_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "coordinator/openai_api.h"
#include "llmint8/v1/generation.pb.h"
#include "nlohmann/json.hpp"

namespace llmint8::coordinator::openai::internal {

// Insertion-ordered: top_logprobs entries list the likeliest first, as OpenAI and vLLM do.
using json = nlohmann::ordered_json;

// InvalidArgument "field 'F' must be WANT".
absl::Status FieldError(std::string_view field, std::string_view want);
// Present and not null.
const json* Find(const json& body, const char* field);
// Integers past int64 (JSON allows them) saturate, so range checks see them as too large.
absl::StatusOr<int64_t> Integer(const json& v, const char* field);
absl::StatusOr<float> Number(const json& v, const char* field);
absl::StatusOr<bool> Bool(const json& v, const char* field);
// An integer field's value clamped to int32, so the service's range check reports it.
int32_t SaturatedInt32(int64_t n);

// Calls set(value) when `field` is present (and not null); a value of the wrong type is
// InvalidArgument naming the field.
template <typename T, typename Set>
absl::Status IfPresent(const json& body, const char* field,
                       absl::StatusOr<T> (*get)(const json&, const char*), Set set) {
  const json* v = Find(body, field);
  if (v == nullptr) return absl::OkStatus();
  absl::StatusOr<T> value = get(*v, field);
  if (!value.ok()) return value.status();
  set(*value);
  return absl::OkStatus();
}

// Text from the model or the file system may be invalid UTF-8: replaced, never thrown on.
std::string Dump(const json& j);

// The most keys one object of a request may have (logit_bias takes at most 300).
inline constexpr int64_t kMaxObjectKeys = 1024;
// Objects, arrays and strings (keys included) in one request body: kMaxPrompts prompts,
// messages and their content parts, tool schemas all fit many times over.
inline constexpr int64_t kMaxBodyAllocations = int64_t{1} << 18;

// A JSON object whose "model", when given, is the served model's id (NotFound otherwise), and
// no object in it of more than kMaxObjectKeys keys (InvalidArgument).
absl::StatusOr<json> ParseBody(std::string_view text, std::string_view model_id);

// The fields both APIs read alike into `r`: n, best_of, max_tokens (default 16), temperature,
// top_p, top_k, seed, stop, the penalties, ignore_eos, min_p, min_tokens,
// truncate_prompt_tokens, logit_bias, stop_token_ids, stream, stream_options, return_token_ids.
// Sampling fields left out get `defaults`' (not max_tokens: each API applies defaults.max_tokens
// its own way).
absl::Status ParseSharedFields(const json& body, const RequestDefaults& defaults,
                               CompletionRequest& r);

// "length", "stop", or nullptr while the choice runs.
const char* FinishReason(v1::FinishReason reason);
json UsageJson(const v1::Usage& u);
// A token's label: its text, or "token_id:<id>" (vLLM's form) where it has none (a model
// served without a tokenizer).
std::string CandidateKey(const std::string& text, int32_t token_id);
// A chosen token's label: its text decoded alone (as its candidates' are), else its piece of
// the streamed text, keyed as CandidateKey.
std::string TokenKey(const std::string& token_text, const std::string& piece, int32_t token_id);
// A logprob as JSON can hold it: -inf (a masked id) becomes -9999, as vLLM reports it
// (JSON has no infinity; null would break clients that expect numbers).
double Finite(float logprob);
template <typename Token>
std::optional<float> Logprob(const Token& token) {
  return token.has_logprob() ? std::optional<float>(token.logprob()) : std::nullopt;
}
// {"id", "object", "created", "model"}.
json Envelope(std::string_view id, std::string_view object, int64_t created,
              std::string_view model_id);
// A whole answer (text_completion or chat.completion): the envelope, choice i built by
// `choice(i, its responses)`, and the usage summed over the choices (TotalUsage; null
// without choices).
std::string AnswerJson(
    const CompletionRequest& request, const std::vector<std::vector<v1::GenerateResponse>>& choices,
    std::string_view object, std::string_view completion_id, int64_t created,
    std::string_view model_id,
    const std::function<json(size_t, std::span<const v1::GenerateResponse>)>& choice);
// One server-sent event of `object` chunks holding `choice`, made of `response`. With
// include_usage its usage is `usage_so_far` under continuous_usage (prompt_tokens_details from
// the choice's final response on), else null while the client waits for its usage event.
std::string ChunkEvent(const CompletionRequest& request, std::string_view object, json choice,
                       std::string_view completion_id, int64_t created, std::string_view model_id,
                       const v1::GenerateResponse& response, const v1::Usage* usage_so_far);

}  // namespace llmint8::coordinator::openai::internal

#endif  // LLMINT8_COORDINATOR_OPENAI_FIELDS_H_
