// End-to-end guided decoding: a coordinator + 2 Gloo workers serving a synthetic model (random
// weights: free text from it is noise) with the tiny BPE tokenizer. Whatever a request samples,
// a guided_choice output is one of its choices, a guided_regex output a whole match, a
// guided_json output a JSON value valid under its schema, and a json_object output a JSON
// object, or the start of one where max_tokens cut it; over gRPC and the OpenAI API, streamed
// or not.
#include <algorithm>
#include <fstream>
#include <map>
#include <regex>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "coordinator/output_constraint.h"
#include "coordinator/tokenizer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "nlohmann/json.hpp"
#include "tests/cli/run_cli.h"
#include "tests/e2e/cluster.h"
#include "tests/e2e/metrics_scrape.h"

namespace llmint8::e2e {
namespace {

using json = nlohmann::json;
using ::testing::AnyOf;
using ::testing::ElementsAre;
using ::testing::Eq;
using ::testing::HasSubstr;

constexpr char kModel[] =
    "synthetic:125m,layers=2,hidden=64,heads=4,ffn=256,vocab=408,positions=128,seed=3";
constexpr char kTokenizer[] = "tests/fixtures/tokenizer/tiny-bpe/tokenizer.json";

class GuidedE2ETest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ClusterOptions options;
    options.model = kModel;
    options.dtype = "fp16";
    http_port_ = FreePort();
    metrics_port_ = FreePort();
    options.extra_coordinator_flags = {absl::StrCat("--tokenizer=", SourcePath(kTokenizer)),
                                       absl::StrCat("--http_listen=127.0.0.1:", http_port_),
                                       absl::StrCat("--metrics_listen=127.0.0.1:", metrics_port_)};
    cluster_ = new Cluster(options);
    ASSERT_TRUE(WaitForHealth(cluster_->address(), 1, 60)) << "never SERVING";
  }
  static void TearDownTestSuite() { delete cluster_; }
  void SetUp() override { stub_ = cluster_->NewStub(); }

  static httplib::Result Post(const std::string& path, const json& body) {
    httplib::Client client("127.0.0.1", http_port_);
    client.set_read_timeout(60, 0);
    return client.Post(path, body.dump(), "application/json");
  }

  // Whether `text` is a JSON object, or the start of one (checked by the guide's own automaton,
  // which output_constraint_test holds to a JSON parser).
  static bool StartsAJsonObject(const std::string& text) {
    return coordinator::OutputConstraint::JsonObject()->Advance(text);
  }

  // -100 on every whitespace-only token: the guides allow whitespace in the gaps of a JSON text
  // (JSON mode 32 bytes in a row, a schema a line break and 16 more), which random weights
  // would fill, past this model's 128 positions.
  static std::map<int32_t, float> NoWhitespace() {
    auto tokenizer = coordinator::Tokenizer::FromTokenizerJsonFile(SourcePath(kTokenizer));
    EXPECT_TRUE(tokenizer.ok()) << tokenizer.status();
    std::map<int32_t, float> bias;
    const coordinator::TokenVocabulary vocab =
        coordinator::TokenVocabulary::FromTokenizer(**tokenizer);
    for (size_t id = 0; id < vocab.bytes.size(); ++id) {
      const std::string& b = vocab.bytes[id];
      if (!b.empty() && b.find_first_not_of(" \t\n\r") == std::string::npos) {
        bias[static_cast<int32_t>(id)] = -100;
      }
    }
    EXPECT_GE(bias.size(), 4u) << "the tiny BPE has whitespace tokens";
    return bias;
  }

  static int http_port_;
  static int metrics_port_;
  static Cluster* cluster_;
  std::unique_ptr<v1::Generation::Stub> stub_;
};

int GuidedE2ETest::http_port_ = 0;
int GuidedE2ETest::metrics_port_ = 0;
Cluster* GuidedE2ETest::cluster_ = nullptr;

// Sampled hot, the text is still one of the choices: "no" may end at the end-of-sequence token
// or go on to "not sure", the others end as soon as they are whole.
TEST_F(GuidedE2ETest, AGuidedChoiceIsOneOfTheChoicesWhateverIsSampled) {
  const std::vector<std::string> choices = {"yes", "no", "not sure", "hello world"};
  std::vector<std::string> seen;
  for (uint64_t seed = 0; seed < 12; ++seed) {
    v1::GenerateRequest req;
    req.set_text("hello");
    req.set_max_new_tokens(32);
    req.set_temperature(1.5f);
    req.set_seed(seed);
    for (const std::string& c : choices) req.mutable_guide()->mutable_choice()->add_choices(c);
    const Generated out = Generate(*stub_, req);
    ASSERT_TRUE(out.status.ok()) << out.status.error_message();
    EXPECT_THAT(out.text, AnyOf(Eq("yes"), Eq("no"), Eq("not sure"), Eq("hello world")))
        << "seed " << seed;
    const v1::FinishReason finish = out.responses.back().finish_reason();
    EXPECT_TRUE(finish == v1::FINISH_REASON_STOP ||
                (finish == v1::FINISH_REASON_EOS && out.text == "no"))
        << "seed " << seed << ": " << v1::FinishReason_Name(finish);
    seen.push_back(out.text);
  }
  std::sort(seen.begin(), seen.end());
  EXPECT_GE(std::unique(seen.begin(), seen.end()) - seen.begin(), 2)
      << "12 hot samples should not all pick one choice";
}

// guided_regex: hot samples are whole matches (a date here), over gRPC and the OpenAI API.
TEST_F(GuidedE2ETest, AGuidedRegexOutputIsAWholeMatch) {
  const std::string pattern = "(19|20)\\d{2}-(0[1-9]|1[0-2])-\\d{2}( \\(a (date|day)\\))?";
  const std::regex reference(pattern);
  for (uint64_t seed = 0; seed < 8; ++seed) {
    v1::GenerateRequest req;
    req.set_text("hello");
    req.set_max_new_tokens(40);
    req.set_temperature(1.5f);
    req.set_seed(seed);
    req.mutable_guide()->set_regex(pattern);
    const Generated out = Generate(*stub_, req);
    ASSERT_TRUE(out.status.ok()) << out.status.error_message();
    EXPECT_TRUE(std::regex_match(out.text, reference)) << "seed " << seed << ": " << out.text;
    EXPECT_THAT(out.responses.back().finish_reason(),
                AnyOf(Eq(v1::FINISH_REASON_STOP), Eq(v1::FINISH_REASON_EOS)));
  }
  const httplib::Result res =
      Post("/v1/completions",
           {{"prompt", "hello"}, {"max_tokens", 40}, {"seed", 3}, {"guided_regex", pattern}});
  ASSERT_TRUE(res && res->status == 200) << (res ? res->body : "no answer");
  const std::string text = json::parse(res->body)["choices"][0]["text"];
  EXPECT_TRUE(std::regex_match(text, reference)) << text;
}

// Requests that send the same guide share its compiled automaton, DFA and kept masks
// (guide_cache.h): a seeded request gives the same text when its guide is compiled for it and
// when it comes kept, grown by other requests meanwhile; /metrics counts one miss and the hits.
TEST_F(GuidedE2ETest, AKeptGuideGivesWhatAGuideCompiledForTheRequestGave) {
  const std::string pattern = "(?:[a-z]{1,6} ){1,4}(?:yes|no|maybe)[.!]";
  const auto lookups = [](const char* result) {
    return Sample(Scrape(metrics_port_),
                  absl::StrCat("llmint8_guide_cache_lookups_total{result=\"", result, "\"}"));
  };
  const double hits = std::max(0.0, lookups("hit"));
  const double misses = std::max(0.0, lookups("miss"));
  auto generate = [&](uint64_t seed) {
    v1::GenerateRequest req;
    req.set_text("hello");
    req.set_max_new_tokens(60);
    req.set_temperature(1.2f);
    req.set_seed(seed);
    req.mutable_guide()->set_regex(pattern);
    const Generated out = Generate(*stub_, req);
    EXPECT_TRUE(out.status.ok()) << out.status.error_message();
    return out.text;
  };
  const std::string first = generate(11);
  ASSERT_FALSE(first.empty());
  for (uint64_t seed = 0; seed < 5; ++seed) generate(seed);
  EXPECT_EQ(generate(11), first);
  EXPECT_EQ(lookups("hit") - hits, 6);
  EXPECT_EQ(lookups("miss") - misses, 1);
}

// guided_json: hot samples are whole objects valid under the schema, over gRPC, the OpenAI chat
// API's response_format json_schema, and `llmint8 generate --guided_json=@FILE`. An object is
// at most 72 bytes but for whitespace, which only tokens holding more than whitespace bring
// (whitespace-only ones are banned), so max_new_tokens 100 cuts none of these fixed seeds'.
TEST_F(GuidedE2ETest, AGuidedJsonOutputIsValidUnderItsSchema) {
  const std::string schema = R"({"type": "object", "properties": {
      "answer": {"enum": ["yes", "no"]},
      "count": {"type": "integer", "minimum": 0, "maximum": 20},
      "ok": {"type": "boolean"},
      "note": {"type": "string", "maxLength": 4}},
    "required": ["answer", "count"], "additionalProperties": false})";
  auto check = [](const std::string& text) {
    const nlohmann::ordered_json v =
        nlohmann::ordered_json::parse(text, nullptr, /*allow_exceptions=*/false);
    ASSERT_TRUE(v.is_object()) << text;
    std::vector<std::string> keys;
    for (const auto& [key, value] : v.items()) keys.push_back(key);
    EXPECT_THAT(keys, AnyOf(ElementsAre("answer", "count"), ElementsAre("answer", "count", "ok"),
                            ElementsAre("answer", "count", "note"),
                            ElementsAre("answer", "count", "ok", "note")))
        << text;
    EXPECT_THAT(v["answer"], AnyOf(Eq("yes"), Eq("no"))) << text;
    ASSERT_TRUE(v["count"].is_number_integer()) << text;
    EXPECT_GE(v["count"].get<int>(), 0) << text;
    EXPECT_LE(v["count"].get<int>(), 20) << text;
    EXPECT_TRUE(!v.contains("ok") || v["ok"].is_boolean()) << text;
    EXPECT_TRUE(!v.contains("note") || v["note"].is_string()) << text;
  };
  const std::map<int32_t, float> no_whitespace = NoWhitespace();
  for (uint64_t seed = 0; seed < 6; ++seed) {
    v1::GenerateRequest req;
    req.set_text("hello");
    req.set_max_new_tokens(100);
    req.set_temperature(1.5f);
    req.set_seed(seed);
    req.mutable_logit_bias()->insert(no_whitespace.begin(), no_whitespace.end());
    req.mutable_guide()->set_json_schema(schema);
    const Generated out = Generate(*stub_, req);
    ASSERT_TRUE(out.status.ok()) << out.status.error_message();
    check(out.text);
    EXPECT_EQ(out.responses.back().finish_reason(), v1::FINISH_REASON_STOP) << out.text;
  }
  json bias = json::object();
  for (const auto& [id, b] : no_whitespace) bias[std::to_string(id)] = b;
  const httplib::Result res =
      Post("/v1/chat/completions",
           {{"messages", {{{"role", "user"}, {"content", "hello"}}}},
            {"max_tokens", 100},
            {"temperature", 1.5},
            {"seed", 4},
            {"logit_bias", bias},
            {"response_format",
             {{"type", "json_schema"},
              {"json_schema",
               {{"name", "reply"}, {"strict", true}, {"schema", json::parse(schema)}}}}}});
  ASSERT_TRUE(res && res->status == 200) << (res ? res->body : "no answer");
  const json choice = json::parse(res->body)["choices"][0];
  check(choice["message"]["content"]);
  EXPECT_EQ(choice["finish_reason"], "stop");

  const std::string file = absl::StrCat(::testing::TempDir(), "/guided_e2e_schema.json");
  ASSERT_TRUE(std::ofstream(file) << schema);
  std::vector<std::string> bias_flag;
  for (const auto& [id, b] : no_whitespace) bias_flag.push_back(absl::StrCat(id, ":-100"));
  tools::testing::CliResult cli = tools::testing::RunCli(absl::StrCat(
      "generate --coordinator=", cluster_->address(),
      " --prompt=hello --temperature=1.5 --seed=2 --max_new_tokens=100 --guided_json=@", file,
      " --logit_bias=", absl::StrJoin(bias_flag, ",")));
  ASSERT_EQ(cli.exit_code, 0) << cli.err;
  ASSERT_TRUE(cli.out.ends_with("\n")) << cli.out;
  check(cli.out.substr(0, cli.out.size() - 1));
  EXPECT_EQ(tools::testing::RunCli(absl::StrCat("generate --coordinator=", cluster_->address(),
                                                " --prompt=hello --guided_json=@/nonexistent"))
                .exit_code,
            2);
}

// A named tool_choice over the chat API: the call's arguments are valid under the function's
// parameters, answered as tool_calls, streamed or not.
TEST_F(GuidedE2ETest, ANamedToolCallHasArgumentsValidUnderItsParameters) {
  const json tools = json::parse(R"([{"type": "function", "function": {"name": "pick",
      "description": "Pick an answer", "parameters": {"type": "object", "properties": {
        "answer": {"enum": ["yes", "no"]}, "count": {"type": "integer", "minimum": 0,
        "maximum": 9}}, "required": ["answer", "count"], "additionalProperties": false}}}])");
  json bias = json::object();
  for (const auto& [id, b] : NoWhitespace()) bias[std::to_string(id)] = b;
  for (const bool stream : {false, true}) {
    const httplib::Result res =
        Post("/v1/chat/completions", {{"messages", {{{"role", "user"}, {"content", "hello"}}}},
                                      {"max_tokens", 60},
                                      {"temperature", 1.5},
                                      {"seed", 7},
                                      {"stream", stream},
                                      {"logit_bias", bias},
                                      {"tools", tools},
                                      {"tool_choice", "required"}});
    ASSERT_TRUE(res && res->status == 200) << (res ? res->body : "no answer");
    std::string name;
    std::string arguments;
    std::string finish;
    if (!stream) {
      const json choice = json::parse(res->body)["choices"][0];
      EXPECT_TRUE(choice["message"]["content"].is_null());
      const json& call = choice["message"]["tool_calls"][0];
      EXPECT_EQ(call["type"], "function");
      name = call["function"]["name"];
      arguments = call["function"]["arguments"];
      finish = choice["finish_reason"];
    } else {
      for (const absl::string_view line : absl::StrSplit(res->body, '\n')) {
        if (!absl::StartsWith(line, "data: {")) continue;
        const json c = json::parse(std::string(line.substr(6)))["choices"][0];
        if (c["delta"].contains("tool_calls")) {
          const json& f = c["delta"]["tool_calls"][0]["function"];
          if (f.contains("name")) name = f["name"];
          arguments += f["arguments"].get<std::string>();
        }
        if (!c["finish_reason"].is_null()) finish = c["finish_reason"];
      }
    }
    EXPECT_EQ(name, "pick") << stream;
    const json args = json::parse(arguments, nullptr, /*allow_exceptions=*/false);
    ASSERT_TRUE(args.is_object()) << arguments;
    EXPECT_THAT(args["answer"], AnyOf(Eq("yes"), Eq("no"))) << arguments;
    ASSERT_TRUE(args["count"].is_number_integer()) << arguments;
    EXPECT_GE(args["count"].get<int>(), 0) << arguments;
    EXPECT_LE(args["count"].get<int>(), 9) << arguments;
    EXPECT_EQ(finish, "tool_calls") << arguments;  // tool_choice "required", as OpenAI's
  }
}

// JSON mode over the OpenAI API: an object, or its start where max_tokens cut it. A bias on
// the closing brace makes the shortest object, which ends the stream (finish reason stop).
TEST_F(GuidedE2ETest, JsonModeGivesAJsonObjectOrItsStart) {
  int whole = 0;
  for (uint64_t seed = 0; seed < 6; ++seed) {
    const httplib::Result res =
        Post("/v1/completions", {{"prompt", "hello"},
                                 {"max_tokens", 48},
                                 {"temperature", 1.0},
                                 {"seed", seed},
                                 {"response_format", {{"type", "json_object"}}}});
    ASSERT_TRUE(res && res->status == 200) << (res ? res->body : "no answer");
    const json choice = json::parse(res->body)["choices"][0];
    const std::string text = choice["text"];
    EXPECT_TRUE(StartsAJsonObject(text)) << text;
    if (choice["finish_reason"] == "stop") {
      ++whole;
      const json parsed = json::parse(text, nullptr, /*allow_exceptions=*/false);
      EXPECT_TRUE(parsed.is_object()) << text;
    } else {
      EXPECT_EQ(choice["finish_reason"], "length") << text;
    }
  }
  RecordProperty("whole_objects", whole);

  auto tokenizer = coordinator::Tokenizer::FromTokenizerJsonFile(SourcePath(kTokenizer));
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  const int32_t close = (*tokenizer)->Encode("}", /*add_bos=*/false).value().at(0);
  const httplib::Result res =
      Post("/v1/chat/completions", {{"messages", {{{"role", "user"}, {"content", "hello"}}}},
                                    {"max_tokens", 48},
                                    {"stream", true},
                                    {"logit_bias", {{std::to_string(close), 100}}},
                                    {"response_format", {{"type", "json_object"}}}});
  ASSERT_TRUE(res && res->status == 200) << (res ? res->body : "no answer");
  std::string content;
  std::string finish;
  for (const absl::string_view line : absl::StrSplit(res->body, '\n')) {
    if (!absl::StartsWith(line, "data: {")) continue;
    const json chunk = json::parse(std::string(line.substr(6)));
    const json& c = chunk["choices"][0];
    if (c["delta"].contains("content")) content += c["delta"]["content"].get<std::string>();
    if (!c["finish_reason"].is_null()) finish = c["finish_reason"];
  }
  // The reply's leading whitespace is trimmed (openai_chat.h): the object is "{}" after it.
  EXPECT_THAT(content, ::testing::EndsWith("{}"));
  EXPECT_TRUE(json::parse(content).is_object()) << content;
  EXPECT_EQ(finish, "stop");
}

// `llmint8 generate --guided_choice / --json_object` send the guide.
TEST_F(GuidedE2ETest, GenerateCliSendsTheGuide) {
  const std::string flags = absl::StrCat("generate --coordinator=", cluster_->address(),
                                         " --prompt=hello --temperature=1.5 --seed=5");
  tools::testing::CliResult choice =
      tools::testing::RunCli(flags + " --guided_choice='yes,no\\, thanks'");
  ASSERT_EQ(choice.exit_code, 0) << choice.err;
  EXPECT_THAT(choice.out, AnyOf(Eq("yes\n"), Eq("no, thanks\n"))) << choice.err;
  tools::testing::CliResult object = tools::testing::RunCli(flags + " --json_object");
  ASSERT_EQ(object.exit_code, 0) << object.err;
  EXPECT_TRUE(object.out.starts_with("{")) << object.out;
  EXPECT_EQ(tools::testing::RunCli(flags + " --json_object --guided_choice=a").exit_code, 2);
}

// `llmint8 loadtest --guided_regex` sends the guide with every request, which then ends as
// soon as its text is whole (ignore_eos leaves the guide the only end): at most the 5
// bytes of "maybe", so at most 5 tokens a request, never max_new_tokens. A guide the server
// refuses fails every request, and loadtest says so.
TEST_F(GuidedE2ETest, LoadtestSendsTheGuideWithEveryRequest) {
  const std::string flags =
      absl::StrCat("loadtest --coordinator=", cluster_->address(),
                   " --requests=6 --concurrency=3 --prompt_tokens=4 --max_new_tokens=40 --seed=2");
  const tools::testing::CliResult r =
      tools::testing::RunCli(flags + " --guided_regex='yes|no|maybe' --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json j = json::parse(r.out);
  EXPECT_EQ(j["guide"], "guided_regex");
  EXPECT_EQ(j["failed"], 0);
  EXPECT_GE(j["generated_tokens"].get<int>(), 6);
  EXPECT_LE(j["generated_tokens"].get<int>(), 6 * 5);
  const tools::testing::CliResult refused = tools::testing::RunCli(flags + " --guided_regex='(a'");
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_THAT(refused.err, HasSubstr("6 of 6 requests failed"));
  EXPECT_THAT(refused.err, HasSubstr("guided_regex"));
}

TEST_F(GuidedE2ETest, GuidesThisServerLacksAreRefused) {
  struct Case {
    json body;
    const char* says;
  };
  const Case cases[] = {
      {{{"prompt", "hello"}, {"guided_grammar", "root ::= x"}}, "guided_grammar"},
      {{{"prompt", "hello"}, {"guided_regex", "(a)\\1"}}, "backreferences"},
      {{{"prompt", "hello"}, {"guided_choice", {"a", "b"}}, {"min_tokens", 2}}, "min_tokens"},
      {{{"prompt", "hello"}, {"guided_choice", json::array()}}, "guided_choice"},
      {{{"prompt", "hello"}, {"response_format", {{"type", "json_schema"}}}}, "response_format"},
      {{{"prompt", "hello"}, {"guided_json", {{"type", "object"}, {"minProperties", 2}}}},
       "the keyword \\\"minProperties\\\" is not served"},
      {{{"prompt", "hello"}, {"guided_json", {{"type", "string"}, {"pattern", "^[^\\s]+$"}}}},
       "negated class"},
      {{{"prompt", "hello"}, {"guided_json", "{not json"}}, "not a JSON text"},
  };
  for (const Case& c : cases) {
    const httplib::Result res = Post("/v1/completions", c.body);
    ASSERT_TRUE(res) << c.body;
    EXPECT_EQ(res->status, 400) << c.body << " -> " << res->body;
    EXPECT_THAT(res->body, HasSubstr(c.says)) << c.body;
  }
}

}  // namespace
}  // namespace llmint8::e2e
