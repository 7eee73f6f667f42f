#include "coordinator/request_validation.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "coordinator/guide_cache.h"
#include "coordinator/guided_regex.h"
#include "coordinator/json_schema.h"
#include "coordinator/output_constraint.h"

namespace llmint8::coordinator {

absl::Status ValidatePromptInput(const v1::GenerateRequest& request, const ModelLimits& limits) {
  const bool has_text =
      request.prompt_case() == v1::GenerateRequest::kText && !request.text().empty();
  const bool has_ids =
      request.prompt_case() == v1::GenerateRequest::kTokenIds && request.token_ids().ids_size() > 0;
  if (!has_text && !has_ids) {
    return absl::InvalidArgumentError(
        "the prompt is empty; set GenerateRequest.text or GenerateRequest.token_ids.ids");
  }
  if (has_text && !limits.has_tokenizer) {
    return absl::FailedPreconditionError(
        "this model was served without a tokenizer (no vocab.json/merges.txt); send the "
        "prompt as token_ids");
  }
  return has_text ? ValidateTextLength(request.text().size(), limits, "prompt text")
                  : absl::OkStatus();
}

absl::Status ValidateTextLength(size_t bytes, const ModelLimits& limits, std::string_view what) {
  if (limits.max_token_bytes <= 0 ||
      static_cast<int64_t>(bytes) <= limits.max_context * limits.max_token_bytes) {
    return absl::OkStatus();
  }
  return absl::OutOfRangeError(
      absl::StrCat("the ", absl::string_view(what.data(), what.size()), " is ", bytes,
                   " bytes: more than the model's context of ", limits.max_context,
                   " tokens can hold (a token is at most ", limits.max_token_bytes,
                   " bytes); send a shorter text"));
}

absl::StatusOr<GenerationParams> ValidateGenerationParams(const v1::GenerateRequest& request,
                                                          const ModelLimits& limits,
                                                          GuideCache* guides) {
  if (absl::Status input = ValidatePromptInput(request, limits); !input.ok()) return input;
  GenerationParams p;
  if (request.max_new_tokens() < 0 ||
      (request.max_new_tokens() == 0 && !request.prompt_logprobs() && !request.echo_prompt())) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_new_tokens is ", request.max_new_tokens(),
                     "; it must be at least 1 (0 only with prompt_logprobs or echo_prompt, to "
                     "score or echo the prompt)"));
  }
  if (!std::isfinite(request.temperature()) || request.temperature() < 0.0f) {
    return absl::InvalidArgumentError(
        absl::StrCat("temperature is ", request.temperature(),
                     "; it must be finite and >= 0 (0 is greedy decoding)"));
  }
  if (request.top_k() < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("top_k is ", request.top_k(), "; it must be >= 0 (0 disables it)"));
  }
  if (request.has_top_p() &&
      (!std::isfinite(request.top_p()) || request.top_p() <= 0.0f || request.top_p() > 1.0f)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "top_p is ", request.top_p(), "; it must be in (0, 1] (leave it unset to disable)"));
  }
  if (request.has_repetition_penalty() &&
      (!std::isfinite(request.repetition_penalty()) || request.repetition_penalty() <= 0.0f)) {
    return absl::InvalidArgumentError(
        absl::StrCat("repetition_penalty is ", request.repetition_penalty(),
                     "; it must be finite and > 0 (1 or unset disables it; 1.1 to 1.3 "
                     "discourages repeats)"));
  }
  for (const auto& [name, value] : {std::pair{"frequency_penalty", request.frequency_penalty()},
                                    std::pair{"presence_penalty", request.presence_penalty()}}) {
    if (!(value >= -kMaxPenalty && value <= kMaxPenalty)) {
      return absl::InvalidArgumentError(absl::StrCat(name, " is ", value, "; it must be in [",
                                                     -kMaxPenalty, ", ", kMaxPenalty,
                                                     "] (0 disables it; > 0 discourages repeats)"));
    }
  }
  if (request.top_logprobs() < 0 || request.top_logprobs() > kMaxTopLogprobs) {
    return absl::InvalidArgumentError(absl::StrCat("top_logprobs is ", request.top_logprobs(),
                                                   "; it must be in [0, ", kMaxTopLogprobs, "]"));
  }
  if (request.stop_size() > 0 && !limits.has_tokenizer) {
    return absl::FailedPreconditionError(
        "stop sequences need a tokenizer, and this model was served without one");
  }
  if (request.stop_size() > limits.max_stop_sequences) {
    return absl::InvalidArgumentError(absl::StrCat("there are ", request.stop_size(),
                                                   " stop sequences; at most ",
                                                   limits.max_stop_sequences, " are allowed"));
  }
  for (int i = 0; i < request.stop_size(); ++i) {
    const std::string& s = request.stop(i);
    if (s.empty() || static_cast<int>(s.size()) > limits.max_stop_bytes) {
      return absl::InvalidArgumentError(absl::StrCat("stop[", i, "] has ", s.size(),
                                                     " bytes; each stop sequence must have 1 to ",
                                                     limits.max_stop_bytes));
    }
    p.stop.push_back(s);
  }
  if (!(request.min_p() >= 0.0f && request.min_p() <= 1.0f)) {
    return absl::InvalidArgumentError(
        absl::StrCat("min_p is ", request.min_p(), "; it must be in [0, 1] (0 disables it)"));
  }
  auto in_vocabulary = [&](int32_t id) { return id >= 0 && id < limits.vocab_size; };
  if (request.logit_bias_size() > kMaxLogitBiasTokens) {
    return absl::InvalidArgumentError(absl::StrCat("logit_bias has ", request.logit_bias_size(),
                                                   " tokens; at most ", kMaxLogitBiasTokens));
  }
  for (const auto& [id, bias] : request.logit_bias()) {
    if (!in_vocabulary(id)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "logit_bias names token ", id, "; token ids must be in [0, ", limits.vocab_size, ")"));
    }
    if (!(bias >= -kMaxLogitBias && bias <= kMaxLogitBias)) {
      return absl::InvalidArgumentError(absl::StrCat("logit_bias of token ", id, " is ", bias,
                                                     "; it must be in [", -kMaxLogitBias, ", ",
                                                     kMaxLogitBias, "]"));
    }
    p.logit_bias.emplace_back(id, bias);
  }
  std::sort(p.logit_bias.begin(), p.logit_bias.end());  // a map's order is unspecified
  if (request.stop_token_ids_size() > kMaxStopTokenIds) {
    return absl::InvalidArgumentError(absl::StrCat("there are ", request.stop_token_ids_size(),
                                                   " stop_token_ids; at most ", kMaxStopTokenIds));
  }
  for (int32_t id : request.stop_token_ids()) {
    if (!in_vocabulary(id)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "stop_token_ids has ", id, "; token ids must be in [0, ", limits.vocab_size, ")"));
    }
    p.stop_token_ids.push_back(id);
  }
  std::sort(p.stop_token_ids.begin(), p.stop_token_ids.end());
  if (request.min_tokens() < 0 || request.min_tokens() > request.max_new_tokens()) {
    return absl::InvalidArgumentError(
        absl::StrCat("min_tokens is ", request.min_tokens(),
                     "; it must be in [0, max_new_tokens = ", request.max_new_tokens(), "]"));
  }
  if (request.has_truncate_prompt_tokens() && request.truncate_prompt_tokens() < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("truncate_prompt_tokens is ", request.truncate_prompt_tokens(),
                     "; it must be >= 1 (the prompt's last tokens to keep; unset keeps all)"));
  }
  p.truncate_prompt_tokens = request.truncate_prompt_tokens();
  if (request.priority() != 0 && !limits.priority_scheduling) {
    return absl::InvalidArgumentError(
        absl::StrCat("priority is ", request.priority(),
                     " but this server admits requests first come, first served; send 0, or start "
                     "it with --scheduling=priority"));
  }
  p.priority = request.priority();
  p.min_p = request.min_p();
  p.min_tokens = request.min_tokens();
  p.max_new_tokens = request.max_new_tokens();
  p.temperature = request.temperature();
  p.top_k = request.top_k();
  p.top_p = request.has_top_p() ? request.top_p() : 1.0f;
  p.seed = request.seed();
  p.logprobs = request.logprobs();
  p.ignore_eos = request.ignore_eos();
  p.repetition_penalty = request.has_repetition_penalty() ? request.repetition_penalty() : 1.0f;
  p.frequency_penalty = request.frequency_penalty();
  p.presence_penalty = request.presence_penalty();
  p.top_logprobs = request.top_logprobs();
  p.prompt_logprobs = request.prompt_logprobs();
  p.echo_prompt = request.echo_prompt();
  const v1::Guide& guide = request.guide();
  const v1::Guide::KindCase kind = guide.kind_case();
  if (kind == v1::Guide::kChoice) {
    p.guided_choice.assign(guide.choice().choices().begin(), guide.choice().choices().end());
    RETURN_IF_ERROR(CheckGuidedChoices(p.guided_choice));
  }
  p.guided_json_object = guide.json_object();
  // The cheap refusals before a pattern or schema is compiled.
  const bool guided = kind == v1::Guide::kChoice || kind == v1::Guide::kRegex ||
                      kind == v1::Guide::kJsonSchema || p.guided_json_object;
  if (guided && !limits.has_tokenizer) {
    return absl::FailedPreconditionError(
        "a guided output needs the model's tokenizer, and this model is served without one");
  }
  if (guided && p.min_tokens > 0) {
    return absl::InvalidArgumentError(
        "min_tokens with a guided output is not served: the guide decides where the text ends; "
        "leave min_tokens 0");
  }
  if (kind == v1::Guide::kRegex) {
    ASSIGN_OR_RETURN(p.guided_regex, guides != nullptr ? guides->Regex(guide.regex())
                                                       : CompiledRegex::Compile(guide.regex()));
    if (p.guided_regex->MatchesOnlyTheEmptyText()) {
      return absl::InvalidArgumentError(
          "guided_regex matches only the empty text: nothing could be generated; give a "
          "pattern that needs at least one character");
    }
  }
  if (kind == v1::Guide::kJsonSchema) {
    ASSIGN_OR_RETURN(p.guided_regex, guides != nullptr ? guides->JsonSchema(guide.json_schema())
                                                       : CompileJsonSchema(guide.json_schema()));
  }
  if (p.guided_regex != nullptr) p.guided_work = std::make_shared<RegexRequestWork>();
  return p;
}

absl::Status ValidatePromptTokens(const std::vector<int32_t>& prompt,
                                  const GenerationParams& params, const ModelLimits& limits) {
  if (prompt.empty()) {
    return absl::InvalidArgumentError("the prompt has no tokens; send a non-empty prompt");
  }
  for (size_t i = 0; i < prompt.size(); ++i) {
    if (prompt[i] < 0 || prompt[i] >= limits.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("prompt token ", i, " is ", prompt[i],
                                                     "; token ids must be in [0, ",
                                                     limits.vocab_size, ")"));
    }
  }
  const int64_t n = static_cast<int64_t>(prompt.size());
  // Checked here, where the prompt's length is known, so that the number to ask for is exact
  // (a text prompt's tokens are counted only once it is encoded).
  if (params.max_new_tokens >= limits.max_context) {
    return absl::OutOfRangeError(absl::StrCat(
        "max_new_tokens is ", params.max_new_tokens, " but the model's context holds ",
        limits.max_context, " tokens including the prompt (", n, n == 1 ? " token" : " tokens",
        " here); ",
        n < limits.max_context
            ? absl::StrCat("set max_new_tokens <= ", limits.max_context - n)
            : absl::StrCat("the prompt alone fills it: shorten it (or set "
                           "truncate_prompt_tokens) to k < ",
                           limits.max_context,
                           " tokens and set max_new_tokens <= ", limits.max_context, " - k")));
  }
  // What to change: the prompt, or the truncation that left it this long.
  const int64_t room = limits.max_context - std::max<int64_t>(params.max_new_tokens, 1);
  const std::string change =
      params.truncate_prompt_tokens > 0
          ? absl::StrCat("set truncate_prompt_tokens <= ",
                         params.max_new_tokens == 0 ? limits.max_context : room,
                         " (the context less max_new_tokens)")
          : "shorten it (or set truncate_prompt_tokens)";
  if (params.max_new_tokens == 0 && n > limits.max_context) {  // only scored or echoed
    return absl::OutOfRangeError(absl::StrCat(
        "the prompt has ", n, " tokens but the context holds ", limits.max_context, "; ", change));
  }
  if (params.max_new_tokens > 0 && n >= limits.max_context) {
    return absl::OutOfRangeError(absl::StrCat("the prompt has ", n,
                                              " tokens but the context holds ", limits.max_context,
                                              " including at least one new token; ", change));
  }
  if (n + params.max_new_tokens > limits.max_context) {
    return absl::OutOfRangeError(absl::StrCat(
        "prompt (", n, " tokens) + max_new_tokens (", params.max_new_tokens,
        ") exceeds the context of ", limits.max_context,
        " tokens; set max_new_tokens <= ", limits.max_context - n,
        params.truncate_prompt_tokens > 0 ? absl::StrCat(" or truncate_prompt_tokens <= ", room)
                                          : std::string()));
  }
  return absl::OkStatus();
}

}  // namespace llmint8::coordinator
