#include "coordinator/openai_fields.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <span>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/json_text.h"
#include "common/status_macros.h"

namespace llmint8::coordinator::openai::internal {

absl::Status FieldError(std::string_view field, std::string_view want) {
  return absl::InvalidArgumentError(
      absl::StrCat("field '", std::string(field), "' must be ", std::string(want)));
}

const json* Find(const json& body, const char* field) {
  auto it = body.find(field);
  return it == body.end() || it->is_null() ? nullptr : &*it;
}

absl::StatusOr<int64_t> Integer(const json& v, const char* field) {
  if (!v.is_number_integer()) return FieldError(field, "an integer");
  if (v.is_number_unsigned()) {
    return static_cast<int64_t>(
        std::min<uint64_t>(v.get<uint64_t>(), std::numeric_limits<int64_t>::max()));
  }
  return v.get<int64_t>();
}

std::string Dump(const json& j) { return JsonText(j); }

namespace {
// A JSON number as a float: one beyond float's range is +-infinity (which validation refuses
// where it must), not a conversion out of range (undefined behaviour).
float ToFloat(const json& v) {
  const double d = v.get<double>();
  constexpr float kInf = std::numeric_limits<float>::infinity();
  if (std::abs(d) > std::numeric_limits<float>::max()) return d > 0 ? kInf : -kInf;
  return static_cast<float>(d);
}
}  // namespace

absl::StatusOr<float> Number(const json& v, const char* field) {
  if (!v.is_number()) return FieldError(field, "a number");
  return ToFloat(v);
}

absl::StatusOr<bool> Bool(const json& v, const char* field) {
  if (!v.is_boolean()) return FieldError(field, "true or false");
  return v.get<bool>();
}

int32_t SaturatedInt32(int64_t n) {
  return static_cast<int32_t>(std::clamp<int64_t>(n, std::numeric_limits<int32_t>::min(),
                                                  std::numeric_limits<int32_t>::max()));
}

absl::StatusOr<json> ParseBody(std::string_view text, std::string_view model_id) {
  // Writing out or copying a value nested a million deep (a schema, say) would overflow the
  // stack: such a body is refused before it is parsed. Its size is the server's limit, which
  // bounds its numbers, booleans and nulls (a 4 MiB body of "0," parses to 32 MB); objects,
  // arrays and strings take an allocation each (a 4 MiB body of "{}," would take 107 MB), so
  // they are counted too.
  RETURN_IF_ERROR(CheckUntrustedJson(text, "the body", std::numeric_limits<int64_t>::max(),
                                     kMaxBodyAllocations));
  // An ordered object finds each new key by a scan of the keys before it: an object of
  // 500,000 short keys (a 4 MiB body) would take minutes. Keys past kMaxObjectKeys in one object
  // are not stored, and the body is refused.
  std::vector<int64_t> keys;  // per open object, innermost last (arrays: -1)
  bool too_many = false;
  const json::parser_callback_t count = [&](int /*depth*/, json::parse_event_t event,
                                            json& /*parsed*/) {
    switch (event) {
      case json::parse_event_t::object_start:
        keys.push_back(0);
        return true;
      case json::parse_event_t::array_start:
        keys.push_back(-1);
        return true;
      case json::parse_event_t::object_end:
      case json::parse_event_t::array_end:
        if (!keys.empty()) keys.pop_back();
        return !too_many;
      case json::parse_event_t::key:
        if (!keys.empty() && ++keys.back() > kMaxObjectKeys) too_many = true;
        return !too_many;
      case json::parse_event_t::value:
        return !too_many;
    }
    return true;
  };
  json body = json::parse(text, count, /*allow_exceptions=*/false);
  if (too_many) {
    return absl::InvalidArgumentError(
        absl::StrCat("the body has an object of more than ", kMaxObjectKeys,
                     " keys; no field takes that many (nor does a JSON schema's automaton)"));
  }
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

json UsageJson(const v1::Usage& u) {
  return {{"prompt_tokens", u.prompt_tokens()},
          {"completion_tokens", u.completion_tokens()},
          {"total_tokens", u.prompt_tokens() + u.completion_tokens()},
          {"prompt_tokens_details", {{"cached_tokens", u.cached_prompt_tokens()}}}};
}

std::string CandidateKey(const std::string& text, int32_t token_id) {
  return text.empty() ? absl::StrCat("token_id:", token_id) : text;
}

std::string TokenKey(const std::string& token_text, const std::string& piece, int32_t token_id) {
  return CandidateKey(token_text.empty() ? piece : token_text, token_id);
}

double Finite(float logprob) { return std::max(static_cast<double>(logprob), -9999.0); }

json Envelope(std::string_view id, std::string_view object, int64_t created,
              std::string_view model_id) {
  return {{"id", std::string(id)},
          {"object", std::string(object)},
          {"created", created},
          {"model", std::string(model_id)}};
}

std::string AnswerJson(
    const CompletionRequest& request, const std::vector<std::vector<v1::GenerateResponse>>& choices,
    std::string_view object, std::string_view completion_id, int64_t created,
    std::string_view model_id,
    const std::function<json(size_t, std::span<const v1::GenerateResponse>)>& choice) {
  json out = Envelope(completion_id, object, created, model_id);
  out["choices"] = json::array();
  std::vector<v1::Usage> usage(choices.size());  // one per choice, so each prompt's is found
  for (size_t i = 0; i < choices.size(); ++i) {
    out["choices"].push_back(choice(i, choices[i]));
    if (!choices[i].empty()) usage[i] = choices[i].back().usage();
  }
  out["usage"] = choices.empty() ? json(nullptr) : UsageJson(TotalUsage(request, usage));
  return Dump(out);
}

std::string ChunkEvent(const CompletionRequest& request, std::string_view object, json choice,
                       std::string_view completion_id, int64_t created, std::string_view model_id,
                       const v1::GenerateResponse& response, const v1::Usage* usage_so_far) {
  json chunk = Envelope(completion_id, object, created, model_id);
  chunk["choices"] = json::array({std::move(choice)});
  if (request.include_usage) chunk["usage"] = nullptr;
  if (request.continuous_usage && usage_so_far != nullptr) {
    chunk["usage"] = UsageJson(*usage_so_far);
    // The cached prompt tokens are known from the choice's final response on.
    if (!response.has_usage()) chunk["usage"].erase("prompt_tokens_details");
  }
  return absl::StrCat("data: ", Dump(chunk), "\n\n");
}

namespace {

absl::StatusOr<v1::GuidedChoice> GuidedChoices(const json& v, const std::string& field) {
  v1::GuidedChoice choice;
  if (!v.is_array()) return FieldError(field, "an array of strings");
  for (const json& c : v) {
    if (!c.is_string()) return FieldError(field, "an array of strings");
    choice.add_choices(c.get<std::string>());
  }
  return choice;
}

// A JSON Schema as the request holds it: an object (or boolean) or a string of one; checked
// later (json_schema.h).
absl::StatusOr<std::string> SchemaText(const json& v, const std::string& field) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() || v.is_boolean())
    return v.dump(-1, ' ', false, json::error_handler_t::replace);
  return FieldError(field, "a JSON Schema (an object, or a string holding one)");
}

enum class GuideKind { kChoice, kRegex, kJsonSchema, kJsonObject };

// Sets `g`'s guide of `kind` from `value`, the request's `field`; false when the value asks
// for none (json_object false).
absl::StatusOr<bool> SetGuide(GuideKind kind, const json& value, const std::string& field,
                              v1::GenerateRequest& g) {
  if (kind == GuideKind::kJsonObject) {  // false sets none (not even an empty guide)
    if (!value.is_boolean()) return FieldError(field, "true or false");
    if (value.get<bool>()) g.mutable_guide()->set_json_object(true);
    return value.get<bool>();
  }
  v1::Guide& guide = *g.mutable_guide();
  switch (kind) {
    case GuideKind::kChoice: {
      ASSIGN_OR_RETURN(*guide.mutable_choice(), GuidedChoices(value, field));
      return true;
    }
    case GuideKind::kRegex:
      if (!value.is_string()) return FieldError(field, "a string (a regular expression)");
      guide.set_regex(value.get<std::string>());
      return true;
    case GuideKind::kJsonSchema: {
      ASSIGN_OR_RETURN(*guide.mutable_json_schema(), SchemaText(value, field));
      return true;
    }
    case GuideKind::kJsonObject:
      break;  // above
  }
  return false;
}

// Guided decoding, in the forms vLLM takes: response_format {"type": "json_object"} or
// {"type": "json_schema", "json_schema": {"schema": ...}}, guided_choice, guided_regex,
// guided_json, and structured_outputs {"choice"}, {"regex"}, {"json"} or {"json_object": true}.
// The guides this server lacks (grammars) are refused, never ignored: the client counts on the
// output's form.
absl::Status ParseGuide(const json& body, v1::GenerateRequest& g) {
  int guides = 0;
  if (const json* v = Find(body, "response_format"); v != nullptr) {
    const json* type = v->is_object() ? Find(*v, "type") : nullptr;
    if (type == nullptr || (*type != "text" && *type != "json_object" && *type != "json_schema")) {
      return FieldError("response_format",
                        "{\"type\": \"text\"}, {\"type\": \"json_object\"} or "
                        "{\"type\": \"json_schema\", \"json_schema\": {\"schema\": {...}}}");
    }
    if (*type == "json_object") {
      g.mutable_guide()->set_json_object(true);
      ++guides;
    } else if (*type == "json_schema") {
      const json* spec = Find(*v, "json_schema");
      const json* schema = spec != nullptr && spec->is_object() ? Find(*spec, "schema") : nullptr;
      if (schema == nullptr) {
        return FieldError("response_format.json_schema", "an object with the schema in \"schema\"");
      }
      ASSIGN_OR_RETURN(const bool set, SetGuide(GuideKind::kJsonSchema, *schema,
                                                "response_format.json_schema.schema", g));
      guides += set;
    }
  }
  const std::pair<const char*, GuideKind> top_level[] = {{"guided_choice", GuideKind::kChoice},
                                                         {"guided_regex", GuideKind::kRegex},
                                                         {"guided_json", GuideKind::kJsonSchema}};
  for (const auto& [field, kind] : top_level) {
    if (const json* v = Find(body, field); v != nullptr) {
      ASSIGN_OR_RETURN(const bool set, SetGuide(kind, *v, field, g));
      guides += set;
    }
  }
  if (const json* v = Find(body, "structured_outputs"); v != nullptr) {
    if (!v->is_object()) return FieldError("structured_outputs", "an object");
    const std::pair<const char*, GuideKind> keys[] = {{"choice", GuideKind::kChoice},
                                                      {"regex", GuideKind::kRegex},
                                                      {"json", GuideKind::kJsonSchema},
                                                      {"json_object", GuideKind::kJsonObject}};
    for (const auto& [key, value] : v->items()) {
      if (value.is_null()) continue;
      const std::string field = absl::StrCat("structured_outputs.", key);
      for (const auto& [name, kind] : keys) {
        if (key != name) continue;
        ASSIGN_OR_RETURN(const bool set, SetGuide(kind, value, field, g));
        guides += set;
      }
      if ((key == "whitespace_pattern" && value != "") ||
          (key == "disable_any_whitespace" && value != false)) {
        // disable_additional_properties needs nothing: a schema's objects hold its
        // properties only.
        return FieldError(field,
                          "absent here: whitespace in guided JSON is a space, or a line break "
                          "and an indent (coordinator/json_schema.h)");
      }
      if (key == "grammar" || key == "structural_tag") {
        return FieldError(field,
                          "absent here: this server guides output by choice, regex, json or "
                          "json_object only");
      }
    }
  }
  if (const json* v = Find(body, "guided_whitespace_pattern");
      v != nullptr && !v->is_null() && *v != "") {
    return FieldError("guided_whitespace_pattern",
                      "absent here: whitespace in guided JSON is a space, or a line break and an "
                      "indent (coordinator/json_schema.h)");
  }
  if (Find(body, "guided_grammar") != nullptr) {
    return FieldError("guided_grammar",
                      "absent here: this server guides output by guided_choice, guided_regex, "
                      "guided_json or a response_format");
  }
  if (guides > 1) {
    return absl::InvalidArgumentError(
        "give one guide: response_format json_object or json_schema, guided_choice, "
        "guided_regex, guided_json or structured_outputs");
  }
  return absl::OkStatus();
}

}  // namespace

// Fields of OpenAI's API and vLLM's extensions that this server does not serve: taken only at
// their neutral value (or null), refused at any other rather than ignored, which would change
// the answer without a word.
absl::Status CheckNeutralFields(const json& body, bool chat) {
  struct Neutral {
    const char* field;
    json value;
    const char* why;
  };
  // vLLM's chat fields that change the prompt: the transcript here is fixed (openai_chat.h).
  const Neutral chat_neutral[] = {
      {"add_generation_prompt", true, "the transcript always ends with the assistant's turn"},
      {"continue_final_message", false,
       "the transcript always starts a new assistant turn; send the text so far as a "
       "completions prompt to continue it"},
      {"chat_template", nullptr, "the transcript's form is fixed (OPT has no chat template)"},
      {"chat_template_kwargs", json::object(), "the transcript's form is fixed"},
      {"echo", false, "the reply does not repeat the last message"},
  };
  auto check = [&body](std::span<const Neutral> fields) -> absl::Status {
    for (const Neutral& n : fields) {
      const json* v = Find(body, n.field);
      if (v == nullptr || v->is_null() || *v == n.value) continue;
      return absl::InvalidArgumentError(
          absl::StrCat("field '", n.field, "' must be ", n.value.dump(), " here: ", n.why));
    }
    return absl::OkStatus();
  };
  if (chat) RETURN_IF_ERROR(check(chat_neutral));
  const Neutral neutral[] = {
      {"return_tokens_as_token_ids", false, "tokens are returned as text"},
      {"suffix", "", "no suffix (insertion) mode"},
      {"use_beam_search", false, "no beam search; sample n choices instead"},
      {"length_penalty", 1, "it weighs beam search's candidates, and there is no beam search"},
      {"allowed_token_ids", nullptr, "no allow list; logit_bias or a guide keep to tokens"},
      {"bad_words", json::array(), "no bad words; logit_bias -100 bans a token"},
      {"include_stop_str_in_output", false, "the text ends before its stop string"},
      {"skip_special_tokens", true, "special tokens are left out of the text"},
      {"spaces_between_special_tokens", true, "special tokens are left out of the text"},
      {"prompt_logprobs", nullptr,
       "ask the completions API for echo with logprobs, or gRPC's prompt_logprobs"},
  };
  return check(neutral);
}

absl::Status ParseSharedFields(const json& body, const RequestDefaults& defaults,
                               CompletionRequest& r) {
  RETURN_IF_ERROR(CheckNeutralFields(body, r.chat));
  v1::GenerateRequest& g = r.generate;
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
  g.set_temperature(defaults.temperature);
  if (defaults.top_p.has_value()) g.set_top_p(*defaults.top_p);
  if (defaults.top_k.has_value()) g.set_top_k(*defaults.top_k);
  if (defaults.min_p.has_value()) g.set_min_p(*defaults.min_p);
  if (defaults.repetition_penalty.has_value()) {
    g.set_repetition_penalty(*defaults.repetition_penalty);
  }
  // Out-of-range values are clamped so the service's range check reports them.
  RETURN_IF_ERROR(IfPresent<int64_t>(body, "max_tokens", Integer,
                                     [&](int64_t n) { g.set_max_new_tokens(SaturatedInt32(n)); }));
  RETURN_IF_ERROR(
      IfPresent<float>(body, "temperature", Number, [&](float t) { g.set_temperature(t); }));
  // OpenAI takes top_p 0 (the likeliest token alone); the nucleus of the smallest positive
  // mass is that token, as the gRPC API's top_p must be in (0, 1].
  RETURN_IF_ERROR(IfPresent<float>(body, "top_p", Number, [&](float p) {
    g.set_top_p(p == 0.0f ? std::numeric_limits<float>::min() : p);
  }));
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
    g.set_min_tokens(SaturatedInt32(n));
  }
  if (const json* v = Find(body, "truncate_prompt_tokens"); v != nullptr) {
    ASSIGN_OR_RETURN(const int64_t n, Integer(*v, "truncate_prompt_tokens"));
    g.set_truncate_prompt_tokens(SaturatedInt32(n));
  }
  if (const json* v = Find(body, "priority"); v != nullptr) {  // vLLM's: lower first
    ASSIGN_OR_RETURN(const int64_t n, Integer(*v, "priority"));
    g.set_priority(SaturatedInt32(n));
  }
  if (const json* v = Find(body, "logit_bias"); v != nullptr) {
    // {"token id": bias}: JSON keys are strings.
    if (!v->is_object()) return FieldError("logit_bias", "an object of token id: bias");
    for (const auto& [key, bias] : v->items()) {
      int32_t id = 0;
      if (!absl::SimpleAtoi(key, &id) || !bias.is_number()) {
        return FieldError("logit_bias", "an object of token id: bias (a number)");
      }
      (*g.mutable_logit_bias())[id] = ToFloat(bias);
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
  RETURN_IF_ERROR(IfPresent<bool>(body, "stream", Bool, [&](bool b) { r.stream = b; }));
  if (const json* v = Find(body, "stream_options"); v != nullptr) {
    if (!v->is_object()) return FieldError("stream_options", "an object");
    // As vLLM: an answer that is not streamed has no chunks to carry usage (an empty object
    // asks for nothing).
    if (!r.stream && !v->empty()) {
      return absl::InvalidArgumentError("field 'stream_options' only with \"stream\": true");
    }
    RETURN_IF_ERROR(
        IfPresent<bool>(*v, "include_usage", Bool, [&](bool b) { r.include_usage = b; }));
    bool continuous = false;
    RETURN_IF_ERROR(
        IfPresent<bool>(*v, "continuous_usage_stats", Bool, [&](bool b) { continuous = b; }));
    // As vLLM: only with include_usage.
    r.continuous_usage = r.include_usage && continuous;
  }
  RETURN_IF_ERROR(
      IfPresent<bool>(body, "return_token_ids", Bool, [&](bool b) { r.return_token_ids = b; }));
  RETURN_IF_ERROR(ParseGuide(body, g));
  return absl::OkStatus();
}

}  // namespace llmint8::coordinator::openai::internal
