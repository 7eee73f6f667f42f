#include "coordinator/openai_chat.h"

#include <algorithm>
#include <iterator>
#include <optional>
#include <span>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/sampling_limits.h"
#include "common/status_macros.h"
#include "coordinator/json_schema.h"
#include "coordinator/openai_fields.h"

namespace llmint8::coordinator::openai {
namespace {

using internal::Bool;
using internal::CandidateKey;
using internal::FieldError;
using internal::Find;
using internal::FinishReason;
using internal::Finite;
using internal::IfPresent;
using internal::Integer;
using internal::json;
using internal::Logprob;
using internal::TokenKey;

constexpr char kContentForms[] =
    "a string or an array of {\"type\": \"text\", \"text\": ...} parts (only text is read here)";

// A message's text: its content string, or its text parts joined.
absl::StatusOr<std::string> ContentText(const json& message, const std::string& where) {
  const std::string field = absl::StrCat(where, ".content");
  const json* content = Find(message, "content");
  if (content == nullptr) return FieldError(field, kContentForms);
  if (content->is_string()) return content->get<std::string>();
  if (!content->is_array()) return FieldError(field, kContentForms);
  std::string text;
  for (const json& part : *content) {
    const json* type = part.is_object() ? Find(part, "type") : nullptr;
    const json* part_text = part.is_object() ? Find(part, "text") : nullptr;
    if (type == nullptr || *type != "text" || part_text == nullptr || !part_text->is_string()) {
      return FieldError(field, kContentForms);
    }
    // Joined by newlines, as vLLM joins a message's text parts.
    if (&part != &content->front()) text += '\n';
    text += part_text->get<std::string>();
  }
  return text;
}

// An assistant message's tool_calls, as the transcript shows them: "name(arguments)" each.
absl::Status ToolCallsText(const json& calls, const std::string& where,
                           std::vector<std::string>& out) {
  constexpr char kForm[] =
      "an array of {\"type\": \"function\", \"function\": {\"name\", \"arguments\"}}";
  if (!calls.is_array()) return FieldError(where, kForm);
  for (const json& call : calls) {
    const json* function = call.is_object() ? Find(call, "function") : nullptr;
    const json* name =
        function != nullptr && function->is_object() ? Find(*function, "name") : nullptr;
    const json* arguments = name != nullptr ? Find(*function, "arguments") : nullptr;
    if (name == nullptr || !name->is_string() || arguments == nullptr || !arguments->is_string()) {
      return FieldError(where, kForm);
    }
    out.push_back(absl::StrCat(name->get<std::string>(), "(", arguments->get<std::string>(), ")"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<ChatMessage>> ParseMessages(const json& body) {
  const json* messages = Find(body, "messages");
  if (messages == nullptr) return absl::InvalidArgumentError("field 'messages' is required");
  if (!messages->is_array() || messages->empty()) {
    return FieldError("messages", "a non-empty array of {\"role\", \"content\"} objects");
  }
  std::vector<ChatMessage> out;
  out.reserve(messages->size());
  for (size_t i = 0; i < messages->size(); ++i) {
    const json& m = (*messages)[i];
    const std::string where = absl::StrCat("messages[", i, "]");
    if (!m.is_object()) return FieldError(where, "an object with \"role\" and \"content\"");
    const json* role = Find(m, "role");
    if (role == nullptr || !role->is_string()) {
      return FieldError(absl::StrCat(where, ".role"), "system, developer, user, assistant or tool");
    }
    ChatMessage& message = out.emplace_back();
    message.role = role->get<std::string>();
    if (message.role == "function") {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ".role 'function' (the older form) is not served: send 'tool'"));
    }
    if (message.role != "system" && message.role != "developer" && message.role != "user" &&
        message.role != "assistant" && message.role != "tool") {
      return FieldError(absl::StrCat(where, ".role"), "system, developer, user, assistant or tool");
    }
    const json* calls = Find(m, "tool_calls");
    if (calls != nullptr && !calls->is_null() && message.role != "assistant") {
      return FieldError(absl::StrCat(where, ".tool_calls"), "absent here (an assistant's field)");
    }
    if (calls != nullptr && !calls->is_null()) {
      RETURN_IF_ERROR(ToolCallsText(*calls, absl::StrCat(where, ".tool_calls"), message.calls));
    }
    const json* content = Find(m, "content");
    if (!message.calls.empty() && (content == nullptr || content->is_null())) continue;
    ASSIGN_OR_RETURN(message.content, ContentText(m, where));
  }
  return out;
}

// tools and tool_choice: a call the client names (tool_choice {"type": "function",
// "function": {"name"}}, or "required" with one tool) is served by guiding the reply to the
// function's parameters schema (vLLM's named tool choice); "none" calls nothing. "auto" (the
// default where tools are given) is refused: an OPT base model has no format of its own for
// choosing a tool. The older functions / function_call are refused unless empty or "none".
// Whether `name` is a function name as OpenAI takes one: 1 to 64 of [A-Za-z0-9_-].
bool FunctionName(const std::string& name) {
  return !name.empty() && name.size() <= 64 && std::all_of(name.begin(), name.end(), [](char c) {
    return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-';
  });
}

// A function's parameters as the schema its call's arguments keep to: a JSON object, as
// OpenAI's function calling has it (a schema without a type gets type object).
absl::StatusOr<std::string> ParametersSchema(const json* parameters, const std::string& where) {
  if (parameters == nullptr) return std::string(R"({"type": "object", "properties": {}})");
  if (!parameters->is_object()) return FieldError(where, "a JSON Schema object");
  json schema = *parameters;
  if (const json* type = Find(schema, "type"); type == nullptr) {
    for (const char* key : {"$ref", "anyOf", "oneOf", "allOf", "enum", "const"}) {
      if (schema.contains(key)) {
        return FieldError(where, absl::StrCat("a schema with \"type\": \"object\" beside ", key));
      }
    }
    schema["type"] = "object";
  } else if (*type != "object") {
    return FieldError(where, "a schema of type object (the call's arguments are an object)");
  }
  std::string text = schema.dump(-1, ' ', false, json::error_handler_t::replace);
  // Checked here so that an error names the tool; validation writes it out again.
  if (absl::StatusOr<std::string> written = JsonSchemaRegex(text); !written.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": ", written.status().message()));
  }
  return text;
}

// tools and tool_choice: a call the client names (tool_choice {"type": "function",
// "function": {"name"}}, or "required" with one tool) is served by guiding the reply to the
// function's parameters schema (vLLM's named tool choice); "none" calls nothing. "auto" (the
// default where tools are given) is refused: an OPT base model has no format of its own for
// choosing a tool. The older functions / function_call are refused unless empty or "none".
absl::Status ParseTools(const json& body, CompletionRequest& r) {
  if (const json* v = Find(body, "functions"); v != nullptr && !(v->is_array() && v->empty())) {
    return FieldError("functions", "absent here (the older form): send tools");
  }
  if (const json* v = Find(body, "function_call"); v != nullptr && *v != "none") {
    return FieldError("function_call", "absent here (the older form): send tool_choice");
  }
  const json* tools = Find(body, "tools");
  if (tools != nullptr && !tools->is_array()) {
    return FieldError("tools", "an array of {\"type\": \"function\", \"function\": {...}}");
  }
  // Every tool is checked, whatever tool_choice says: the names are unique and OpenAI's.
  std::vector<std::pair<std::string, const json*>> functions;  // name, function object
  for (size_t i = 0; tools != nullptr && i < tools->size(); ++i) {
    const json& tool = (*tools)[i];
    const std::string where = absl::StrCat("tools[", i, "]");
    const json* type = tool.is_object() ? Find(tool, "type") : nullptr;
    const json* f = tool.is_object() ? Find(tool, "function") : nullptr;
    const json* n = f != nullptr && f->is_object() ? Find(*f, "name") : nullptr;
    if (type == nullptr || *type != "function" || n == nullptr || !n->is_string()) {
      return FieldError(where,
                        "{\"type\": \"function\", \"function\": {\"name\", "
                        "\"parameters\"}}");
    }
    const std::string name = n->get<std::string>();
    if (!FunctionName(name)) {
      return FieldError(absl::StrCat(where, ".function.name"), "1 to 64 of a-z, A-Z, 0-9, _ and -");
    }
    for (const auto& [other, unused] : functions) {
      if (other == name) {
        return FieldError(absl::StrCat(where, ".function.name"), "a name no other tool has");
      }
    }
    functions.emplace_back(name, f);
  }
  const json* choice = Find(body, "tool_choice");
  if (choice == nullptr && functions.empty()) return absl::OkStatus();
  if (choice != nullptr && *choice == "none") return absl::OkStatus();
  if (functions.empty()) return FieldError("tools", "the functions that tool_choice may call");
  std::string name;
  if (choice != nullptr && *choice == "required" && functions.size() == 1) {
    name = functions[0].first;
  } else if (choice != nullptr && choice->is_object() && Find(*choice, "type") != nullptr &&
             *Find(*choice, "type") == "function") {
    const json* f = Find(*choice, "function");
    const json* n = f != nullptr && f->is_object() ? Find(*f, "name") : nullptr;
    if (n == nullptr || !n->is_string()) {
      return FieldError("tool_choice.function", "{\"name\": ...}");
    }
    name = n->get<std::string>();
  } else {
    return FieldError("tool_choice",
                      "\"none\", \"required\" with one tool, or {\"type\": \"function\", "
                      "\"function\": {\"name\": ...}}: beside tools the default is \"auto\", and "
                      "an OPT model has no format of its own for choosing a tool");
  }
  for (size_t i = 0; i < functions.size(); ++i) {
    if (functions[i].first != name) continue;
    if (r.generate.has_guide()) {
      return absl::InvalidArgumentError(
          "give one guide: a named tool_choice guides the reply to its parameters; leave out "
          "response_format, guided_* and structured_outputs");
    }
    ASSIGN_OR_RETURN(*r.generate.mutable_guide()->mutable_json_schema(),
                     ParametersSchema(Find(*functions[i].second, "parameters"),
                                      absl::StrCat("tools[", i, "].function.parameters")));
    r.tool_call_name = name;
    r.tool_choice_required = choice != nullptr && *choice == "required";
    return absl::OkStatus();
  }
  return FieldError("tool_choice.function.name",
                    absl::StrCat("the name of one of tools ('", name, "' is not)"));
}

absl::StatusOr<CompletionRequest> ParseChat(const json& body, const RequestDefaults& defaults) {
  CompletionRequest r;
  r.chat = true;
  v1::GenerateRequest& g = r.generate;
  ASSIGN_OR_RETURN(const std::vector<ChatMessage> messages, ParseMessages(body));
  RETURN_IF_ERROR(internal::ParseSharedFields(body, defaults, r));
  RETURN_IF_ERROR(ParseTools(body, r));
  g.set_text(ChatTranscript(messages));
  r.prompts.emplace_back().set_text(g.text());
  // A reply guided by choices ends on one of them, a JSON one on its closing brace (and JSON
  // holds no raw newline); a regular expression may go on past the turn, so it keeps the
  // turn's stops (a match that holds "\nUser:" is cut there).
  const v1::Guide::KindCase guide = g.guide().kind_case();
  const bool turn_stops = guide == v1::Guide::KIND_NOT_SET || guide == v1::Guide::kRegex;
  const int turn_stop_count = turn_stops ? static_cast<int>(std::size(kChatTurnStops)) : 0;
  if (g.stop_size() > kMaxStopSequences - turn_stop_count) {
    return FieldError("stop", absl::StrCat("at most ", kMaxStopSequences - turn_stop_count,
                                           " strings here (the transcript's next turn takes ",
                                           turn_stop_count, " of the ", kMaxStopSequences, ")"));
  }
  if (turn_stops) {
    for (const std::string_view stop : kChatTurnStops) g.add_stop(std::string(stop));
  }
  // max_completion_tokens replaced max_tokens in the chat API; either bounds the reply.
  if (const json* v = Find(body, "max_completion_tokens"); v != nullptr) {
    ASSIGN_OR_RETURN(const int64_t n, Integer(*v, "max_completion_tokens"));
    g.set_max_new_tokens(internal::SaturatedInt32(n));
    r.max_tokens_field = "max_completion_tokens";
  } else if (Find(body, "max_tokens") == nullptr) {
    r.fill_context = true;
    g.set_max_new_tokens(0);  // no limit of its own: the server's default_max_tokens, if any
  }
  if (!r.fill_context && g.max_new_tokens() <= 0) {
    return FieldError(r.max_tokens_field, "at least 1");
  }
  RETURN_IF_ERROR(IfPresent<bool>(body, "logprobs", Bool, [&](bool b) { r.logprobs = b; }));
  g.set_logprobs(r.logprobs);
  if (const json* v = Find(body, "top_logprobs"); v != nullptr) {
    ASSIGN_OR_RETURN(const int64_t k, Integer(*v, "top_logprobs"));
    if (k < 0 || k > kMaxTopLogprobs) {
      return FieldError("top_logprobs", absl::StrCat("an integer in [0, ", kMaxTopLogprobs, "]"));
    }
    if (k > 0 && !r.logprobs) return FieldError("top_logprobs", "used with logprobs true only");
    g.set_top_logprobs(static_cast<int32_t>(k));
  }
  return r;
}

// {"token", "logprob", "bytes"}: bytes are the token's own, raw (those of tokens that split a
// UTF-8 character join into it, where the label shows U+FFFD); null without a tokenizer.
json TokenLogprob(const std::string& label, float logprob, const std::string& raw) {
  json bytes = raw.empty() ? json(nullptr) : json::array();
  for (const char c : raw) bytes.push_back(static_cast<unsigned char>(c));
  return {{"token", label}, {"logprob", Finite(logprob)}, {"bytes", std::move(bytes)}};
}

// What the responses [begin, end) of one choice add to it.
struct ChoicePart {
  std::string text;
  json logprobs = json::array();  // logprobs.content entries
  json token_ids = json::array();
  v1::FinishReason finish = v1::FINISH_REASON_UNSPECIFIED;
};

ChoicePart Collect(const CompletionRequest& request, const v1::GenerateResponse* begin,
                   const v1::GenerateResponse* end) {
  ChoicePart part;
  for (const v1::GenerateResponse* r = begin; r != end; ++r) {
    if (r->has_token_id()) {
      if (request.logprobs) {
        const std::string label = TokenKey(r->token_text(), r->text(), r->token_id());
        json entry = TokenLogprob(label, Logprob(*r).value_or(0.0f), r->token_bytes());
        json top = json::array();
        for (const v1::TopLogprob& c : r->top_logprobs()) {
          top.push_back(TokenLogprob(CandidateKey(c.text(), c.token_id()), c.logprob(), c.bytes()));
        }
        entry["top_logprobs"] = std::move(top);
        part.logprobs.push_back(std::move(entry));
      }
      if (request.return_token_ids) part.token_ids.push_back(r->token_id());
    }
    part.text += r->text();
    if (r->finish_reason() != v1::FINISH_REASON_UNSPECIFIED) part.finish = r->finish_reason();
  }
  return part;
}

// The reply's content starts at its first character that is not ASCII whitespace: the
// transcript ends with "Assistant:", so the model's first token usually brings a space.
// `started` says whether earlier text of the reply got past that; this text's lead is dropped
// until it does. A reply guided by choices or a regular expression is kept as its guide made
// it (a choice " yes" stays one); a JSON guide's starts with its '{' anyway.
void TrimReplyStart(const CompletionRequest& request, std::string& text, bool& started) {
  const v1::Guide::KindCase guide = request.generate.guide().kind_case();
  if (started || guide == v1::Guide::kChoice || guide == v1::Guide::kRegex) return;
  text.erase(0, text.size() - absl::StripLeadingAsciiWhitespace(text).size());
  started = !text.empty();
}

// A tool call's id (the same in every chunk of a streamed choice), type and function name.
json ToolCall(const CompletionRequest& request, std::string_view completion_id, size_t index) {
  return {{"id", absl::StrCat("call_", std::string(completion_id), "_", index)},
          {"type", "function"},
          {"function", {{"name", request.tool_call_name}}}};
}

// The fields every choice has beside its message or delta.
void AddChoiceFields(const CompletionRequest& request, ChoicePart& part, json& choice) {
  choice["logprobs"] =
      request.logprobs ? json{{"content", std::move(part.logprobs)}} : json(nullptr);
  const char* reason = FinishReason(part.finish);
  if (reason != nullptr && request.tool_choice_required && std::string_view(reason) == "stop") {
    reason = "tool_calls";
  }
  choice["finish_reason"] = reason != nullptr ? json(reason) : json(nullptr);
  if (request.return_token_ids) choice["token_ids"] = std::move(part.token_ids);
}

}  // namespace

std::string ChatTranscript(const std::vector<ChatMessage>& messages) {
  std::string out;
  for (const ChatMessage& m : messages) {
    if (m.role == "user") {
      absl::StrAppend(&out, "User: ", m.content, "\n\n");
    } else if (m.role == "assistant") {
      std::string text = m.content;
      for (const std::string& call : m.calls) {
        absl::StrAppend(&text, text.empty() ? "" : " ", "[call ", call, "]");
      }
      absl::StrAppend(&out, "Assistant: ", text, "\n\n");
    } else if (m.role == "tool") {
      absl::StrAppend(&out, "Tool: ", m.content, "\n\n");
    } else {
      absl::StrAppend(&out, m.content, "\n\n");
    }
  }
  out += "Assistant:";
  return out;
}

absl::StatusOr<CompletionRequest> ParseChatCompletionRequest(std::string_view body,
                                                             std::string_view model_id,
                                                             const RequestDefaults& defaults) {
  ASSIGN_OR_RETURN(const json parsed, internal::ParseBody(body, model_id));
  return ParseChat(parsed, defaults);
}

std::string ChatCompletionJson(const CompletionRequest& request,
                               const std::vector<std::vector<v1::GenerateResponse>>& choices,
                               std::string_view completion_id, int64_t created,
                               std::string_view model_id) {
  return internal::AnswerJson(request, choices, "chat.completion", completion_id, created, model_id,
                              [&](size_t i, std::span<const v1::GenerateResponse> responses) {
                                ChoicePart part = Collect(request, responses.data(),
                                                          responses.data() + responses.size());
                                bool started = false;
                                TrimReplyStart(request, part.text, started);
                                json message = {{"role", "assistant"}};
                                if (request.tool_call_name.empty()) {
                                  message["content"] = std::move(part.text);
                                } else {
                                  message["content"] = nullptr;
                                  json call = ToolCall(request, completion_id, i);
                                  call["function"]["arguments"] = std::move(part.text);
                                  message["tool_calls"] = json::array({std::move(call)});
                                }
                                json choice = {{"index", i}, {"message", std::move(message)}};
                                AddChoiceFields(request, part, choice);
                                return choice;
                              });
}

std::string ChatChunkEvent(const CompletionRequest& request, size_t index,
                           const v1::GenerateResponse& response, ChatStream& stream,
                           std::string_view completion_id, int64_t created,
                           std::string_view model_id, const v1::Usage* usage_so_far) {
  ChoicePart part = Collect(request, &response, &response + 1);
  TrimReplyStart(request, part.text, stream.content_started);
  const bool first = !stream.role_sent;
  stream.role_sent = true;
  json delta = json::object();
  if (first) delta["role"] = "assistant";
  if (!request.tool_call_name.empty()) {
    // The call's id, type and name in the first delta, its arguments piece by piece.
    if (first) delta["content"] = nullptr;
    if (first || !part.text.empty()) {
      json call =
          first ? ToolCall(request, completion_id, index) : json{{"function", json::object()}};
      call["index"] = 0;
      call["function"]["arguments"] = std::move(part.text);
      delta["tool_calls"] = json::array({std::move(call)});
    }
  } else if (first || !part.text.empty()) {
    delta["content"] = std::move(part.text);
  }
  json choice = {{"index", index}, {"delta", std::move(delta)}};
  AddChoiceFields(request, part, choice);
  return internal::ChunkEvent(request, "chat.completion.chunk", std::move(choice), completion_id,
                              created, model_id, response, usage_so_far);
}

}  // namespace llmint8::coordinator::openai
