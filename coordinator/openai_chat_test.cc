#include "coordinator/openai_chat.h"

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace llmint8::coordinator::openai {
namespace {

using json = nlohmann::json;

constexpr char kModel[] = "opt-sotu-cpu";

CompletionRequest ParseOk(const std::string& body) {
  absl::StatusOr<CompletionRequest> r = ParseChatCompletionRequest(body, kModel);
  EXPECT_TRUE(r.ok()) << r.status() << " for " << body;
  return r.ok() ? *r : CompletionRequest{};
}

absl::Status ParseError(const std::string& body) {
  return ParseChatCompletionRequest(body, kModel).status();
}

// Tool parameters nested a million deep are refused with the body, before the schema is
// copied or written out (either would recurse once per level).
TEST(OpenAiChatTest, ToolParametersNestedTooDeepAreRefused) {
  const std::string deep = std::string(1'000'000, '[') + std::string(1'000'000, ']');
  const absl::Status refused = ParseError(
      R"({"messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function",
          "function": {"name": "f", "parameters": {"type": "object", "enum": [)" +
      deep + R"(]}}}], "tool_choice": {"type": "function", "function": {"name": "f"}}})");
  EXPECT_EQ(refused.code(), absl::StatusCode::kInvalidArgument) << refused;
  EXPECT_THAT(refused.message(), ::testing::HasSubstr("nested more than 256 deep"));
}

TEST(ChatTranscriptTest, RolesBecomeATranscriptThatEndsOnTheAssistantsTurn) {
  EXPECT_EQ(
      ChatTranscript(
          {{"system", "Be brief."}, {"user", "Hi"}, {"assistant", "Hello."}, {"user", "And now?"}}),
      "Be brief.\n\nUser: Hi\n\nAssistant: Hello.\n\nUser: And now?\n\nAssistant:");
  EXPECT_EQ(ChatTranscript({{"developer", "Rules"}, {"user", "Q"}}),
            "Rules\n\nUser: Q\n\nAssistant:");
}

TEST(ChatParseTest, MessagesBecomeOneTextPromptThatStopsAtTheNextTurn) {
  const CompletionRequest r = ParseOk(R"({
      "model": "opt-sotu-cpu",
      "messages": [{"role": "system", "content": "Be brief."},
                   {"role": "user", "content": [{"type": "text", "text": "Summarize:"},
                                                {"type": "text", "text": "Congress."}]}],
      "stop": ["\n\n"], "temperature": 0.7, "seed": 5, "n": 2})");
  EXPECT_TRUE(r.chat);
  ASSERT_EQ(r.prompts.size(), 1u);
  // A message's text parts are joined by newlines, as vLLM joins them.
  const std::string transcript = "Be brief.\n\nUser: Summarize:\nCongress.\n\nAssistant:";
  EXPECT_EQ(r.prompts[0].text(), transcript);
  EXPECT_EQ(r.generate.text(), transcript);
  ASSERT_EQ(r.generate.stop_size(), 3);
  EXPECT_EQ(r.generate.stop(0), "\n\n");
  EXPECT_EQ(r.generate.stop(1), "\n\nUser:") << "the client's stops, then the turn's";
  EXPECT_EQ(r.generate.stop(2), "\nUser:");
  EXPECT_FLOAT_EQ(r.generate.temperature(), 0.7f);
  EXPECT_EQ(r.generate.seed(), 5u);
  EXPECT_EQ(r.n, 2);
  EXPECT_TRUE(r.fill_context) << "no max_tokens: the reply may fill the context";
  EXPECT_FALSE(r.logprobs);
  EXPECT_FALSE(r.generate.echo_prompt());
}

TEST(ChatParseTest, MaxCompletionTokensWinsOverMaxTokens) {
  CompletionRequest r = ParseOk(
      R"({"messages": [{"role": "user", "content": "x"}], "max_tokens": 9,
          "max_completion_tokens": 12})");
  EXPECT_EQ(r.generate.max_new_tokens(), 12);
  EXPECT_FALSE(r.fill_context);
  r = ParseOk(R"({"messages": [{"role": "user", "content": "x"}], "max_tokens": 9})");
  EXPECT_EQ(r.generate.max_new_tokens(), 9);
  EXPECT_FALSE(r.fill_context);
  EXPECT_EQ(ParseError(R"({"messages": [{"role": "user", "content": "x"}],
                           "max_completion_tokens": 0})")
                .code(),
            absl::StatusCode::kInvalidArgument);
  // The error names the field the client sent.
  EXPECT_NE(ParseError(R"({"messages": [{"role": "user", "content": "x"}], "max_tokens": 0})")
                .message()
                .find("'max_tokens'"),
            std::string::npos);
  EXPECT_NE(ParseError(R"({"messages": [{"role": "user", "content": "x"}],
                           "max_completion_tokens": -1})")
                .message()
                .find("'max_completion_tokens'"),
            std::string::npos);
}

TEST(ChatParseTest, AModelsDefaultsFillTheSamplingFieldsNotTheLimit) {
  RequestDefaults defaults;
  defaults.temperature = 0.8f;
  defaults.top_k = 40;
  defaults.max_tokens = 64;  // the server's default_max_tokens, applied by the service
  absl::StatusOr<CompletionRequest> r = ParseChatCompletionRequest(
      R"({"messages": [{"role": "user", "content": "x"}]})", "opt-sotu-cpu", defaults);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->generate.temperature(), 0.8f);
  EXPECT_EQ(r->generate.top_k(), 40);
  EXPECT_TRUE(r->fill_context);
  EXPECT_EQ(r->generate.max_new_tokens(), 0) << "no limit of the request's own";
}

TEST(ChatParseTest, TheTurnStopsLeaveRoomForFourteenOfTheClients) {
  auto body = [](int stops) {
    json j = {{"messages", {{{"role", "user"}, {"content", "x"}}}}, {"stop", json::array()}};
    for (int i = 0; i < stops; ++i) j["stop"].push_back("s" + std::to_string(i));
    return j.dump();
  };
  EXPECT_EQ(ParseOk(body(14)).generate.stop_size(), 16);
  const absl::Status status = ParseError(body(15));
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("at most 14"), std::string::npos) << status;
}

TEST(ChatParseTest, LogprobsIsABooleanAndTopLogprobsNeedsIt) {
  const CompletionRequest r = ParseOk(
      R"({"messages": [{"role": "user", "content": "x"}], "logprobs": true, "top_logprobs": 3})");
  EXPECT_TRUE(r.logprobs);
  EXPECT_TRUE(r.generate.logprobs());
  EXPECT_EQ(r.generate.top_logprobs(), 3);
  EXPECT_NE(ParseError(R"({"messages": [{"role": "user", "content": "x"}], "top_logprobs": 3})")
                .message()
                .find("top_logprobs"),
            std::string::npos);
  EXPECT_EQ(ParseError(R"({"messages": [{"role": "user", "content": "x"}], "logprobs": true,
                           "top_logprobs": 21})")
                .code(),
            absl::StatusCode::kInvalidArgument);
}

#define kTool                                                                          \
  R"({"type": "function", "function": {"name": "f", "parameters": {"type": "object",)" \
  R"( "properties": {"z": {"type": "integer"}, "a": {"type": "string"}}}}})"

TEST(ChatParseTest, RefusesWhatItCannotServeNamingTheField) {
  const struct {
    const char* body;
    const char* names;
    absl::StatusCode code = absl::StatusCode::kInvalidArgument;
  } cases[] = {
      {R"({})", "messages"},
      {R"({"messages": []})", "messages"},
      {R"({"messages": "hi"})", "messages"},
      {R"({"messages": [3]})", "messages[0]"},
      {R"({"messages": [{"content": "x"}]})", "messages[0].role"},
      {R"({"messages": [{"role": "wizard", "content": "x"}]})", "messages[0].role"},
      {R"({"messages": [{"role": "user", "content": "x"}, {"role": "function", "content": "4"}]})",
       "messages[1].role 'function'"},
      {R"({"messages": [{"role": "user"}]})", "messages[0].content"},
      {R"({"messages": [{"role": "user", "content": [{"type": "image_url",
            "image_url": {"url": "x"}}]}]})",
       "messages[0].content"},
      {R"({"messages": [{"role": "assistant", "content": null,
            "tool_calls": [{"id": "1"}]}]})",
       "tool_calls"},
      {R"({"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]})",
       "tools[0]"},
      {R"({"messages": [{"role": "user", "content": "x"}], "tools": [)" kTool R"(]})",
       "tool_choice"},
      {R"({"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function",
           "function": {"name": "bad name!"}}], "tool_choice": "none"})",
       "tools[0].function.name"},
      {R"({"messages": [{"role": "user", "content": "x"}], "tools": [)" kTool R"(],
           "tool_choice": {"type": "bogus", "function": {"name": "f"}}})",
       "tool_choice"},
      {R"({"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function",
           "function": {"name": "f", "parameters": {"type": "string"}}}], "tool_choice": "required"})",
       "tools[0].function.parameters"},
      {R"({"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function",
           "function": {"name": "f", "parameters": {"type": "object", "patternProperties": {}}}}],
           "tool_choice": "required"})",
       "tools[0].function.parameters: json_schema: #: the keyword \"patternProperties\""},
      {R"({"messages": [{"role": "user", "content": "x", "tool_calls": []}]})",
       "messages[0].tool_calls"},
      {R"({"messages": [{"role": "user", "content": "x"}], "tool_choice": "auto"})", "tool_choice"},
      {R"({"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}],
           "tool_choice": {"type": "function", "function": {"name": "f"}}})",
       "tools[0]"},
      {R"({"messages": [{"role": "user", "content": "x"}], "tools": [)" kTool R"(],
           "tool_choice": {"type": "function", "function": {"name": "g"}}})",
       "'g' is not"},
      {R"({"messages": [{"role": "user", "content": "x"}], "tools": [)" kTool "," kTool R"(],
           "tool_choice": "none"})",
       "a name no other tool has"},
      {R"({"messages": [{"role": "user", "content": "x"}], "tools": [)" kTool R"(, {"type":
           "function", "function": {"name": "g"}}], "tool_choice": "required"})",
       "tool_choice"},
      {R"({"messages": [{"role": "user", "content": "x"}], "tools": [)" kTool R"(],
           "tool_choice": "required", "response_format": {"type": "json_object"}})",
       "give one guide"},
      {R"({"messages": [{"role": "user", "content": "x"}], "functions": [{"name": "f"}]})",
       "functions"},
      {R"({"messages": [{"role": "assistant", "content": null, "tool_calls": [{"function":
            {"name": "f", "arguments": {}}}]}]})",
       "messages[0].tool_calls"},
      {R"({"messages": [{"role": "user", "content": "x"}],
           "response_format": {"type": "json_schema", "json_schema": {}}})",
       "response_format.json_schema"},
      {R"({"messages": [{"role": "user", "content": "x"}], "guided_grammar": "a"})",
       "guided_grammar"},
      {R"({"messages": [{"role": "user", "content": "x"}], "temperature": "hot"})", "temperature"},
      {R"({"messages": [{"role": "user", "content": "x"}], "model": "gpt-4o"})", "gpt-4o",
       absl::StatusCode::kNotFound},
      {R"({"messages": [{"role": "user", "content": "x"}], "n": 0})", "'n'"},
  };
  for (const auto& c : cases) {
    const absl::Status status = ParseError(c.body);
    EXPECT_EQ(status.code(), c.code) << c.body << " -> " << status;
    EXPECT_NE(status.message().find(c.names), std::string::npos) << c.body << " -> " << status;
  }
  // What is neutral passes: no tools, tool_choice none, plain text format.
  ParseOk(R"({"messages": [{"role": "user", "content": "x"}], "tools": [], "tool_choice": "none",
              "response_format": {"type": "text"}})");
  // JSON mode is served (guided decoding).
  EXPECT_TRUE(ParseOk(R"({"messages": [{"role": "user", "content": "x"}],
                          "response_format": {"type": "json_object"}})")
                  .generate.guide()
                  .json_object());
}

// A named tool_choice (or "required" with one tool) guides the reply to the function's
// parameters, their order kept; "none" leaves the tools aside.
TEST(ChatToolsTest, ANamedToolChoiceGuidesTheReplyToItsParameters) {
  const std::string parameters =
      R"({"type":"object","properties":{"z":{"type":"integer"},"a":{"type":"string"}}})";
  for (const char* choice :
       {R"({"type": "function", "function": {"name": "f"}})", R"("required")"}) {
    const CompletionRequest r =
        ParseOk(absl::StrCat(R"({"messages": [{"role": "user", "content": "x"}], "tools": [)",
                             kTool, R"(], "tool_choice": )", choice, "}"));
    EXPECT_EQ(r.tool_call_name, "f") << choice;
    EXPECT_EQ(r.generate.guide().json_schema(), parameters) << choice;
  }
  const CompletionRequest none =
      ParseOk(absl::StrCat(R"({"messages": [{"role": "user", "content": "x"}], "tools": [)", kTool,
                           R"(], "tool_choice": "none"})"));
  EXPECT_TRUE(none.tool_call_name.empty());
  EXPECT_FALSE(none.generate.has_guide());
  const CompletionRequest bare = ParseOk(
      R"({"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function",
          "function": {"name": "g"}}], "tool_choice": "required"})");
  EXPECT_EQ(bare.generate.guide().json_schema(), R"({"type": "object", "properties": {}})")
      << "no parameters: an empty object";
  const CompletionRequest untyped = ParseOk(
      R"({"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function",
          "function": {"name": "g", "parameters": {}}}], "tool_choice": "required"})");
  EXPECT_EQ(untyped.generate.guide().json_schema(), R"({"type":"object"})")
      << "a schema without a type: the arguments are still an object";
}

TEST(ChatToolsTest, CallsAndToolResultsJoinTheTranscript) {
  const CompletionRequest r = ParseOk(R"({"messages": [
      {"role": "user", "content": "Weather?"},
      {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function",
        "function": {"name": "weather", "arguments": "{\"city\": \"Oslo\"}"}}]},
      {"role": "tool", "tool_call_id": "c1", "content": "4 C"}]})");
  EXPECT_EQ(r.generate.text(),
            "User: Weather?\n\nAssistant: [call weather({\"city\": \"Oslo\"})]\n\n"
            "Tool: 4 C\n\nAssistant:");
}

std::vector<v1::GenerateResponse> Responses() {
  std::vector<v1::GenerateResponse> out(3);
  out[0].set_token_id(10);
  out[0].set_text(" Hel");
  out[0].set_token_text(" Hel");
  out[0].set_token_bytes(" Hel");
  out[0].set_logprob(-0.5f);
  auto* top = out[0].add_top_logprobs();
  top->set_token_id(10);
  top->set_text(" Hel");
  top->set_bytes(" Hel");
  top->set_logprob(-0.5f);
  out[1].set_token_id(11);  // text held back: the first of the two bytes of "é"
  out[1].set_token_text("\xEF\xBF\xBD");
  out[1].set_token_bytes("\xC3");
  out[1].set_logprob(-1.0f);
  out[2].set_token_id(12);  // the second byte of "é", then "lo!"
  out[2].set_text("\xC3\xA9lo!");
  out[2].set_token_text("\xEF\xBF\xBDlo!");
  out[2].set_token_bytes("\xA9lo!");
  out[2].set_logprob(-0.25f);
  out[2].set_finish_reason(v1::FINISH_REASON_STOP);
  out[2].mutable_usage()->set_prompt_tokens(4);
  out[2].mutable_usage()->set_completion_tokens(3);
  return out;
}

TEST(ChatAnswerTest, CompletionJsonHoldsTheAssistantsMessage) {
  const CompletionRequest request = ParseOk(
      R"({"messages": [{"role": "user", "content": "x"}], "logprobs": true, "top_logprobs": 1,
          "return_token_ids": true})");
  const json j =
      json::parse(ChatCompletionJson(request, {Responses()}, "chatcmpl-1", 1700000000, kModel));
  EXPECT_EQ(j["object"], "chat.completion");
  EXPECT_EQ(j["id"], "chatcmpl-1");
  EXPECT_EQ(j["model"], kModel);
  ASSERT_EQ(j["choices"].size(), 1u);
  const json& c = j["choices"][0];
  EXPECT_EQ(c["index"], 0);
  // The model's space after "Assistant:" is not part of the content.
  EXPECT_EQ(c["message"], json({{"role", "assistant"}, {"content", "Hel\xC3\xA9lo!"}}));
  EXPECT_EQ(c["finish_reason"], "stop");
  EXPECT_EQ(c["token_ids"], json({10, 11, 12}));
  const json& content = c["logprobs"]["content"];
  ASSERT_EQ(content.size(), 3u);
  EXPECT_EQ(content[0]["token"], " Hel");
  EXPECT_EQ(content[0]["logprob"], -0.5);
  EXPECT_EQ(content[0]["bytes"], json({32, 72, 101, 108}));
  EXPECT_EQ(content[0]["top_logprobs"],
            json::array({{{"token", " Hel"}, {"logprob", -0.5}, {"bytes", {32, 72, 101, 108}}}}));
  EXPECT_EQ(content[1]["token"], "\xEF\xBF\xBD") << "the token's own text: U+FFFD";
  EXPECT_EQ(content[1]["bytes"], json({0xC3})) << "its raw byte, to join with the next token's";
  EXPECT_EQ(content[1]["top_logprobs"], json::array());
  EXPECT_EQ(content[2]["token"], "\xEF\xBF\xBDlo!");
  EXPECT_EQ(content[2]["bytes"], json({0xA9, 'l', 'o', '!'}));
  // The tokens' bytes join into the reply, the character they split and its lead included.
  std::string joined;
  for (const json& t : content) {
    for (const int b : t["bytes"].get<std::vector<int>>()) joined.push_back(static_cast<char>(b));
  }
  EXPECT_EQ(joined, " Hel\xC3\xA9lo!");
  EXPECT_EQ(j["usage"]["prompt_tokens"], 4);
  EXPECT_EQ(j["usage"]["completion_tokens"], 3);
  EXPECT_EQ(j["usage"]["total_tokens"], 7);
}

// A token without text or bytes (a model served without a tokenizer): labelled by its id,
// bytes null.
TEST(ChatAnswerTest, ATokenWithoutBytesHasNullBytes) {
  const CompletionRequest request =
      ParseOk(R"({"messages": [{"role": "user", "content": "x"}], "logprobs": true})");
  v1::GenerateResponse r;
  r.set_token_id(7);
  r.set_logprob(-1.0f);
  const json j = json::parse(ChatCompletionJson(request, {{r}}, "c", 1, kModel));
  const json& entry = j["choices"][0]["logprobs"]["content"][0];
  EXPECT_EQ(entry["token"], "token_id:7");
  EXPECT_TRUE(entry["bytes"].is_null());
}

TEST(ChatAnswerTest, NoLogprobsAskedNoneGiven) {
  const CompletionRequest request = ParseOk(R"({"messages": [{"role": "user", "content": "x"}]})");
  const json j = json::parse(ChatCompletionJson(request, {Responses()}, "c", 1, kModel));
  EXPECT_TRUE(j["choices"][0]["logprobs"].is_null());
  EXPECT_FALSE(j["choices"][0].contains("token_ids"));
}

json Event(const std::string& event) {
  EXPECT_TRUE(event.starts_with("data: ") && event.ends_with("\n\n")) << event;
  return json::parse(event.substr(6));
}

// vLLM's chat fields that change the prompt are refused unless they ask for what the fixed
// transcript does (they were ignored).
TEST(ChatParseTest, FieldsThatWouldChangeTheTranscriptAreRefused) {
  const std::string messages = R"("messages": [{"role": "user", "content": "x"}])";
  for (const char* field :
       {R"("continue_final_message": true)", R"("add_generation_prompt": false)",
        R"("chat_template": "{{ messages }}")", R"("chat_template_kwargs": {"a": 1})",
        R"("echo": true)", R"("return_tokens_as_token_ids": true)"}) {
    EXPECT_EQ(ParseError(absl::StrCat("{", messages, ", ", field, "}")).code(),
              absl::StatusCode::kInvalidArgument)
        << field;
  }
  ParseOk(absl::StrCat("{", messages,
                       R"(, "continue_final_message": false, "add_generation_prompt": true,
                          "chat_template": null, "chat_template_kwargs": {}, "echo": false})"));
}

// A named call's reply is the message's tool_calls, its arguments the reply's text (content
// null); streamed, the first delta carries the call's id, type and name.
TEST(ChatToolsTest, ANamedCallIsAnsweredAsToolCalls) {
  const std::string body =
      absl::StrCat(R"({"messages": [{"role": "user", "content": "x"}], "tools": [)", kTool,
                   R"(], "tool_choice": "required")");
  const CompletionRequest request = ParseOk(absl::StrCat(body, "}"));
  const json j =
      json::parse(ChatCompletionJson(request, {Responses()}, "chatcmpl-1", 1700000000, kModel));
  const json& c = j["choices"][0];
  EXPECT_EQ(c["message"],
            json({{"role", "assistant"},
                  {"content", nullptr},
                  {"tool_calls",
                   {{{"id", "call_chatcmpl-1_0"},
                     {"type", "function"},
                     {"function", {{"name", "f"}, {"arguments", "Hel\xC3\xA9lo!"}}}}}}}));
  // "required" ends with "tool_calls" (OpenAI's and vLLM's); a named choice with "stop".
  EXPECT_EQ(c["finish_reason"], "tool_calls");
  const std::string named =
      absl::StrCat(R"({"messages": [{"role": "user", "content": "x"}], "tools": [)", kTool,
                   R"(], "tool_choice": {"type": "function", "function": {"name": "f"}}})");
  EXPECT_EQ(json::parse(ChatCompletionJson(ParseOk(named), {Responses()}, "chatcmpl-1", 1700000000,
                                           kModel))["choices"][0]["finish_reason"],
            "stop");

  const CompletionRequest streamed = ParseOk(absl::StrCat(body, R"(, "stream": true})"));
  const std::vector<v1::GenerateResponse> r = Responses();
  ChatStream stream;
  const json first = Event(ChatChunkEvent(streamed, 0, r[0], stream, "c", 1, kModel));
  EXPECT_EQ(first["choices"][0]["delta"],
            json({{"role", "assistant"},
                  {"content", nullptr},
                  {"tool_calls",
                   {{{"id", "call_c_0"},
                     {"type", "function"},
                     {"function", {{"name", "f"}, {"arguments", "Hel"}}},
                     {"index", 0}}}}}));
  EXPECT_EQ(Event(ChatChunkEvent(streamed, 0, r[1], stream, "c", 1, kModel))["choices"][0]["delta"],
            json::object());
  const json last = Event(ChatChunkEvent(streamed, 0, r[2], stream, "c", 1, kModel));
  EXPECT_EQ(last["choices"][0]["delta"],
            json({{"tool_calls", {{{"function", {{"arguments", "\xC3\xA9lo!"}}}, {"index", 0}}}}}));
  EXPECT_EQ(last["choices"][0]["finish_reason"], "tool_calls");
}

TEST(ChatAnswerTest, StreamedDeltasCarryTheRoleFirstThenPieces) {
  const CompletionRequest request = ParseOk(
      R"({"messages": [{"role": "user", "content": "x"}], "stream": true,
          "stream_options": {"include_usage": true}})");
  const std::vector<v1::GenerateResponse> r = Responses();
  ChatStream stream;
  const json first = Event(ChatChunkEvent(request, 1, r[0], stream, "c", 1, kModel));
  EXPECT_EQ(first["object"], "chat.completion.chunk");
  EXPECT_EQ(first["choices"][0]["index"], 1);
  EXPECT_EQ(first["choices"][0]["delta"], json({{"role", "assistant"}, {"content", "Hel"}}));
  EXPECT_TRUE(first["choices"][0]["finish_reason"].is_null());
  EXPECT_TRUE(first["usage"].is_null());
  const json held = Event(ChatChunkEvent(request, 1, r[1], stream, "c", 1, kModel));
  EXPECT_EQ(held["choices"][0]["delta"], json::object()) << "nothing to add yet";
  const json last = Event(ChatChunkEvent(request, 1, r[2], stream, "c", 1, kModel));
  EXPECT_EQ(last["choices"][0]["delta"], json({{"content", "\xC3\xA9lo!"}}));
  EXPECT_EQ(last["choices"][0]["finish_reason"], "stop");
  const json usage = Event(UsageEvent(request, r[2].usage(), "c", 1, kModel));
  EXPECT_EQ(usage["object"], "chat.completion.chunk");
  EXPECT_TRUE(usage["choices"].empty());
  EXPECT_EQ(usage["usage"]["total_tokens"], 7);
}

TEST(ChatAnswerTest, ContinuousUsageStatsPutTheUsageSoFarInEveryChunk) {
  const CompletionRequest request = ParseOk(
      R"({"messages": [{"role": "user", "content": "x"}], "stream": true,
          "stream_options": {"include_usage": true, "continuous_usage_stats": true}})");
  const std::vector<v1::GenerateResponse> r = Responses();
  ChatStream stream;
  v1::Usage so_far;
  so_far.set_prompt_tokens(4);
  std::vector<int> completion_tokens;
  for (const v1::GenerateResponse& response : r) {
    AddToUsage(response, so_far);
    const json chunk = Event(ChatChunkEvent(request, 0, response, stream, "c", 1, kModel, &so_far));
    EXPECT_EQ(chunk["usage"]["prompt_tokens"], 4);
    completion_tokens.push_back(chunk["usage"]["completion_tokens"]);
  }
  EXPECT_THAT(completion_tokens, ::testing::ElementsAre(1, 2, 3));
}

// Whitespace before the reply's first other character is dropped, however many tokens it
// spans; whitespace after it is content.
TEST(ChatAnswerTest, TheReplyStartsAtItsFirstNonWhitespaceCharacter) {
  const CompletionRequest request =
      ParseOk(R"({"messages": [{"role": "user", "content": "x"}], "stream": true})");
  std::vector<v1::GenerateResponse> r(4);
  const char* pieces[] = {" ", "\n\t ", " Hi", "  there\n"};
  for (int i = 0; i < 4; ++i) {
    r[i].set_token_id(20 + i);
    r[i].set_text(pieces[i]);
  }
  EXPECT_EQ(json::parse(ChatCompletionJson(request, {r}, "c", 1,
                                           kModel))["choices"][0]["message"]["content"],
            "Hi  there\n");
  ChatStream stream;
  std::vector<json> deltas;
  for (const v1::GenerateResponse& response : r) {
    deltas.push_back(
        Event(ChatChunkEvent(request, 0, response, stream, "c", 1, kModel))["choices"][0]["delta"]);
  }
  EXPECT_EQ(deltas[0], json({{"role", "assistant"}, {"content", ""}}));
  EXPECT_EQ(deltas[1], json::object());
  EXPECT_EQ(deltas[2], json({{"content", "Hi"}}));
  EXPECT_EQ(deltas[3], json({{"content", "  there\n"}}));
}

// A reply guided by choices is the guide's output as it stands: not trimmed (a choice " yes"
// stays one of the choices) and without the turn's stops (it ends on its own); one guided by
// a regular expression keeps them (it may run on into the next turn) and is not trimmed.
TEST(ChatAnswerTest, AGuidedReplyIsNeitherTrimmedNorCutAtTheNextTurn) {
  // json_object false sets no guide: the turn stops stay, and a named tool may still guide.
  const CompletionRequest unguided = ParseOk(
      R"({"messages": [{"role": "user", "content": "x"}],
          "structured_outputs": {"json_object": false}})");
  EXPECT_FALSE(unguided.generate.has_guide());
  EXPECT_EQ(unguided.generate.stop_size(), 2);
  EXPECT_TRUE(ParseOk(R"({"messages": [{"role": "user", "content": "x"}],
                          "structured_outputs": {"json_object": false},
                          "tools": [{"type": "function", "function": {"name": "f",
                                     "parameters": {"type": "object"}}}],
                          "tool_choice": {"type": "function", "function": {"name": "f"}}})")
                  .generate.has_guide());
  const CompletionRequest request = ParseOk(
      R"({"messages": [{"role": "user", "content": "x"}], "guided_choice": [" yes", " no"]})");
  ASSERT_TRUE(request.generate.has_guide());
  EXPECT_EQ(request.generate.stop_size(), 0) << "no turn stops";
  const CompletionRequest regex =
      ParseOk(R"({"messages": [{"role": "user", "content": "x"}], "guided_regex": " [a-z ]+"})");
  EXPECT_EQ(regex.generate.stop_size(), 2) << "the turn stops";
  // All 16 stop strings are the client's when no turn stop is added.
  std::string sixteen = "[";
  for (int i = 0; i < 16; ++i) sixteen += absl::StrCat(i > 0 ? ", " : "", "\"s", i, "\"");
  EXPECT_EQ(ParseOk(absl::StrCat(R"({"messages": [{"role": "user", "content": "x"}],
                                    "guided_choice": ["a"], "stop": )",
                                 sixteen, "]}"))
                .generate.stop_size(),
            16);
  std::vector<v1::GenerateResponse> r(2);
  r[0].set_token_id(20);
  r[0].set_text(" y");
  r[1].set_token_id(21);
  r[1].set_text("es");
  EXPECT_EQ(json::parse(ChatCompletionJson(request, {r}, "c", 1,
                                           kModel))["choices"][0]["message"]["content"],
            " yes");
  ChatStream stream;
  EXPECT_EQ(Event(ChatChunkEvent(request, 0, r[0], stream, "c", 1,
                                 kModel))["choices"][0]["delta"]["content"],
            " y");
}

}  // namespace
}  // namespace llmint8::coordinator::openai
