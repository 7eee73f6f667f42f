#include "coordinator/openai_api.h"

#include <cmath>
#include <filesystem>
#include <limits>
#include <optional>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "coordinator/request_validation.h"
#include "nlohmann/json.hpp"

namespace llmint8::coordinator::openai {
namespace {

// Insertion-ordered: top_logprobs entries list the likeliest first, as OpenAI and vLLM do.
using json = nlohmann::ordered_json;

absl::Status FieldError(std::string_view field, std::string_view want) {
  return absl::InvalidArgumentError(
      absl::StrCat("field '", std::string(field), "' must be ", std::string(want)));
}

// Present and not null.
const json* Find(const json& body, const char* field) {
  auto it = body.find(field);
  return it == body.end() || it->is_null() ? nullptr : &*it;
}

// Integers past int64 (JSON allows them) saturate, so range checks see them as too large.
absl::StatusOr<int64_t> Integer(const json& v, const char* field) {
  if (!v.is_number_integer()) return FieldError(field, "an integer");
  if (v.is_number_unsigned()) {
    return static_cast<int64_t>(
        std::min<uint64_t>(v.get<uint64_t>(), std::numeric_limits<int64_t>::max()));
  }
  return v.get<int64_t>();
}

// Text from the model or the file system may be invalid UTF-8: replace, never throw.
std::string Dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

absl::StatusOr<float> Number(const json& v, const char* field) {
  if (!v.is_number()) return FieldError(field, "a number");
  return v.get<float>();
}

absl::StatusOr<bool> Bool(const json& v, const char* field) {
  if (!v.is_boolean()) return FieldError(field, "true or false");
  return v.get<bool>();
}

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

// Fields accepted only at their neutral value.
absl::Status CheckUnsupported(const json& body) {
  struct Neutral {
    const char* field;
    json value;
    const char* why;
  };
  const Neutral neutral[] = {
      {"suffix", "", "no suffix (insertion) mode"},
  };
  for (const Neutral& n : neutral) {
    const json* v = Find(body, n.field);
    if (v != nullptr && *v != n.value) {
      return absl::InvalidArgumentError(
          absl::StrCat("field '", n.field, "' must be ", n.value.dump(), " here: ", n.why));
    }
  }
  return absl::OkStatus();
}

// A JSON object whose "model", when given, is the served model's id.
absl::StatusOr<json> ParseBody(std::string_view text, std::string_view model_id) {
  json body = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (body.is_discarded()) return absl::InvalidArgumentError("the body is not valid JSON");
  if (!body.is_object()) return absl::InvalidArgumentError("the body must be a JSON object");
  if (const json* v = Find(body, "model"); v != nullptr) {
    if (!v->is_string()) return FieldError("model", "a string");
    if (v->get<std::string>() != model_id) {
      return absl::NotFoundError(absl::StrCat("model '", v->get<std::string>(),
                                              "' is not served here; this server serves '",
                                              std::string(model_id), "' (GET /v1/models)"));
    }
  }
  return body;
}

absl::StatusOr<CompletionRequest> Parse(const json& body) {
  CompletionRequest r;
  v1::GenerateRequest& g = r.generate;
  const json* prompt = Find(body, "prompt");
  if (prompt == nullptr) return absl::InvalidArgumentError("field 'prompt' is required");
  RETURN_IF_ERROR(SetPrompts(*prompt, r.prompts));
  g.MergeFrom(r.prompts.front());
  RETURN_IF_ERROR(CheckUnsupported(body));
  if (const json* v = Find(body, "n"); v != nullptr) {
    ASSIGN_OR_RETURN(const int64_t n, Integer(*v, "n"));
    if (n < 1 || n > kMaxN) return FieldError("n", absl::StrCat("an integer in [1, ", kMaxN, "]"));
    r.n = static_cast<int32_t>(n);
  }
  if (const json* v = Find(body, "best_of"); v != nullptr) {
    // best_of > n asks the server to rank candidates by their logprob and drop the rest.
    const absl::StatusOr<int64_t> best_of = Integer(*v, "best_of");
    if (!best_of.ok() || (*best_of != 1 && *best_of != r.n)) {
      return FieldError("best_of", "1 or n here: candidates are not ranked server-side");
    }
  }

  g.set_max_new_tokens(16);
  g.set_temperature(1.0f);
  // Out-of-range values are clamped so the service's range check reports them.
  RETURN_IF_ERROR(IfPresent<int64_t>(body, "max_tokens", Integer, [&](int64_t n) {
    g.set_max_new_tokens(static_cast<int32_t>(std::clamp<int64_t>(
        n, std::numeric_limits<int32_t>::min(), std::numeric_limits<int32_t>::max())));
  }));
  RETURN_IF_ERROR(
      IfPresent<float>(body, "temperature", Number, [&](float t) { g.set_temperature(t); }));
  RETURN_IF_ERROR(IfPresent<float>(body, "top_p", Number, [&](float p) { g.set_top_p(p); }));
  if (const json* v = Find(body, "top_k"); v != nullptr) {
    ASSIGN_OR_RETURN(const int64_t k, Integer(*v, "top_k"));
    if (k < -1 || k > std::numeric_limits<int32_t>::max()) {
      return FieldError("top_k", "-1 or 0 (off) or a positive integer");
    }
    g.set_top_k(k == -1 ? 0 : static_cast<int32_t>(k));
  }
  if (const json* v = Find(body, "seed"); v != nullptr) {
    if (!v->is_number_integer()) return FieldError("seed", "an integer");
    g.set_seed(v->is_number_unsigned() ? v->get<uint64_t>()
                                       : static_cast<uint64_t>(v->get<int64_t>()));
  }
  if (const json* v = Find(body, "stop"); v != nullptr) {
    if (v->is_string()) {
      g.add_stop(v->get<std::string>());
    } else if (v->is_array()) {
      for (const json& s : *v) {
        if (!s.is_string()) return FieldError("stop", "a string or an array of strings");
        g.add_stop(s.get<std::string>());
      }
    } else {
      return FieldError("stop", "a string or an array of strings");
    }
  }
  RETURN_IF_ERROR(IfPresent<float>(body, "repetition_penalty", Number,
                                   [&](float p) { g.set_repetition_penalty(p); }));
  RETURN_IF_ERROR(IfPresent<float>(body, "frequency_penalty", Number,
                                   [&](float p) { g.set_frequency_penalty(p); }));
  RETURN_IF_ERROR(IfPresent<float>(body, "presence_penalty", Number,
                                   [&](float p) { g.set_presence_penalty(p); }));
  RETURN_IF_ERROR(IfPresent<bool>(body, "ignore_eos", Bool, [&](bool b) { g.set_ignore_eos(b); }));
  RETURN_IF_ERROR(IfPresent<float>(body, "min_p", Number, [&](float p) { g.set_min_p(p); }));
  if (const json* v = Find(body, "min_tokens"); v != nullptr) {
    ASSIGN_OR_RETURN(const int64_t n, Integer(*v, "min_tokens"));
    // Saturated, so the service's range check reports it.
    g.set_min_tokens(static_cast<int32_t>(std::clamp<int64_t>(
        n, std::numeric_limits<int32_t>::min(), std::numeric_limits<int32_t>::max())));
  }
  if (const json* v = Find(body, "logit_bias"); v != nullptr) {
    // {"token id": bias}: JSON keys are strings.
    if (!v->is_object()) return FieldError("logit_bias", "an object of token id: bias");
    for (const auto& [key, bias] : v->items()) {
      int32_t id = 0;
      if (!absl::SimpleAtoi(key, &id) || !bias.is_number()) {
        return FieldError("logit_bias", "an object of token id: bias (a number)");
      }
      (*g.mutable_logit_bias())[id] = bias.get<float>();
    }
  }
  if (const json* v = Find(body, "stop_token_ids"); v != nullptr) {
    if (!v->is_array()) return FieldError("stop_token_ids", "an array of token ids");
    for (const json& t : *v) {
      const absl::StatusOr<int64_t> id = Integer(t, "stop_token_ids");
      if (!id.ok() || *id < 0 || *id > std::numeric_limits<int32_t>::max()) {
        return FieldError("stop_token_ids", "an array of token ids");
      }
      g.add_stop_token_ids(static_cast<int32_t>(*id));
    }
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
      g.set_top_logprobs(static_cast<int32_t>(v->get<uint64_t>()));
    } else {
      return FieldError("logprobs", "an integer >= 0");
    }
    g.set_logprobs(r.logprobs);
  }
  RETURN_IF_ERROR(IfPresent<bool>(body, "stream", Bool, [&](bool b) { r.stream = b; }));
  if (const json* v = Find(body, "stream_options"); v != nullptr) {
    if (!v->is_object()) return FieldError("stream_options", "an object");
    RETURN_IF_ERROR(
        IfPresent<bool>(*v, "include_usage", Bool, [&](bool b) { r.include_usage = b; }));
  }
  RETURN_IF_ERROR(
      IfPresent<bool>(body, "return_token_ids", Bool, [&](bool b) { r.return_token_ids = b; }));
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

const char* FinishReason(v1::FinishReason reason) {
  switch (reason) {
    case v1::FINISH_REASON_LENGTH:
      return "length";
    case v1::FINISH_REASON_STOP:
    case v1::FINISH_REASON_EOS:
      return "stop";
    default:
      return nullptr;
  }
}

json Usage(const v1::Usage& u) {
  return {{"prompt_tokens", u.prompt_tokens()},
          {"completion_tokens", u.completion_tokens()},
          {"total_tokens", u.prompt_tokens() + u.completion_tokens()},
          {"prompt_tokens_details", {{"cached_tokens", u.cached_prompt_tokens()}}}};
}

// A token's label in tokens[] and top_logprobs: its text, or "token_id:<id>" (vLLM's form)
// where it has none (a model served without a tokenizer).
std::string CandidateKey(const std::string& text, int32_t token_id) {
  return text.empty() ? absl::StrCat("token_id:", token_id) : text;
}

// A logprob as JSON can hold it: -inf (a masked id) becomes -9999, as vLLM reports it
// (JSON has no infinity; null would break clients that expect numbers).
double Finite(float logprob) { return std::max(static_cast<double>(logprob), -9999.0); }

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

std::optional<float> Logprob(const auto& token) {
  return token.has_logprob() ? std::optional<float>(token.logprob()) : std::nullopt;
}

// The choice of `responses` (all of a request, or one streamed piece).
json Choice(const CompletionRequest& request, size_t index, const v1::GenerateResponse* begin,
            const v1::GenerateResponse* end) {
  std::string text;
  const bool top = request.generate.top_logprobs() > 0;
  json tokens = json::array(), token_logprobs = json::array(), offsets = json::array(),
       top_logprobs = json::array(), token_ids = json::array();
  v1::FinishReason finish = v1::FINISH_REASON_UNSPECIFIED;
  // One token of the choice: the echoed prompt's, then the generated ones. The first prompt
  // token has no logprob (null, as OpenAI).
  // A token is listed by its text decoded alone (as its candidates are), else by its piece.
  auto add = [&](const auto& token, const auto& candidates, const std::string& piece) {
    if (!request.logprobs) return;  // built only when asked for
    offsets.push_back(text.size());
    const std::string label =
        CandidateKey(token.token_text().empty() ? piece : token.token_text(), token.token_id());
    tokens.push_back(label);
    const std::optional<float> logprob = Logprob(token);
    token_logprobs.push_back(logprob.has_value() ? json(Finite(*logprob)) : json(nullptr));
    if (top) {
      top_logprobs.push_back(logprob.has_value()
                                 ? Candidates(candidates, token.token_id(), label, logprob)
                                 : json(nullptr));
    }
  };
  for (const v1::GenerateResponse* r = begin; r != end; ++r) {
    if (request.echo) {
      for (const v1::PromptToken& p : r->prompt_tokens()) {
        add(p, p.top_logprobs(), p.text());
        text += p.text();
      }
    }
    if (r->has_token_id()) add(*r, r->top_logprobs(), r->text());
    if (r->has_token_id() && request.return_token_ids) token_ids.push_back(r->token_id());
    text += r->text();
    if (r->finish_reason() != v1::FINISH_REASON_UNSPECIFIED) finish = r->finish_reason();
  }
  json choice = {{"index", index}, {"text", text}, {"logprobs", nullptr}};
  const char* reason = FinishReason(finish);
  choice["finish_reason"] = reason != nullptr ? json(reason) : json(nullptr);
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

json Envelope(std::string_view id, int64_t created, std::string_view model_id) {
  return {{"id", std::string(id)},
          {"object", "text_completion"},
          {"created", created},
          {"model", std::string(model_id)}};
}

}  // namespace

absl::StatusOr<CompletionRequest> ParseCompletionRequest(std::string_view body,
                                                         std::string_view model_id) {
  ASSIGN_OR_RETURN(const json parsed, ParseBody(body, model_id));
  return Parse(parsed);
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
  if (std::filesystem::is_directory(p) && !p.filename().empty()) return p.filename().string();
  return std::string(model_spec);
}

std::string CompletionJson(const CompletionRequest& request,
                           const std::vector<std::vector<v1::GenerateResponse>>& choices,
                           std::string_view completion_id, int64_t created,
                           std::string_view model_id) {
  json out = Envelope(completion_id, created, model_id);
  out["choices"] = json::array();
  std::vector<v1::Usage> usage(choices.size());  // one per choice, so each prompt's is found
  for (size_t i = 0; i < choices.size(); ++i) {
    const std::vector<v1::GenerateResponse>& responses = choices[i];
    out["choices"].push_back(
        Choice(request, i, responses.data(), responses.data() + responses.size()));
    if (!responses.empty()) usage[i] = responses.back().usage();
  }
  out["usage"] = choices.empty() ? json(nullptr) : Usage(TotalUsage(request, usage));
  return Dump(out);
}

std::string CompletionChunkEvent(const CompletionRequest& request, size_t index,
                                 const v1::GenerateResponse& response,
                                 std::string_view completion_id, int64_t created,
                                 std::string_view model_id) {
  json chunk = Envelope(completion_id, created, model_id);
  chunk["choices"] = json::array({Choice(request, index, &response, &response + 1)});
  if (request.include_usage) chunk["usage"] = nullptr;
  return absl::StrCat("data: ", Dump(chunk), "\n\n");
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

std::string UsageEvent(const v1::Usage& usage, std::string_view completion_id, int64_t created,
                       std::string_view model_id) {
  json event = Envelope(completion_id, created, model_id);
  event["choices"] = json::array();
  event["usage"] = Usage(usage);
  return absl::StrCat("data: ", Dump(event), "\n\n");
}

std::string ModelsJson(const ModelCard& card) {
  const json model = {{"id", card.id},
                      {"object", "model"},
                      {"created", card.created},
                      {"owned_by", "llmint8"},
                      {"max_model_len", card.max_context}};
  return Dump(json{{"object", "list"}, {"data", json::array({model})}});
}

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

std::string ErrorJson(const absl::Status& status) {
  const int http = HttpStatus(status.code());
  const char* type = http == 429  ? "rate_limit_error"
                     : http < 500 ? "invalid_request_error"
                                  : "server_error";
  return Dump(json{{"error",
                    {{"message", std::string(status.message())},
                     {"type", type},
                     {"code", absl::StatusCodeToString(status.code())}}}});
}

}  // namespace llmint8::coordinator::openai
