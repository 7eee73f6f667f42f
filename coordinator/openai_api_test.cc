#include "coordinator/openai_api.h"

#include <filesystem>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace llmint8::coordinator::openai {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using json = nlohmann::json;

constexpr char kModel[] = "opt-sotu-cpu";

CompletionRequest ParseOk(const std::string& body) {
  absl::StatusOr<CompletionRequest> r = ParseCompletionRequest(body, kModel);
  EXPECT_TRUE(r.ok()) << body << ": " << r.status();
  return r.ok() ? *r : CompletionRequest();
}

TEST(OpenAiApiTest, DefaultsAreOpenAis) {
  const CompletionRequest r = ParseOk(R"({"prompt": "Hello"})");
  EXPECT_EQ(r.generate.text(), "Hello");
  EXPECT_EQ(r.generate.max_new_tokens(), 16);
  EXPECT_EQ(r.generate.temperature(), 1.0f);
  EXPECT_FALSE(r.generate.has_top_p());
  EXPECT_FALSE(r.generate.has_seed());
  EXPECT_FALSE(r.stream);
  EXPECT_FALSE(r.logprobs);
}

TEST(OpenAiApiTest, AModelsGenerationConfigFillsTheFieldsLeftOut) {
  // models/opt-sotu-cpu/generation_config.json's fields.
  model::GenerationConfig file;
  file.do_sample = true;
  file.temperature = 0.8f;
  file.top_k = 40;
  file.max_new_tokens = 64;
  file.repetition_penalty = 1.1f;
  const RequestDefaults defaults = RequestDefaultsFrom(file);
  absl::StatusOr<CompletionRequest> r =
      ParseCompletionRequest(R"({"prompt": [2, 7]})", kModel, defaults);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->generate.temperature(), 0.8f);
  EXPECT_EQ(r->generate.top_k(), 40);
  EXPECT_FALSE(r->generate.has_top_p());
  EXPECT_EQ(r->generate.min_p(), 0.0f);
  EXPECT_EQ(r->generate.repetition_penalty(), 1.1f);
  // Up to 64: fewer where the prompt leaves less of the context.
  EXPECT_EQ(r->generate.max_new_tokens(), 64);
  EXPECT_TRUE(r->fill_context);

  // What the request sets wins, 0 and -1 included.
  r = ParseCompletionRequest(
      R"({"prompt": [2, 7], "temperature": 0, "top_k": -1, "max_tokens": 3,
          "repetition_penalty": 1})",
      kModel, defaults);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->generate.temperature(), 0.0f);
  EXPECT_EQ(r->generate.top_k(), 0);
  EXPECT_EQ(r->generate.repetition_penalty(), 1.0f);
  EXPECT_EQ(r->generate.max_new_tokens(), 3);
  EXPECT_FALSE(r->fill_context);
}

TEST(OpenAiApiTest, RequestDefaultsFollowTransformersGenerate) {
  EXPECT_EQ(RequestDefaultsFrom({}), RequestDefaults{}) << "a file that sets nothing";
  model::GenerationConfig file;
  file.top_p = 0.9f;
  file.min_p = 0.05f;
  file.top_k = 0;
  RequestDefaults d = RequestDefaultsFrom(file);
  EXPECT_EQ(d.temperature, 1.0f) << "do_sample unset: OpenAI's temperature";
  EXPECT_EQ(d.top_p, 0.9f);
  EXPECT_EQ(d.min_p, 0.05f);
  EXPECT_EQ(d.top_k, 0);
  // do_sample false is greedy search: the sampling fields are not used, a repetition penalty
  // still is.
  file.do_sample = false;
  file.temperature = 0.6f;
  file.repetition_penalty = 1.2f;
  d = RequestDefaultsFrom(file);
  EXPECT_EQ(d.temperature, 0.0f);
  EXPECT_FALSE(d.top_p.has_value() || d.min_p.has_value() || d.top_k.has_value());
  EXPECT_EQ(d.repetition_penalty, 1.2f);
}

TEST(OpenAiApiTest, FieldsMapToTheGenerateRequest) {
  const CompletionRequest r = ParseOk(R"({
      "model": "opt-sotu-cpu", "prompt": [2, 100, 7], "max_tokens": 5, "temperature": 0,
      "top_p": 0.9, "top_k": -1, "seed": 42, "stop": ["\n", "."], "logprobs": 0,
      "stream": true, "stream_options": {"include_usage": true}, "repetition_penalty": 1.2,
      "ignore_eos": true, "return_token_ids": true, "n": 1, "echo": false, "user": "x",
      "presence_penalty": -0.5, "frequency_penalty": 1.5, "logit_bias": {},
      "truncate_prompt_tokens": 100, "priority": -3,
      "unknown_field": [1, 2]})");
  EXPECT_THAT(r.generate.token_ids().ids(), ElementsAre(2, 100, 7));
  EXPECT_EQ(r.generate.max_new_tokens(), 5);
  EXPECT_EQ(r.generate.temperature(), 0.0f);
  EXPECT_FLOAT_EQ(r.generate.top_p(), 0.9f);
  EXPECT_EQ(r.generate.top_k(), 0);
  EXPECT_EQ(r.generate.seed(), 42u);
  EXPECT_THAT(r.generate.stop(), ElementsAre("\n", "."));
  EXPECT_TRUE(r.generate.logprobs());
  EXPECT_EQ(r.generate.top_logprobs(), 0);
  EXPECT_FLOAT_EQ(r.generate.repetition_penalty(), 1.2f);
  EXPECT_FLOAT_EQ(r.generate.presence_penalty(), -0.5f);
  EXPECT_FLOAT_EQ(r.generate.frequency_penalty(), 1.5f);
  EXPECT_EQ(r.generate.truncate_prompt_tokens(), 100);
  EXPECT_EQ(r.generate.priority(), -3);
  EXPECT_TRUE(r.generate.ignore_eos());
  EXPECT_TRUE(r.stream && r.include_usage && r.logprobs && r.return_token_ids);

  // top_p 0 (OpenAI's range is [0, 1]): the nucleus of the likeliest token alone.
  EXPECT_EQ(ParseOk(R"({"prompt": "x", "top_p": 0})").generate.top_p(),
            std::numeric_limits<float>::min());
  EXPECT_EQ(ParseOk(R"({"prompt": ["one prompt"], "stop": "\n"})").generate.text(), "one prompt");
  EXPECT_THAT(ParseOk(R"({"prompt": [[5, 6]]})").generate.token_ids().ids(), ElementsAre(5, 6));
  EXPECT_TRUE(ParseOk(R"({"prompt": "x", "logprobs": true})").logprobs);
  EXPECT_EQ(ParseOk(R"({"prompt": "x", "logprobs": true})").generate.top_logprobs(), 0);
  EXPECT_EQ(ParseOk(R"({"prompt": "x", "logprobs": 5})").generate.top_logprobs(), 5);
  EXPECT_EQ(ParseOk(R"({"prompt": "x", "logprobs": 20})").generate.top_logprobs(), 20);
  EXPECT_FALSE(ParseOk(R"({"prompt": "x", "logprobs": null, "seed": null})").logprobs);
  // Past int64: saturated, so the service's range check reports it (not wrapped negative).
  EXPECT_EQ(
      ParseOk(R"({"prompt": "x", "max_tokens": 9223372036854775808})").generate.max_new_tokens(),
      2147483647);
}

TEST(OpenAiApiTest, BadBodiesAreInvalidArgumentNamingTheField) {
  struct Case {
    std::string body;
    absl::StatusCode code;
    const char* says;
  };
  const Case cases[] = {
      {"not json", absl::StatusCode::kInvalidArgument, "not valid JSON"},
      {"[1, 2]", absl::StatusCode::kInvalidArgument, "JSON object"},
      {R"({"max_tokens": 4})", absl::StatusCode::kInvalidArgument, "'prompt' is required"},
      {R"({"prompt": 7})", absl::StatusCode::kInvalidArgument, "'prompt'"},
      {R"({"prompt": ["a", [2]]})", absl::StatusCode::kInvalidArgument, "'prompt' must be"},
      {R"({"prompt": [[1], "b"]})", absl::StatusCode::kInvalidArgument, "'prompt' must be"},
      {R"({"prompt": [[[1]]]})", absl::StatusCode::kInvalidArgument, "'prompt' must be"},
      {R"({"prompt": [1, "b"]})", absl::StatusCode::kInvalidArgument, "'prompt' must be"},
      {absl::StrCat(R"({"prompt": [)", absl::StrJoin(std::vector<std::string>(1025, "[2]"), ","),
                    "]}"),
       absl::StatusCode::kInvalidArgument, "holds 1025 prompts; send at most 1024"},
      {R"({"prompt": [1, 99999999999]})", absl::StatusCode::kInvalidArgument, "'prompt'"},
      {R"({"prompt": "x", "max_tokens": "5"})", absl::StatusCode::kInvalidArgument,
       "'max_tokens' must be an integer"},
      {R"({"prompt": "x", "temperature": "hot"})", absl::StatusCode::kInvalidArgument,
       "'temperature' must be a number"},
      {R"({"prompt": "x", "stop": [1]})", absl::StatusCode::kInvalidArgument, "'stop'"},
      {R"({"prompt": "x", "use_beam_search": true})", absl::StatusCode::kInvalidArgument,
       "'use_beam_search' must be false here: no beam search"},
      {R"({"prompt": "x", "allowed_token_ids": [5]})", absl::StatusCode::kInvalidArgument,
       "'allowed_token_ids' must be null"},
      {R"({"prompt": "x", "bad_words": ["no"]})", absl::StatusCode::kInvalidArgument,
       "'bad_words' must be []"},
      {R"({"prompt": "x", "include_stop_str_in_output": true})", absl::StatusCode::kInvalidArgument,
       "'include_stop_str_in_output' must be false"},
      {R"({"prompt": "x", "skip_special_tokens": false})", absl::StatusCode::kInvalidArgument,
       "'skip_special_tokens' must be true"},
      {R"({"prompt": "x", "prompt_logprobs": 0})", absl::StatusCode::kInvalidArgument,
       "echo with logprobs"},
      {R"({"prompt": "x", "length_penalty": 0.5})", absl::StatusCode::kInvalidArgument,
       "'length_penalty' must be 1"},
      {R"({"prompt": "x", "stream_options": {"include_usage": true}})",
       absl::StatusCode::kInvalidArgument, "'stream_options' only with \"stream\": true"},
      {R"({"prompt": "x", "stream": false, "stream_options": {"continuous_usage_stats": false}})",
       absl::StatusCode::kInvalidArgument, "'stream_options' only with"},
      {R"({"prompt": "x", "stream": 1})", absl::StatusCode::kInvalidArgument, "'stream'"},
      {R"({"prompt": "x", "top_k": -2})", absl::StatusCode::kInvalidArgument, "'top_k'"},
      {R"({"prompt": "x", "top_k": 18446744073709551615})", absl::StatusCode::kInvalidArgument,
       "'top_k'"},
      {R"({"prompt": "x", "logprobs": -1})", absl::StatusCode::kInvalidArgument, "'logprobs'"},
      {R"({"prompt": "x", "n": 0})", absl::StatusCode::kInvalidArgument,
       "'n' must be an integer in [1, 128]"},
      {R"({"prompt": "x", "n": 129})", absl::StatusCode::kInvalidArgument, "'n'"},
      {R"({"prompt": "x", "n": 2.5})", absl::StatusCode::kInvalidArgument, "'n'"},
      {R"({"prompt": "x", "n": 2, "best_of": 3})", absl::StatusCode::kInvalidArgument,
       "'best_of' must be 1 or n"},
      {R"({"prompt": "x", "echo": 1})", absl::StatusCode::kInvalidArgument, "'echo'"},
      {R"({"prompt": "x", "max_tokens": 0})", absl::StatusCode::kInvalidArgument,
       "'max_tokens' must be at least 1 (0 only with echo"},
      {R"({"prompt": "x", "frequency_penalty": "high"})", absl::StatusCode::kInvalidArgument,
       "'frequency_penalty' must be a number"},
      {R"({"prompt": "x", "presence_penalty": [1]})", absl::StatusCode::kInvalidArgument,
       "'presence_penalty' must be a number"},
      {R"({"prompt": "x", "logprobs": 21})", absl::StatusCode::kInvalidArgument,
       "'logprobs' must be an integer in [0, 20]"},
      {R"({"prompt": "x", "logprobs": 1.5})", absl::StatusCode::kInvalidArgument, "'logprobs'"},
      {R"({"prompt": "x", "logit_bias": {"a": -100}})", absl::StatusCode::kInvalidArgument,
       "'logit_bias'"},
      {R"({"prompt": "x", "logit_bias": {"5": "high"}})", absl::StatusCode::kInvalidArgument,
       "'logit_bias'"},
      {R"({"prompt": "x", "logit_bias": [5]})", absl::StatusCode::kInvalidArgument, "'logit_bias'"},
      {R"({"prompt": "x", "stop_token_ids": 5})", absl::StatusCode::kInvalidArgument,
       "'stop_token_ids'"},
      {R"({"prompt": "x", "stop_token_ids": [-1]})", absl::StatusCode::kInvalidArgument,
       "'stop_token_ids'"},
      {R"({"prompt": "x", "min_tokens": "2"})", absl::StatusCode::kInvalidArgument, "'min_tokens'"},
      {R"({"prompt": "x", "min_p": true})", absl::StatusCode::kInvalidArgument, "'min_p'"},
      {R"({"prompt": "x", "model": "gpt-3.5-turbo-instruct"})", absl::StatusCode::kNotFound,
       "serves 'opt-sotu-cpu'"},
  };
  for (const Case& c : cases) {
    absl::StatusOr<CompletionRequest> r = ParseCompletionRequest(c.body, kModel);
    EXPECT_EQ(r.status().code(), c.code) << c.body << ": " << r.status();
    EXPECT_THAT(r.status().message(), HasSubstr(c.says)) << c.body;
  }
}

// vLLM's and OpenAI's other sampling fields reach the Generate request.
// An object of more keys than any field takes is refused (parsing an ordered object costs a
// scan per key: 500,000 keys would take minutes); logit_bias' 300 still fit.
TEST(OpenAiApiTest, AnObjectOfTooManyKeysIsRefused) {
  json many = {{"prompt", {2}}};
  for (int i = 0; i < 5000; ++i) many[absl::StrCat("k", i)] = 0;
  const absl::Status refused = ParseCompletionRequest(many.dump(), kModel).status();
  EXPECT_EQ(refused.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(refused.message(), HasSubstr("more than 1024 keys"));
  json bias = {{"prompt", {2}}, {"logit_bias", json::object()}};
  for (int i = 0; i < 300; ++i) bias["logit_bias"][absl::StrCat(i)] = 1;
  EXPECT_TRUE(ParseCompletionRequest(bias.dump(), kModel).ok());
}

// A body of many empty objects or strings (each ~60-80 bytes parsed for 3 of text: a 4 MiB
// body would take ~100 MB) is refused before it is parsed; a batch of kMaxPrompts prompts
// fits, as token ids or as text.
TEST(OpenAiApiTest, ABodyOfTooManyObjectsArraysAndStringsIsRefused) {
  for (const char* item : {"{}", "[]", R"("")"}) {
    std::string junk = R"({"prompt": [2], "x": [)";
    for (int i = 0; i < 300000; ++i) absl::StrAppend(&junk, i == 0 ? "" : ",", item);
    junk += "]}";
    const absl::Status refused = ParseCompletionRequest(junk, kModel).status();
    EXPECT_EQ(refused.code(), absl::StatusCode::kInvalidArgument) << item;
    EXPECT_THAT(refused.message(), HasSubstr("more than the 262144 it can need")) << item;
  }
  json ids = {{"prompt", json::array()}};
  json texts = {{"prompt", json::array()}};
  for (int i = 0; i < kMaxPrompts; ++i) {
    ids["prompt"].push_back({2, 3});
    texts["prompt"].push_back("The state of our Union");
  }
  EXPECT_TRUE(ParseCompletionRequest(ids.dump(), kModel).ok());
  EXPECT_TRUE(ParseCompletionRequest(texts.dump(), kModel).ok());
}

// A body nested deeper than any field takes is refused before any of it is copied or written
// out (nlohmann's dump() and copies recurse once per level: a schema a million arrays deep, in
// a 2 MB body, would overflow the handler's stack), wherever it nests; a schema nested as deep
// as json_schema.h allows still fits.
TEST(OpenAiApiTest, ABodyNestedTooDeepIsRefused) {
  const std::string deep = std::string(1'000'000, '[') + std::string(1'000'000, ']');
  for (
      const std::string& body :
      {R"({"prompt": "x", "guided_json": {"a": )" + deep + "}}",
       R"({"prompt": "x", "response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema": {"enum": [)" +
           deep + "]}}}}",
       R"({"prompt": "x", "unknown": )" + deep + "}"}) {
    const absl::Status refused = ParseCompletionRequest(body, kModel).status();
    EXPECT_EQ(refused.code(), absl::StatusCode::kInvalidArgument) << refused;
    EXPECT_THAT(refused.message(), HasSubstr("nested more than 256 deep"));
  }
  // 32 levels of schema, each an object's property: 64 levels of JSON with the body.
  std::string schema = R"({"type": "integer"})";
  for (int i = 0; i < 31; ++i) {
    schema = absl::StrCat(R"({"type": "object", "properties": {"a": )", schema, "}}");
  }
  EXPECT_TRUE(ParseCompletionRequest(
                  absl::StrCat(R"({"prompt": "x", "guided_json": )", schema, "}"), kModel)
                  .ok());
}

// vLLM's fields this server does not serve are taken at their neutral values (as clients that
// send every field do), null included.
TEST(OpenAiApiTest, UnservedFieldsAreTakenAtTheirNeutralValues) {
  ParseOk(R"({"prompt": "x", "use_beam_search": false, "length_penalty": 1.0,
              "allowed_token_ids": null, "bad_words": [], "include_stop_str_in_output": false,
              "skip_special_tokens": true, "spaces_between_special_tokens": true,
              "prompt_logprobs": null, "suffix": null, "stream_options": {}})");
}

// Numbers beyond float's range are read as infinities (not converted out of range), for
// validation to refuse where it must.
TEST(OpenAiApiTest, NumbersBeyondFloatRangeAreInfinities) {
  const CompletionRequest r = ParseOk(
      R"({"prompt": "x", "temperature": 1e39, "top_p": -1e300, "logit_bias": {"5": -1e39}})");
  EXPECT_EQ(r.generate.temperature(), std::numeric_limits<float>::infinity());
  EXPECT_EQ(r.generate.top_p(), -std::numeric_limits<float>::infinity());
  EXPECT_EQ(r.generate.logit_bias().at(5), -std::numeric_limits<float>::infinity());
}

TEST(OpenAiApiTest, LogitBiasStopTokenIdsMinTokensAndMinPAreRead) {
  const CompletionRequest r = ParseOk(
      R"({"prompt": "x", "logit_bias": {"50256": -100, "7": 2.5}, "stop_token_ids": [4, 9],
          "min_tokens": 3, "min_p": 0.1, "max_tokens": 8})");
  EXPECT_EQ(r.generate.logit_bias().size(), 2u);
  EXPECT_EQ(r.generate.logit_bias().at(50256), -100.0f);
  EXPECT_EQ(r.generate.logit_bias().at(7), 2.5f);
  EXPECT_THAT(r.generate.stop_token_ids(), ElementsAre(4, 9));
  EXPECT_EQ(r.generate.min_tokens(), 3);
  EXPECT_FLOAT_EQ(r.generate.min_p(), 0.1f);
  EXPECT_TRUE(ParseOk(R"({"prompt": "x", "logit_bias": {}})").generate.logit_bias().empty());
}

TEST(OpenAiApiTest, TokenizeAndDetokenizeBodies) {
  absl::StatusOr<TokenizeRequest> t =
      ParseTokenizeRequest(R"({"prompt": "hi", "add_special_tokens": false})", kModel);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->text, "hi");
  EXPECT_FALSE(t->add_special_tokens);
  EXPECT_TRUE(ParseTokenizeRequest(R"({"prompt": "hi"})", kModel)->add_special_tokens);
  EXPECT_EQ(ParseTokenizeRequest(R"({"prompt": [1]})", kModel).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseTokenizeRequest(R"({"prompt": "hi", "model": "x"})", kModel).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(json::parse(TokenizeJson({2, 7}, 256)),
            json({{"count", 2}, {"max_model_len", 256}, {"tokens", {2, 7}}}));

  absl::StatusOr<std::vector<int32_t>> ids =
      ParseDetokenizeRequest(R"({"tokens": [2, 7]})", kModel);
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_THAT(*ids, ElementsAre(2, 7));
  for (const char* bad : {R"({"tokens": 7})", R"({"tokens": [-1]})", R"({"tokens": ["a"]})",
                          R"({"tokens": [18446744073709551615]})", "[]"}) {
    EXPECT_EQ(ParseDetokenizeRequest(bad, kModel).status().code(),
              absl::StatusCode::kInvalidArgument)
        << bad;
  }
  EXPECT_EQ(json::parse(DetokenizeJson("a\xff")), json({{"prompt", "a\xef\xbf\xbd"}}));
}

// A batch of prompts and n: every prompt in order, each holding only its prompt; the
// parameters once, in generate (with the first prompt).
TEST(OpenAiApiTest, PromptBatchesAndNAreRead) {
  const CompletionRequest texts =
      ParseOk(R"({"prompt": ["a", "b c", ""], "n": 2, "best_of": 2, "max_tokens": 3})");
  ASSERT_EQ(texts.prompts.size(), 3u);
  EXPECT_EQ(texts.prompts[1].text(), "b c");
  EXPECT_EQ(texts.prompts[2].text(), "");           // the service refuses it, naming prompt 2
  EXPECT_EQ(texts.prompts[1].max_new_tokens(), 0);  // only the prompt
  EXPECT_EQ(texts.n, 2);
  EXPECT_EQ(texts.generate.text(), "a");
  EXPECT_EQ(texts.generate.max_new_tokens(), 3);

  const CompletionRequest ids = ParseOk(R"({"prompt": [[1, 2], [3], []]})");
  ASSERT_EQ(ids.prompts.size(), 3u);
  EXPECT_THAT(ids.prompts[0].token_ids().ids(), ElementsAre(1, 2));
  EXPECT_THAT(ids.prompts[1].token_ids().ids(), ElementsAre(3));
  EXPECT_TRUE(ids.prompts[2].has_token_ids());  // empty: the service's "empty prompt"
  EXPECT_EQ(ids.n, 1);

  // One prompt in any form: one entry.
  for (const char* body : {R"({"prompt": "a"})", R"({"prompt": [7, 8]})", R"({"prompt": ["a"]})",
                           R"({"prompt": [[7]]})", R"({"prompt": []})"}) {
    EXPECT_EQ(ParseOk(body).prompts.size(), 1u) << body;
  }
}

// Unsigned integers past int64 (an invariant of coordinator/fuzz/openai_api_fuzzer.cc): read
// as int64 they wrap, 2^64 - 1 to -1, which passed the int32 check as token id -1.
TEST(OpenAiApiTest, IntegersPastInt64AreNotWrappedIntoRange) {
  for (const char* body :
       {R"({"prompt": [18446744073709551615]})", R"({"prompt": [[5, 18446744073709551614]]})",
        R"({"prompt": [9223372036854775808]})"}) {
    absl::StatusOr<CompletionRequest> r = ParseCompletionRequest(body, kModel);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << body;
    EXPECT_THAT(r.status().message(), HasSubstr("'prompt'")) << body;
  }
  absl::StatusOr<CompletionRequest> huge =
      ParseCompletionRequest(R"({"prompt": "x", "logprobs": 9223372036854775808})", kModel);
  EXPECT_THAT(huge.status().message(), HasSubstr("'logprobs' must be an integer in [0, 20]"));
}

std::vector<v1::GenerateResponse> Responses() {
  std::vector<v1::GenerateResponse> out(3);
  out[0].set_token_id(10);
  out[0].set_text(" Hel");
  out[0].set_logprob(-0.5f);
  out[1].set_token_id(11);  // text held back (e.g. half a UTF-8 character)
  out[1].set_logprob(-1.0f);
  out[2].set_token_id(12);
  out[2].set_text("lo!");
  out[2].set_logprob(-0.25f);
  out[2].set_finish_reason(v1::FINISH_REASON_EOS);
  out[2].mutable_usage()->set_prompt_tokens(4);
  out[2].mutable_usage()->set_completion_tokens(3);
  return out;
}

TEST(OpenAiApiTest, CompletionJsonJoinsTheStream) {
  CompletionRequest request =
      ParseOk(R"({"prompt": "x", "logprobs": 1, "return_token_ids": true})");
  const json j = json::parse(CompletionJson(request, {Responses()}, "cmpl-1", 1700000000, kModel));
  EXPECT_EQ(j["object"], "text_completion");
  EXPECT_EQ(j["id"], "cmpl-1");
  EXPECT_EQ(j["model"], kModel);
  EXPECT_EQ(j["created"], 1700000000);
  ASSERT_EQ(j["choices"].size(), 1u);
  const json& c = j["choices"][0];
  EXPECT_EQ(c["text"], " Hello!");
  EXPECT_EQ(c["finish_reason"], "stop");  // eos, as OpenAI reports it
  EXPECT_EQ(c["token_ids"], json({10, 11, 12}));
  // A token without text (here held back, and no token_text) is labelled by its id.
  EXPECT_EQ(c["logprobs"]["tokens"], json({" Hel", "token_id:11", "lo!"}));
  EXPECT_EQ(c["logprobs"]["token_logprobs"], json({-0.5, -1.0, -0.25}));
  EXPECT_EQ(c["logprobs"]["text_offset"], json({0, 4, 4}));
  EXPECT_EQ(j["usage"], json({{"prompt_tokens", 4},
                              {"completion_tokens", 3},
                              {"total_tokens", 7},
                              {"prompt_tokens_details", {{"cached_tokens", 0}}}}));

  request = ParseOk(R"({"prompt": "x"})");
  const json plain = json::parse(CompletionJson(request, {Responses()}, "cmpl-2", 0, kModel));
  EXPECT_TRUE(plain["choices"][0]["logprobs"].is_null());
  EXPECT_FALSE(plain["choices"][0].contains("token_ids"));
}

// logprobs = N: per position {text: logprob} of the N candidates and the sampled token.
TEST(OpenAiApiTest, TopLogprobsListTheCandidatesAndTheSampledToken) {
  std::vector<v1::GenerateResponse> responses = Responses();
  auto candidate = [](v1::GenerateResponse& r, int32_t id, const char* text, float logprob) {
    v1::TopLogprob* t = r.add_top_logprobs();
    t->set_token_id(id);
    t->set_text(text);
    t->set_logprob(logprob);
  };
  candidate(responses[0], 10, " Hel", -0.5f);  // the sampled token is the likeliest
  candidate(responses[0], 20, " He", -1.5f);
  candidate(responses[1], 30, "\xef\xbf\xbd", -0.75f);  // sampled id 11 not among them
  candidate(responses[1], 31, "x", -0.875f);
  candidate(responses[2], 12, "lo!", -0.25f);
  candidate(responses[2], 40, "lo!", -2.0f);  // the same text: the likelier one stays
  const CompletionRequest request = ParseOk(R"({"prompt": "x", "logprobs": 2})");
  const json j = json::parse(CompletionJson(request, {responses}, "cmpl-3", 0, kModel));
  const json& top = j["choices"][0]["logprobs"]["top_logprobs"];
  ASSERT_EQ(top.size(), 3u) << top;
  EXPECT_EQ(top[0], json({{" Hel", -0.5}, {" He", -1.5}}));
  EXPECT_EQ(top[1], json({{"\xef\xbf\xbd", -0.75}, {"x", -0.875}, {"token_id:11", -1.0}}));
  EXPECT_EQ(top[2], json({{"lo!", -0.25}}));
  // The entries list the likeliest first (not sorted by key), as OpenAI does.
  const nlohmann::ordered_json ordered =
      nlohmann::ordered_json::parse(CompletionJson(request, {responses}, "cmpl-3", 0, kModel));
  std::vector<std::string> keys;
  for (const auto& [key, value] : ordered["choices"][0]["logprobs"]["top_logprobs"][1].items()) {
    keys.push_back(key);
  }
  EXPECT_THAT(keys, ElementsAre("\xef\xbf\xbd", "x", "token_id:11"));
  // With token_text (the token decoded alone), tokens[i] and the sampled token's key are it,
  // so top_logprobs[i][tokens[i]] is the token's logprob; the text stays the streamed one.
  std::vector<v1::GenerateResponse> labelled = responses;
  labelled[1].set_token_text("\xef\xbf\xbd!");
  labelled[2].set_token_text("lo!");
  const json l = json::parse(CompletionJson(request, {labelled}, "cmpl-5", 0, kModel));
  EXPECT_EQ(l["choices"][0]["text"], " Hello!");
  EXPECT_EQ(l["choices"][0]["logprobs"]["tokens"], json({" Hel", "\xef\xbf\xbd!", "lo!"}));
  EXPECT_EQ(l["choices"][0]["logprobs"]["top_logprobs"][1]["\xef\xbf\xbd!"], -1.0);
  // -inf (a masked id) is -9999 as vLLM reports it: JSON has no infinity.
  std::vector<v1::GenerateResponse> masked(1);
  masked[0].set_token_id(3);
  masked[0].set_logprob(-std::numeric_limits<float>::infinity());
  candidate(masked[0], 3, "a", -std::numeric_limits<float>::infinity());
  const json m = json::parse(CompletionJson(request, {masked}, "cmpl-6", 0, kModel));
  EXPECT_EQ(m["choices"][0]["logprobs"]["token_logprobs"], json({-9999.0}));
  EXPECT_EQ(m["choices"][0]["logprobs"]["top_logprobs"][0]["a"], -9999.0);
  // Without text (no tokenizer), keys name the ids.
  std::vector<v1::GenerateResponse> bare(1);
  bare[0].set_token_id(7);
  bare[0].set_logprob(-0.5f);
  candidate(bare[0], 7, "", -0.5f);
  candidate(bare[0], 9, "", -2.5f);
  const json ids = json::parse(CompletionJson(request, {bare}, "cmpl-4", 0, kModel));
  EXPECT_EQ(ids["choices"][0]["logprobs"]["top_logprobs"][0],
            json({{"token_id:7", -0.5}, {"token_id:9", -2.5}}));
  // Streamed: each chunk holds its own position's entry.
  const std::string event = CompletionChunkEvent(request, 0, responses[1], "c", 1, kModel);
  const json chunk = json::parse(event.substr(6));
  EXPECT_EQ(chunk["choices"][0]["logprobs"]["top_logprobs"], json::array({top[1]}));
  // logprobs 0: no candidates, the sampled token alone per position (OpenAI: "up to
  // logprobs + 1 elements"), so that clients can walk it; true (an extension): null.
  const json zero = json::parse(
      CompletionJson(ParseOk(R"({"prompt": "x", "logprobs": 0})"), {responses}, "c", 0, kModel));
  const json& zero_top = zero["choices"][0]["logprobs"]["top_logprobs"];
  ASSERT_TRUE(zero_top.is_array()) << zero_top;
  ASSERT_EQ(zero_top.size(), responses.size());
  for (size_t i = 0; i < responses.size(); ++i) {
    EXPECT_EQ(zero_top[i].size(), 1u) << zero_top[i];
    EXPECT_EQ(zero_top[i].begin().value(), zero["choices"][0]["logprobs"]["token_logprobs"][i]);
  }
  const json plain = json::parse(
      CompletionJson(ParseOk(R"({"prompt": "x", "logprobs": true})"), {responses}, "c", 0, kModel));
  EXPECT_TRUE(plain["choices"][0]["logprobs"]["top_logprobs"].is_null());
}

// echo: the prompt's tokens lead the text and the logprobs (null for the first), as OpenAI
// and lm-evaluation-harness (echo, max_tokens 0, logprobs 1) expect.
TEST(OpenAiApiTest, EchoLeadsWithThePromptsTokens) {
  const CompletionRequest scoring =
      ParseOk(R"({"prompt": "Hi there", "echo": true, "max_tokens": 0, "logprobs": 1})");
  EXPECT_TRUE(scoring.echo);
  EXPECT_TRUE(scoring.generate.prompt_logprobs());
  EXPECT_EQ(scoring.generate.max_new_tokens(), 0);
  EXPECT_TRUE(scoring.generate.echo_prompt());
  EXPECT_FALSE(ParseOk(R"({"prompt": "x"})").generate.prompt_logprobs());
  EXPECT_FALSE(ParseOk(R"({"prompt": "x"})").generate.echo_prompt());
  // Echo without logprobs only returns the prompt's tokens: nothing to score.
  const CompletionRequest echo_only = ParseOk(R"({"prompt": "x", "echo": true, "max_tokens": 0})");
  EXPECT_TRUE(echo_only.generate.echo_prompt());
  EXPECT_FALSE(echo_only.generate.prompt_logprobs());

  v1::GenerateResponse only;  // max_tokens 0: one response, no token
  auto prompt_token = [&](int32_t id, const char* text, std::optional<float> logprob) {
    v1::PromptToken* t = only.add_prompt_tokens();
    t->set_token_id(id);
    t->set_text(text);
    if (logprob) {
      t->set_logprob(*logprob);
      v1::TopLogprob* c = t->add_top_logprobs();
      c->set_token_id(99);
      c->set_text(" best");
      c->set_logprob(-0.125f);
    }
  };
  prompt_token(2, "", std::nullopt);  // BOS: no text, no context
  prompt_token(10, "Hi", -3.5f);
  prompt_token(11, " there", -1.25f);
  only.set_finish_reason(v1::FINISH_REASON_LENGTH);
  only.mutable_usage()->set_prompt_tokens(3);
  const json j = json::parse(CompletionJson(scoring, {{only}}, "c", 0, kModel));
  const json& c = j["choices"][0];
  EXPECT_EQ(c["text"], "Hi there");
  EXPECT_EQ(c["logprobs"]["tokens"], json({"token_id:2", "Hi", " there"}));
  EXPECT_EQ(c["logprobs"]["token_logprobs"], json({nullptr, -3.5, -1.25}));
  EXPECT_EQ(c["logprobs"]["text_offset"], json({0, 0, 2}));
  EXPECT_EQ(
      c["logprobs"]["top_logprobs"],
      json({nullptr, {{" best", -0.125}, {"Hi", -3.5}}, {{" best", -0.125}, {" there", -1.25}}}));
  EXPECT_EQ(c["finish_reason"], "length");
  EXPECT_EQ(j["usage"]["completion_tokens"], 0);

  // Generating after the echo: the prompt first, then the tokens; without logprobs only text.
  std::vector<v1::GenerateResponse> responses = Responses();
  *responses[0].mutable_prompt_tokens() = only.prompt_tokens();
  const json plain = json::parse(CompletionJson(ParseOk(R"({"prompt": "Hi there", "echo": true})"),
                                                {responses}, "c", 0, kModel));
  EXPECT_EQ(plain["choices"][0]["text"], "Hi there Hello!");
  EXPECT_TRUE(plain["choices"][0]["logprobs"].is_null());
  const json with =
      json::parse(CompletionJson(ParseOk(R"({"prompt": "Hi there", "echo": true, "logprobs": 0})"),
                                 {responses}, "c", 0, kModel));
  EXPECT_EQ(with["choices"][0]["logprobs"]["token_logprobs"],
            json({nullptr, -3.5, -1.25, -0.5, -1.0, -0.25}));
  EXPECT_EQ(with["choices"][0]["logprobs"]["text_offset"], json({0, 0, 2, 8, 12, 12}));
}

// Several choices: each with its index, usage summed with each prompt counted once.
TEST(OpenAiApiTest, SeveralChoicesAreIndexedAndUsageCountsEachPromptOnce) {
  const CompletionRequest request = ParseOk(R"({"prompt": ["a", "b"], "n": 2})");
  std::vector<std::vector<v1::GenerateResponse>> choices(4, Responses());
  for (int i = 0; i < 4; ++i) {
    choices[i].back().mutable_usage()->set_prompt_tokens(i < 2 ? 4 : 6);
    choices[i].back().mutable_usage()->set_completion_tokens(3 + i);
    // The second choice of each prompt started from the first's cache (n 2).
    choices[i].back().mutable_usage()->set_cached_prompt_tokens(i % 2 == 1 ? 3 : i);
  }
  const json j = json::parse(CompletionJson(request, choices, "c", 0, kModel));
  ASSERT_EQ(j["choices"].size(), 4u);
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(j["choices"][i]["index"], i);
    EXPECT_EQ(j["choices"][i]["text"], " Hello!");
  }
  // Each prompt once, as its first choice ran it (cached 0 and 2).
  EXPECT_EQ(j["usage"], json({{"prompt_tokens", 10},
                              {"completion_tokens", 18},
                              {"total_tokens", 28},
                              {"prompt_tokens_details", {{"cached_tokens", 2}}}}));

  const json chunk =
      json::parse(CompletionChunkEvent(request, 3, choices[3][0], "c", 1, kModel).substr(6));
  EXPECT_EQ(chunk["choices"][0]["index"], 3);
}

// Streamed, each event's text_offset counts from the start of the choice's text, as the
// joined answer's do ({0, 4, 4} above), not from the event's own text.
TEST(OpenAiApiTest, StreamedTextOffsetsCountFromTheStartOfTheChoice) {
  const CompletionRequest request = ParseOk(R"({"prompt": "x", "stream": true, "logprobs": 0})");
  size_t streamed = 0;
  std::vector<int> offsets;
  for (const v1::GenerateResponse& r : Responses()) {
    const json j =
        json::parse(CompletionChunkEvent(request, 0, r, "c", 1, kModel, &streamed).substr(6));
    for (const json& o : j["choices"][0]["logprobs"]["text_offset"]) offsets.push_back(o);
  }
  EXPECT_THAT(offsets, ::testing::ElementsAre(0, 4, 4));
  EXPECT_EQ(streamed, std::string(" Hello!").size());
}

// text_offset is where each token's text begins in the decoded text (decoded_bytes summed),
// also while the stream holds text back (a possible stop's start): " of", " the", " United"
// released late, a special token the text leaves out, then a stop cuts " States".
TEST(OpenAiApiTest, TextOffsetsCountTokensNotTheTextReleasedSoFar) {
  std::vector<v1::GenerateResponse> out(5);
  const char* own[] = {" of", " the", " United", "</s>", " States"};
  const char* released[] = {" of", "", "", "", " the United"};  // the stop " States" cut
  const uint32_t decoded[] = {3, 4, 7, 0, 7};
  for (int i = 0; i < 5; ++i) {
    out[i].set_token_id(20 + i);
    out[i].set_text(released[i]);
    out[i].set_token_text(own[i]);
    out[i].set_token_bytes(own[i]);
    out[i].set_decoded_bytes(decoded[i]);
    out[i].set_logprob(-1.0f);
  }
  out[4].set_finish_reason(v1::FINISH_REASON_STOP);
  const json whole = json::parse(
      CompletionJson(ParseOk(R"({"prompt": "x", "logprobs": 0})"), {out}, "c", 0, kModel));
  EXPECT_EQ(whole["choices"][0]["text"], " of the United");
  // "</s>" adds nothing; " States" began at 14, where the text now ends.
  EXPECT_EQ(whole["choices"][0]["logprobs"]["text_offset"], json({0, 3, 7, 14, 14}));

  const CompletionRequest streaming = ParseOk(R"({"prompt": "x", "stream": true, "logprobs": 0})");
  size_t start = 0;
  std::vector<int> offsets;
  for (const v1::GenerateResponse& r : out) {
    const json j =
        json::parse(CompletionChunkEvent(streaming, 0, r, "c", 1, kModel, &start).substr(6));
    for (const json& o : j["choices"][0]["logprobs"]["text_offset"]) offsets.push_back(o);
  }
  EXPECT_THAT(offsets, ::testing::ElementsAre(0, 3, 7, 14, 14));
}

TEST(OpenAiApiTest, StreamEventsCarryOnePieceEachAndUsageLast) {
  const CompletionRequest request =
      ParseOk(R"({"prompt": "x", "stream": true, "stream_options": {"include_usage": true}})");
  const std::vector<v1::GenerateResponse> responses = Responses();
  const std::string first = CompletionChunkEvent(request, 0, responses[0], "c", 1, kModel);
  ASSERT_TRUE(first.starts_with("data: ") && first.ends_with("\n\n")) << first;
  const json j = json::parse(first.substr(6));
  EXPECT_EQ(j["choices"][0]["text"], " Hel");
  EXPECT_TRUE(j["choices"][0]["finish_reason"].is_null());
  EXPECT_TRUE(j["usage"].is_null());

  const std::string last = CompletionChunkEvent(request, 0, responses[2], "c", 1, kModel);
  EXPECT_EQ(json::parse(last.substr(6))["choices"][0]["finish_reason"], "stop");
  const std::string usage_event = UsageEvent(request, responses[2].usage(), "c", 1, kModel);
  ASSERT_TRUE(usage_event.starts_with("data: ") && usage_event.ends_with("\n\n")) << usage_event;
  const json usage = json::parse(usage_event.substr(6));
  EXPECT_TRUE(usage["choices"].empty());
  EXPECT_EQ(usage["usage"]["total_tokens"], 7);
}

// vLLM's stream_options.continuous_usage_stats: each chunk carries its choice's usage so far;
// the cached prompt tokens come with the choice's final response.
TEST(OpenAiApiTest, ContinuousUsageStatsPutTheUsageSoFarInEveryChunk) {
  const CompletionRequest request = ParseOk(
      R"({"prompt": "x", "stream": true,
          "stream_options": {"include_usage": true, "continuous_usage_stats": true}})");
  EXPECT_TRUE(request.continuous_usage);
  std::vector<v1::GenerateResponse> responses = Responses();
  responses[2].mutable_usage()->set_cached_prompt_tokens(2);
  v1::Usage so_far;
  so_far.set_prompt_tokens(4);
  std::vector<json> usages;
  for (const v1::GenerateResponse& r : responses) {
    AddToUsage(r, so_far);
    usages.push_back(json::parse(
        CompletionChunkEvent(request, 0, r, "c", 1, kModel, nullptr, &so_far).substr(6))["usage"]);
  }
  EXPECT_EQ(usages[0], json({{"prompt_tokens", 4}, {"completion_tokens", 1}, {"total_tokens", 5}}));
  EXPECT_EQ(usages[1], json({{"prompt_tokens", 4}, {"completion_tokens", 2}, {"total_tokens", 6}}));
  EXPECT_EQ(usages[2], json({{"prompt_tokens", 4},
                             {"completion_tokens", 3},
                             {"total_tokens", 7},
                             {"prompt_tokens_details", {{"cached_tokens", 2}}}}));
  // A finish without a token counts none more.
  v1::GenerateResponse finish;
  finish.mutable_usage()->set_prompt_tokens(4);
  finish.mutable_usage()->set_completion_tokens(3);
  AddToUsage(finish, so_far);
  EXPECT_EQ(so_far.completion_tokens(), 3);

  // As vLLM: only with include_usage; without continuous_usage_stats the chunks' usage is null.
  for (const char* body :
       {R"({"prompt": "x", "stream": true, "stream_options": {"continuous_usage_stats": true}})",
        R"({"prompt": "x", "stream": true,
            "stream_options": {"include_usage": true, "continuous_usage_stats": false}})"}) {
    const CompletionRequest r = ParseOk(body);
    EXPECT_FALSE(r.continuous_usage) << body;
    const json chunk = json::parse(
        CompletionChunkEvent(r, 0, responses[0], "c", 1, kModel, nullptr, &so_far).substr(6));
    EXPECT_EQ(chunk.contains("usage"), r.include_usage) << body;
    if (r.include_usage) {
      EXPECT_TRUE(chunk["usage"].is_null()) << body;
    }
  }
  EXPECT_EQ(ParseCompletionRequest(
                R"({"prompt": "x", "stream_options": {"continuous_usage_stats": 1}})", kModel)
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
}

// Guided decoding in vLLM's forms; the guides this server lacks are refused, never ignored.
TEST(OpenAiApiTest, GuidesAreReadInVllmsForms) {
  EXPECT_TRUE(ParseOk(R"({"prompt": "x", "response_format": {"type": "json_object"}})")
                  .generate.guide()
                  .json_object());
  EXPECT_TRUE(ParseOk(R"({"prompt": "x", "structured_outputs": {"json_object": true}})")
                  .generate.guide()
                  .json_object());
  EXPECT_FALSE(
      ParseOk(R"({"prompt": "x", "response_format": {"type": "text"}})").generate.has_guide());
  // json_object false asks for no guide, and sets none (not an empty one).
  EXPECT_FALSE(ParseOk(R"({"prompt": "x", "structured_outputs": {"json_object": false}})")
                   .generate.has_guide());
  EXPECT_THAT(ParseOk(R"({"prompt": "x", "guided_choice": ["yes", "no"]})")
                  .generate.guide()
                  .choice()
                  .choices(),
              ElementsAre("yes", "no"));
  EXPECT_EQ(ParseOk(R"({"prompt": "x", "guided_regex": "[0-9]+"})").generate.guide().regex(),
            "[0-9]+");
  EXPECT_EQ(ParseOk(R"({"prompt": "x", "structured_outputs": {"regex": "a|b"}})")
                .generate.guide()
                .regex(),
            "a|b");
  EXPECT_THAT(ParseOk(R"({"prompt": "x", "structured_outputs": {"choice": ["a"], "regex": null}})")
                  .generate.guide()
                  .choice()
                  .choices(),
              ElementsAre("a"));
  // A JSON Schema as an object (its property order kept) or a string holding one.
  const std::string schema = R"({"type":"object","properties":{"z":{},"a":{}}})";
  for (const std::string& body :
       {absl::StrCat(R"({"prompt": "x", "guided_json": )", schema, "}"),
        absl::StrCat(R"({"prompt": "x", "guided_json": )", json(schema).dump(), "}"),
        absl::StrCat(R"({"prompt": "x", "structured_outputs": {"json": )", schema, "}}"),
        absl::StrCat(R"({"prompt": "x", "response_format": {"type": "json_schema", )",
                     R"("json_schema": {"name": "t", "strict": true, "schema": )", schema,
                     "}}}")}) {
    EXPECT_EQ(ParseOk(body).generate.guide().json_schema(), schema) << body;
  }
  // What the schema's output does anyway is taken.
  EXPECT_EQ(ParseOk(absl::StrCat(R"({"prompt": "x", "structured_outputs": {"json": )", schema,
                                 R"(, "disable_additional_properties": true,)",
                                 R"( "disable_any_whitespace": false}})"))
                .generate.guide()
                .json_schema(),
            schema);
  struct Case {
    const char* body;
    const char* names;
  };
  const Case refused[] = {
      {R"({"prompt": "x", "guided_json": 7})", "guided_json"},
      {R"({"prompt": "x", "guided_regex": 7})", "guided_regex"},
      {R"({"prompt": "x", "structured_outputs": {"regex": ["a"]}})", "structured_outputs.regex"},
      {R"({"prompt": "x", "guided_grammar": "root ::= x"})", "guided_grammar"},
      {R"({"prompt": "x", "structured_outputs": {"grammar": "x"}})", "structured_outputs.grammar"},
      {R"({"prompt": "x", "structured_outputs": {"json": [1]}})", "structured_outputs.json"},
      {R"({"prompt": "x", "response_format": {"type": "json_schema"}})",
       "response_format.json_schema"},
      {R"({"prompt": "x", "response_format": {"type": "yaml"}})", "response_format"},
      {R"({"prompt": "x", "guided_json": {}, "guided_regex": "a"})", "give one guide"},
      {R"({"prompt": "x", "guided_json": {}, "guided_whitespace_pattern": " *"})",
       "guided_whitespace_pattern"},
      {R"({"prompt": "x", "structured_outputs": {"json": {}, "whitespace_pattern": " "}})",
       "structured_outputs.whitespace_pattern"},
      {R"({"prompt": "x", "structured_outputs": {"json": {}, "disable_any_whitespace": true}})",
       "structured_outputs.disable_any_whitespace"},
      {R"({"prompt": "x", "guided_choice": "yes"})", "guided_choice"},
      {R"({"prompt": "x", "guided_choice": ["yes", 1]})", "guided_choice"},
      {R"({"prompt": "x", "guided_choice": ["a"], "response_format": {"type": "json_object"}})",
       "give one guide"},
  };
  for (const Case& c : refused) {
    const absl::Status s = ParseCompletionRequest(c.body, kModel).status();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.body;
    EXPECT_THAT(s.message(), HasSubstr(c.names)) << c.body;
  }
}

TEST(OpenAiApiTest, ErrorsMapToHttpStatusesAndOpenAiBodies) {
  EXPECT_EQ(HttpStatus(absl::StatusCode::kInvalidArgument), 400);
  EXPECT_EQ(HttpStatus(absl::StatusCode::kOutOfRange), 400);
  EXPECT_EQ(HttpStatus(absl::StatusCode::kFailedPrecondition), 400);
  EXPECT_EQ(HttpStatus(absl::StatusCode::kNotFound), 404);
  EXPECT_EQ(HttpStatus(absl::StatusCode::kResourceExhausted), 429);
  EXPECT_EQ(HttpStatus(absl::StatusCode::kCancelled), 499);
  EXPECT_EQ(HttpStatus(absl::StatusCode::kUnavailable), 503);
  EXPECT_EQ(HttpStatus(absl::StatusCode::kDeadlineExceeded), 504);
  EXPECT_EQ(HttpStatus(absl::StatusCode::kInternal), 500);
  const json e = json::parse(ErrorJson(absl::ResourceExhaustedError("the queue is full")));
  EXPECT_EQ(e["error"]["message"], "the queue is full");
  EXPECT_EQ(e["error"]["type"], "rate_limit_error");
  EXPECT_EQ(e["error"]["code"], "RESOURCE_EXHAUSTED");
  EXPECT_TRUE(e["error"]["param"].is_null());
  // A field's error names the field in param, as OpenAI's do.
  const json bad =
      json::parse(ErrorJson(ParseCompletionRequest(R"({"prompt": "x", "n": 0})", "m").status()));
  EXPECT_EQ(bad["error"]["param"], "n") << bad;
  // The service's validation names the field first: that is the param too.
  for (const auto& [message, param] : std::vector<std::pair<std::string, json>>{
           {"temperature is -1; it must be finite and >= 0", "temperature"},
           {"max_tokens is 300 but the model's context holds 256 tokens", "max_tokens"},
           {"logit_bias has 400 entries; at most 300", "logit_bias"},
           {"the prompt is empty; send a prompt", nullptr},
           {"temperature (as set) is odd", nullptr},
           {"maximum is 3", nullptr}}) {
    EXPECT_EQ(json::parse(ErrorJson(absl::OutOfRangeError(message)))["error"]["param"], param)
        << message;
  }
}

TEST(OpenAiApiTest, ModelIdIsTheDirectoryName) {
  const std::string dir = ::testing::TempDir() + "/opt-test-model";
  std::filesystem::create_directories(dir);
  EXPECT_EQ(ModelId(dir), "opt-test-model");
  EXPECT_EQ(ModelId(dir + "/"), "opt-test-model");
  EXPECT_EQ(ModelId("synthetic:125m,layers=2"), "synthetic:125m,layers=2");
  // A directory name that is not UTF-8 is replaced, never a throw.
  EXPECT_THAT(ModelsJson({"opt-\xff", 1, 1}), HasSubstr("opt-\xef\xbf\xbd"));
  const json models = json::parse(ModelsJson({"opt-test-model", 2048, 5}));
  EXPECT_EQ(models["data"][0]["id"], "opt-test-model");
  EXPECT_EQ(models["data"][0]["max_model_len"], 2048);
}

TEST(OpenAiApiTest, AServedModelNameIsOneWordOfAtMost256Bytes) {
  for (const std::string& name : {std::string("facebook/opt-66b"), std::string("opt"),
                                  std::string("模型"), std::string(256, 'a')}) {
    EXPECT_TRUE(CheckServedModelName(name).ok()) << name;
  }
  for (const std::string& name :
       {std::string(), std::string("opt 66b"), std::string("opt\n"), std::string("a\0b", 3),
        std::string("x\x7f"), std::string("opt\xff"), std::string(257, 'a')}) {
    const absl::Status s = CheckServedModelName(name);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << name;
    EXPECT_THAT(s.message(), HasSubstr("--served_model_name"));
  }
}

}  // namespace
}  // namespace llmint8::coordinator::openai
