#include "coordinator/openai_api.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>
#include <optional>
#include <span>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "coordinator/openai_fields.h"
#include "coordinator/request_validation.h"
#include "coordinator/tokenizer.h"

namespace llmint8::coordinator::openai {
namespace {

using internal::Bool;
using internal::CandidateKey;
using internal::Dump;
using internal::FieldError;
using internal::Find;
using internal::FinishReason;
using internal::Finite;
using internal::IfPresent;
using internal::Integer;
using internal::json;
using internal::Logprob;
using internal::ParseBody;
using internal::ParseSharedFields;
using internal::TokenKey;
using internal::UsageJson;

constexpr char kPromptForms[] =
    "a string, an array of token ids, or a batch: an array of strings or of arrays of token "
    "ids";

// One prompt: a string or an array of token ids (an empty array is an empty prompt, which the
// service refuses with its message).
absl::Status AddPrompt(const json& p, std::vector<v1::GenerateRequest>& prompts) {
  v1::GenerateRequest& out = prompts.emplace_back();
  if (p.is_string()) {
    out.set_text(p.get<std::string>());
    return absl::OkStatus();
  }
  if (!p.is_array()) return FieldError("prompt", kPromptForms);
  out.mutable_token_ids();  // set, even when empty
  for (const json& t : p) {
    // Integer() saturates: an unsigned id past int64 must not wrap into range.
    const absl::StatusOr<int64_t> id = Integer(t, "prompt");
    if (!id.ok() || *id < std::numeric_limits<int32_t>::min() ||
        *id > std::numeric_limits<int32_t>::max()) {
      return FieldError("prompt", kPromptForms);
    }
    out.mutable_token_ids()->add_ids(static_cast<int32_t>(*id));
  }
  return absl::OkStatus();
}

// A prompt, or a batch of them: an array of strings or of token-id arrays (not mixed).
absl::Status SetPrompts(const json& p, std::vector<v1::GenerateRequest>& prompts) {
  const bool batch = p.is_array() && !p.empty() && (p[0].is_string() || p[0].is_array());
  if (!batch) return AddPrompt(p, prompts);
  if (p.size() > static_cast<size_t>(kMaxPrompts)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "field 'prompt' holds ", p.size(), " prompts; send at most ", kMaxPrompts, " per request"));
  }
  prompts.reserve(p.size());
  for (const json& one : p) {
    if (one.type() != p[0].type()) return FieldError("prompt", kPromptForms);
    RETURN_IF_ERROR(AddPrompt(one, prompts));
  }
  return absl::OkStatus();
}

absl::StatusOr<CompletionRequest> Parse(const json& body, const RequestDefaults& defaults) {
  CompletionRequest r;
  v1::GenerateRequest& g = r.generate;
  const json* prompt = Find(body, "prompt");
  if (prompt == nullptr) return absl::InvalidArgumentError("field 'prompt' is required");
  RETURN_IF_ERROR(SetPrompts(*prompt, r.prompts));
  g.MergeFrom(r.prompts.front());
  RETURN_IF_ERROR(ParseSharedFields(body, defaults, r));
  // The model's max_tokens is a limit, not a demand: a prompt that leaves less of the context
  // gets what it leaves, as the chat API's replies do.
  if (defaults.max_tokens.has_value() && Find(body, "max_tokens") == nullptr) {
    g.set_max_new_tokens(*defaults.max_tokens);
    r.fill_context = true;
  }
  if (const json* v = Find(body, "logprobs"); v != nullptr) {
    // The legacy API's integer (how many top candidates beside the sampled token) or the chat
    // API's boolean (the sampled token's logprob only).
    if (v->is_boolean()) {
      r.logprobs = v->get<bool>();
    } else if (v->is_number_integer() && !v->is_number_unsigned() && v->get<int64_t>() < 0) {
      return FieldError("logprobs", "an integer >= 0");
    } else if (v->is_number_integer()) {
      // Unsigned past int64 too: compared as unsigned, never wrapped.
      if (v->get<uint64_t>() > static_cast<uint64_t>(kMaxTopLogprobs)) {
        return FieldError("logprobs", absl::StrCat("an integer in [0, ", kMaxTopLogprobs, "]"));
      }
      r.logprobs = true;
      r.top_logprobs_listed = true;
      g.set_top_logprobs(static_cast<int32_t>(v->get<uint64_t>()));
    } else {
      return FieldError("logprobs", "an integer >= 0");
    }
    g.set_logprobs(r.logprobs);
  }
  RETURN_IF_ERROR(IfPresent<bool>(body, "echo", Bool, [&](bool b) { r.echo = b; }));
  // The echoed prompt comes from the service as prompt tokens: their pieces, and with logprobs
  // their scores; max_tokens 0 then only echoes (or scores) the prompt.
  g.set_echo_prompt(r.echo);
  g.set_prompt_logprobs(r.echo && r.logprobs);  // echo alone needs no scoring
  if (g.max_new_tokens() == 0 && !r.echo) {
    return FieldError("max_tokens", "at least 1 (0 only with echo, to echo or score the prompt)");
  }
  return r;
}

// One position's top_logprobs entry: {key: logprob} of the candidates, most likely first,
// then the sampled token (OpenAI lists it too) when it is not among them, under `label`.
// Candidates whose keys coincide keep the likelier one.
json Candidates(const google::protobuf::RepeatedPtrField<v1::TopLogprob>& top, int32_t token_id,
                const std::string& label, std::optional<float> logprob) {
  json out = json::object();
  bool sampled_listed = false;
  for (const v1::TopLogprob& c : top) {
    const std::string key = CandidateKey(c.text(), c.token_id());
    if (!out.contains(key)) out[key] = Finite(c.logprob());
    sampled_listed |= c.token_id() == token_id;
  }
  const std::string sampled = CandidateKey(label, token_id);
  if (!sampled_listed && logprob.has_value() && !out.contains(sampled)) {
    out[sampled] = Finite(*logprob);
  }
  return out;
}

// The choice of `responses`: all of a request (`token_start` null), or one streamed piece of it
// whose first token starts `*token_start` bytes into the choice's text (advanced past its
// tokens).
json Choice(const CompletionRequest& request, size_t index, const v1::GenerateResponse* begin,
            const v1::GenerateResponse* end, size_t* token_start = nullptr) {
  std::string text;
  const bool top = request.top_logprobs_listed;
  json tokens = json::array(), token_logprobs = json::array(), offsets = json::array(),
       top_logprobs = json::array(), token_ids = json::array();
  v1::FinishReason finish = v1::FINISH_REASON_UNSPECIFIED;
  // Where each token's text begins (text_offset): after what the tokens before it add to the
  // decoded text (decoded_bytes), not after the text released so far, which holds back a
  // possible stop's start or part of a UTF-8 character.
  size_t whole_start = 0;
  size_t& start = token_start != nullptr ? *token_start : whole_start;
  // One token of the choice: the echoed prompt's, then the generated ones. The first prompt
  // token has no logprob (null, as OpenAI).
  // A token is listed by its text decoded alone (as its candidates are), else by its piece.
  auto add = [&](const auto& token, const auto& candidates, const std::string& piece,
                 size_t own_bytes) {
    if (!request.logprobs) return;  // built only when asked for
    offsets.push_back(start);
    start += own_bytes;
    const std::string label = TokenKey(token.token_text(), piece, token.token_id());
    tokens.push_back(label);
    const std::optional<float> logprob = Logprob(token);
    token_logprobs.push_back(logprob.has_value() ? json(Finite(*logprob)) : json(nullptr));
    if (top) {
      // logprobs 0 lists the sampled token alone, whatever candidates came.
      static const google::protobuf::RepeatedPtrField<v1::TopLogprob> kNone;
      top_logprobs.push_back(
          logprob.has_value() ? Candidates(request.generate.top_logprobs() > 0 ? candidates : kNone,
                                           token.token_id(), label, logprob)
                              : json(nullptr));
    }
  };
  for (const v1::GenerateResponse* r = begin; r != end; ++r) {
    if (request.echo) {
      for (const v1::PromptToken& p : r->prompt_tokens()) {
        add(p, p.top_logprobs(), p.text(), p.text().size());
        text += p.text();
      }
    }
    if (r->has_token_id()) {
      // What it adds to the decoded text (sent with logprobs); else what it released.
      add(*r, r->top_logprobs(), r->text(),
          r->has_decoded_bytes() ? r->decoded_bytes() : r->text().size());
    }
    if (r->has_token_id() && request.return_token_ids) token_ids.push_back(r->token_id());
    text += r->text();
    if (r->finish_reason() != v1::FINISH_REASON_UNSPECIFIED) finish = r->finish_reason();
  }
  json choice = {{"index", index}, {"text", text}, {"logprobs", nullptr}};
  const char* reason = FinishReason(finish);
  choice["finish_reason"] = reason != nullptr ? json(reason) : json(nullptr);
  if (request.logprobs && token_start == nullptr) {
    // A token past a stop's start (cut from the text) begins at the text's end.
    for (json& o : offsets) o = std::min(o.get<size_t>(), text.size());
  }
  if (request.logprobs) {
    // tokens: each token's text as streamed (a piece held back, e.g. part of a UTF-8
    // character, is attributed to the token that completes it).
    choice["logprobs"] = {{"tokens", tokens},
                          {"token_logprobs", token_logprobs},
                          {"top_logprobs", top ? top_logprobs : json(nullptr)},
                          {"text_offset", offsets}};
  }
  if (request.return_token_ids) choice["token_ids"] = token_ids;
  return choice;
}

}  // namespace

RequestDefaults RequestDefaultsFrom(const model::GenerationConfig& config) {
  RequestDefaults d;
  d.repetition_penalty = config.repetition_penalty;
  d.max_tokens = config.max_new_tokens;
  if (config.do_sample == false) {
    d.temperature = 0.0f;
    return d;
  }
  d.temperature = config.temperature.value_or(1.0f);
  d.top_p = config.top_p;
  d.top_k = config.top_k;
  d.min_p = config.min_p;
  return d;
}

absl::StatusOr<CompletionRequest> ParseCompletionRequest(std::string_view body,
                                                         std::string_view model_id,
                                                         const RequestDefaults& defaults) {
  ASSIGN_OR_RETURN(const json parsed, ParseBody(body, model_id));
  return Parse(parsed, defaults);
}

absl::StatusOr<TokenizeRequest> ParseTokenizeRequest(std::string_view body,
                                                     std::string_view model_id) {
  ASSIGN_OR_RETURN(const json parsed, ParseBody(body, model_id));
  TokenizeRequest r;
  const json* prompt = Find(parsed, "prompt");
  if (prompt == nullptr || !prompt->is_string()) return FieldError("prompt", "a string");
  r.text = prompt->get<std::string>();
  RETURN_IF_ERROR(IfPresent<bool>(parsed, "add_special_tokens", Bool,
                                  [&](bool b) { r.add_special_tokens = b; }));
  return r;
}

std::string TokenizeJson(const std::vector<int32_t>& ids, int64_t max_context) {
  return Dump(json{{"count", ids.size()}, {"max_model_len", max_context}, {"tokens", ids}});
}

absl::StatusOr<std::vector<int32_t>> ParseDetokenizeRequest(std::string_view body,
                                                            std::string_view model_id) {
  ASSIGN_OR_RETURN(const json parsed, ParseBody(body, model_id));
  const json* tokens = Find(parsed, "tokens");
  if (tokens == nullptr || !tokens->is_array())
    return FieldError("tokens", "an array of token ids");
  std::vector<int32_t> ids;
  ids.reserve(tokens->size());
  for (const json& t : *tokens) {
    const absl::StatusOr<int64_t> id = Integer(t, "tokens");
    if (!id.ok() || *id < 0 || *id > std::numeric_limits<int32_t>::max()) {
      return FieldError("tokens", "an array of token ids");
    }
    ids.push_back(static_cast<int32_t>(*id));
  }
  return ids;
}

std::string DetokenizeJson(std::string_view text) {
  return Dump(json{{"prompt", std::string(text)}});
}

std::string ModelId(std::string_view model_spec) {
  std::filesystem::path p(model_spec);
  while (!p.empty() && p.filename().empty()) p = p.parent_path();  // "dir/" -> "dir"
  std::error_code ec;  // a loop or an unreadable path is no directory, not an exception
  if (std::filesystem::is_directory(p, ec) && !p.filename().empty()) return p.filename().string();
  return std::string(model_spec);
}

absl::Status CheckServedModelName(std::string_view name) {
  constexpr size_t kMaxBytes = 256;
  const bool plain = std::none_of(name.begin(), name.end(),
                                  [](char c) {
                                    const auto u = static_cast<unsigned char>(c);
                                    return u <= 0x20 || u == 0x7f;
                                  }) &&
                     !FindInvalidUtf8(name).has_value();
  if (name.empty() || name.size() > kMaxBytes || !plain) {
    return absl::InvalidArgumentError(
        absl::StrCat("--served_model_name must be 1 to ", kMaxBytes,
                     " bytes of UTF-8 without spaces or control characters, e.g. "
                     "facebook/opt-66b"));
  }
  return absl::OkStatus();
}

std::string CompletionJson(const CompletionRequest& request,
                           const std::vector<std::vector<v1::GenerateResponse>>& choices,
                           std::string_view completion_id, int64_t created,
                           std::string_view model_id) {
  return internal::AnswerJson(request, choices, "text_completion", completion_id, created, model_id,
                              [&](size_t i, std::span<const v1::GenerateResponse> responses) {
                                return Choice(request, i, responses.data(),
                                              responses.data() + responses.size());
                              });
}

std::string CompletionChunkEvent(const CompletionRequest& request, size_t index,
                                 const v1::GenerateResponse& response,
                                 std::string_view completion_id, int64_t created,
                                 std::string_view model_id, size_t* token_start,
                                 const v1::Usage* usage_so_far) {
  size_t event_start = 0;
  json choice = Choice(request, index, &response, &response + 1,
                       token_start != nullptr ? token_start : &event_start);
  return internal::ChunkEvent(request, "text_completion", std::move(choice), completion_id, created,
                              model_id, response, usage_so_far);
}

void AddToUsage(const v1::GenerateResponse& response, v1::Usage& usage) {
  if (response.has_usage()) {
    usage = response.usage();
  } else if (response.has_token_id()) {
    usage.set_completion_tokens(usage.completion_tokens() + 1);
  }
}

v1::Usage TotalUsage(const CompletionRequest& request, const std::vector<v1::Usage>& choices) {
  v1::Usage total;
  const size_t n = static_cast<size_t>(std::max(request.n, 1));
  for (size_t i = 0; i < choices.size(); ++i) {
    if (i % n == 0) {  // each prompt once, as its first choice ran it
      total.set_prompt_tokens(total.prompt_tokens() + choices[i].prompt_tokens());
      total.set_cached_prompt_tokens(total.cached_prompt_tokens() +
                                     choices[i].cached_prompt_tokens());
    }
    total.set_completion_tokens(total.completion_tokens() + choices[i].completion_tokens());
  }
  return total;
}

std::string UsageEvent(const CompletionRequest& request, const v1::Usage& usage,
                       std::string_view completion_id, int64_t created, std::string_view model_id) {
  json event = internal::Envelope(
      completion_id, request.chat ? "chat.completion.chunk" : "text_completion", created, model_id);
  event["choices"] = json::array();
  event["usage"] = UsageJson(usage);
  return absl::StrCat("data: ", Dump(event), "\n\n");
}

namespace {

json Model(const ModelCard& card) {
  return {{"id", card.id},
          {"object", "model"},
          {"created", card.created},
          {"owned_by", "llmint8"},
          {"max_model_len", card.max_context}};
}

}  // namespace

std::string ModelsJson(const ModelCard& card) {
  return Dump(json{{"object", "list"}, {"data", json::array({Model(card)})}});
}

std::string ModelJson(const ModelCard& card) { return Dump(Model(card)); }

int HttpStatus(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kOk:
      return 200;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kFailedPrecondition:
      return 400;
    case absl::StatusCode::kUnauthenticated:
      return 401;
    case absl::StatusCode::kNotFound:
      return 404;
    case absl::StatusCode::kResourceExhausted:
      return 429;
    case absl::StatusCode::kCancelled:
      return 499;
    case absl::StatusCode::kUnimplemented:
      return 501;
    case absl::StatusCode::kUnavailable:
      return 503;
    case absl::StatusCode::kDeadlineExceeded:
      return 504;
    default:
      return 500;
  }
}

namespace {

// The request field a refusal of the service's validation starts with ("temperature is -1;
// ...", "max_tokens is 300 but ...", "logit_bias has 400 entries"), in the API's names (the
// HTTP layer renames max_new_tokens); nullopt for any other message.
std::optional<std::string> LeadingRequestField(absl::string_view message) {
  static constexpr absl::string_view kFields[] = {"max_tokens",
                                                  "max_completion_tokens",
                                                  "temperature",
                                                  "top_p",
                                                  "top_k",
                                                  "min_p",
                                                  "min_tokens",
                                                  "n",
                                                  "stop",
                                                  "seed",
                                                  "logprobs",
                                                  "top_logprobs",
                                                  "echo",
                                                  "presence_penalty",
                                                  "frequency_penalty",
                                                  "repetition_penalty",
                                                  "logit_bias",
                                                  "priority",
                                                  "truncate_prompt_tokens",
                                                  "stop_token_ids",
                                                  "guided_choice",
                                                  "guided_regex",
                                                  "guided_json",
                                                  "response_format"};
  const size_t end = message.find(' ');
  if (end == absl::string_view::npos) return std::nullopt;
  const absl::string_view word = message.substr(0, end);
  const absl::string_view next = message.substr(end + 1);
  if (!absl::StartsWith(next, "is ") && !absl::StartsWith(next, "has ") &&
      !absl::StartsWith(next, "must ")) {
    return std::nullopt;
  }
  for (absl::string_view field : kFields) {
    if (word == field) return std::string(field);
  }
  return std::nullopt;
}

}  // namespace

std::string ErrorJson(const absl::Status& status) {
  const int http = HttpStatus(status.code());
  const char* type = http == 429  ? "rate_limit_error"
                     : http < 500 ? "invalid_request_error"
                                  : "server_error";
  // OpenAI's error objects name the request field at fault in `param` (null when none): the
  // field an error of the form "field '<name>' must be ..." names (internal::FieldError).
  json param = nullptr;
  if (constexpr absl::string_view kField = "field '"; absl::StartsWith(status.message(), kField)) {
    const absl::string_view rest = status.message().substr(kField.size());
    if (const size_t end = rest.find('\''); end != absl::string_view::npos) {
      param = std::string(rest.substr(0, end));
    }
  } else if (const std::optional<std::string> field = LeadingRequestField(status.message())) {
    param = *field;
  }
  return Dump(json{{"error",
                    {{"message", std::string(status.message())},
                     {"type", type},
                     {"param", std::move(param)},
                     {"code", absl::StatusCodeToString(status.code())}}}});
}

}  // namespace llmint8::coordinator::openai
