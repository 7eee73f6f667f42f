// End-to-end with text: a synthetic model whose vocabulary matches the tiny BPE tokenizer
// fixture, served by a coordinator + 2 Gloo workers. Checks streamed text, stop sequences,
// Tokenize, seeded sampling and logprobs.
#include <cmath>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "coordinator/tokenizer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "nlohmann/json.hpp"
#include "tests/cli/run_cli.h"
#include "tests/e2e/cluster.h"

namespace llmint8::e2e {
namespace {

using ::testing::ElementsAreArray;

// Its vocabulary is 8 ids larger than the tokenizer's 400, as real checkpoints pad theirs
// (OPT: 50272 rows for 50265 tokens).
constexpr char kModel[] =
    "synthetic:125m,layers=2,hidden=64,heads=4,ffn=256,vocab=408,positions=128,seed=3";
constexpr char kTokenizer[] = "tests/fixtures/tokenizer/tiny-bpe/tokenizer.json";
// A chat reply without a limit stops here, or at the end of the model's 128 positions.
constexpr int kDefaultMaxTokens = 100;

class TextE2ETest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ClusterOptions options;
    options.model = kModel;
    options.dtype = "fp16";
    http_port_ = FreePort();
    options.extra_coordinator_flags = {absl::StrCat("--tokenizer=", SourcePath(kTokenizer)),
                                       absl::StrCat("--http_listen=127.0.0.1:", http_port_),
                                       absl::StrCat("--default_max_tokens=", kDefaultMaxTokens)};
    cluster_ = new Cluster(options);
    ASSERT_TRUE(WaitForHealth(cluster_->address(), 1, 60)) << "never SERVING";
    auto tokenizer = coordinator::Tokenizer::FromTokenizerJsonFile(SourcePath(kTokenizer));
    ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
    tokenizer_ = tokenizer->release();
  }
  static void TearDownTestSuite() {
    delete cluster_;
    delete tokenizer_;
  }
  void SetUp() override {
    ASSERT_NE(tokenizer_, nullptr);
    stub_ = cluster_->NewStub();
  }

  static v1::GenerateRequest TextRequest(const std::string& text, int n) {
    v1::GenerateRequest req;
    req.set_text(text);
    req.set_max_new_tokens(n);
    req.set_ignore_eos(true);
    return req;
  }

  static nlohmann::json PostJson(const std::string& path, const nlohmann::json& body) {
    httplib::Client client("127.0.0.1", http_port_);
    client.set_read_timeout(60, 0);
    const httplib::Result res = client.Post(path, body.dump(), "application/json");
    EXPECT_TRUE(res) << path;
    if (!res) return nullptr;
    nlohmann::json j = nlohmann::json::parse(res->body, nullptr, false);
    j["http_status"] = res->status;
    return j;
  }

  static int http_port_;
  static Cluster* cluster_;
  static coordinator::Tokenizer* tokenizer_;
  std::unique_ptr<v1::Generation::Stub> stub_;
};

int TextE2ETest::http_port_ = 0;
Cluster* TextE2ETest::cluster_ = nullptr;
coordinator::Tokenizer* TextE2ETest::tokenizer_ = nullptr;

TEST_F(TextE2ETest, TokenizeMatchesTheTokenizer) {
  grpc::ClientContext ctx;
  v1::TokenizeRequest req;
  req.set_text("hello world, hello tokens");
  v1::TokenizeResponse resp;
  ASSERT_TRUE(stub_->Tokenize(&ctx, req, &resp).ok());
  auto ids = tokenizer_->Encode(req.text(), /*add_bos=*/false);
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_THAT(resp.token_ids(), ElementsAreArray(*ids));
  EXPECT_EQ(resp.pieces_size(), resp.token_ids_size());

  // A text no prompt could use (over 128 tokens of the longest token) is not encoded.
  const size_t too_long = 128 * tokenizer_->max_token_bytes() + 1;
  grpc::ClientContext long_ctx;
  req.set_text(std::string(too_long, 'a'));
  const grpc::Status refused = stub_->Tokenize(&long_ctx, req, &resp);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::OUT_OF_RANGE);
  EXPECT_THAT(refused.error_message(),
              ::testing::HasSubstr(absl::StrCat("the text to tokenize is ", too_long, " bytes")));
  EXPECT_EQ(PostJson("/tokenize", {{"prompt", req.text()}})["http_status"], 400);
}

// `llmint8 generate`'s --echo_prompt, --logit_bias and --stop_token_ids reach the server: the
// echo prints the prompt's text first (alone with --max_new_tokens=0); a -100 bias on the
// greedy first token turns the output away from it; that token as a stop id ends at once.
TEST_F(TextE2ETest, GenerateCliPassesEchoLogitBiasAndStopTokenIds) {
  const std::string prompt = "hello world";
  const std::string flags = absl::StrCat("generate --coordinator=", cluster_->address(),
                                         " --prompt='", prompt, "' --ignore_eos");
  tools::testing::CliResult echo =
      tools::testing::RunCli(flags + " --echo_prompt --max_new_tokens=0");
  ASSERT_EQ(echo.exit_code, 0) << echo.err;
  EXPECT_EQ(echo.out.substr(0, prompt.size()), prompt);

  Generated greedy = Generate(*stub_, TextRequest(prompt, 3));
  ASSERT_TRUE(greedy.status.ok()) << greedy.status.error_message();
  ASSERT_EQ(greedy.tokens.size(), 3u);
  const int32_t first = greedy.tokens[0];
  // --logprobs prints "[ID: LOGPROB]" for each generated token, the first one first.
  const std::string first_printed = absl::StrCat("[", first, ": ");
  tools::testing::CliResult plain =
      tools::testing::RunCli(flags + " --max_new_tokens=3 --logprobs");
  ASSERT_EQ(plain.exit_code, 0) << plain.err;
  EXPECT_EQ(plain.err.find('['), plain.err.find(first_printed)) << plain.err;
  tools::testing::CliResult biased = tools::testing::RunCli(
      absl::StrCat(flags, " --max_new_tokens=3 --logprobs --logit_bias=", first, ":-100"));
  ASSERT_EQ(biased.exit_code, 0) << biased.err;
  EXPECT_NE(biased.err.find('['), biased.err.find(first_printed)) << biased.err;
  tools::testing::CliResult stopped =
      tools::testing::RunCli(absl::StrCat(flags, " --max_new_tokens=3 --stop_token_ids=", first));
  ASSERT_EQ(stopped.exit_code, 0) << stopped.err;
  EXPECT_THAT(stopped.err, ::testing::HasSubstr("stop"));
  EXPECT_EQ(tools::testing::RunCli(flags + " --logit_bias=5").exit_code, 2);
  EXPECT_EQ(tools::testing::RunCli(flags + " --stop_token_ids=x").exit_code, 2);
}

// `llmint8 generate`'s sampling flags reach the server as the gRPC fields of the same names:
// its seeded output is the text of the same request sent over gRPC. --prompt_logprobs with
// --max_new_tokens=0 prints each prompt token's logprob and their sum, the server's.
TEST_F(TextE2ETest, GenerateCliSamplesAsTheSameGrpcRequest) {
  const std::string prompt = "hello world";
  v1::GenerateRequest req = TextRequest(prompt, 8);
  req.set_temperature(0.9f);
  req.set_top_k(50);
  req.set_top_p(0.95f);
  req.set_min_p(0.05f);
  req.set_seed(1234);
  req.set_repetition_penalty(1.1f);
  req.set_frequency_penalty(0.2f);
  req.set_presence_penalty(0.1f);
  req.set_min_tokens(4);
  req.set_ignore_eos(true);
  const Generated want = Generate(*stub_, req);
  ASSERT_TRUE(want.status.ok()) << want.status.error_message();
  const std::string flags =
      absl::StrCat("generate --coordinator=", cluster_->address(), " --prompt='", prompt, "'");
  const tools::testing::CliResult sampled = tools::testing::RunCli(
      flags +
      " --max_new_tokens=8 --temperature=0.9 --top_k=50 --top_p=0.95 --min_p=0.05 --seed=1234"
      " --repetition_penalty=1.1 --frequency_penalty=0.2 --presence_penalty=0.1 --min_tokens=4"
      " --ignore_eos");
  ASSERT_EQ(sampled.exit_code, 0) << sampled.err;
  EXPECT_EQ(sampled.out.substr(0, want.text.size()), want.text) << sampled.out;

  v1::GenerateRequest score = TextRequest(prompt, 0);
  score.set_prompt_logprobs(true);
  const Generated scored = Generate(*stub_, score);
  ASSERT_TRUE(scored.status.ok()) << scored.status.error_message();
  ASSERT_FALSE(scored.responses.empty());
  double sum = 0;
  int count = 0;
  for (const v1::PromptToken& t : scored.responses[0].prompt_tokens()) {
    if (!t.has_logprob()) continue;
    sum += t.logprob();
    ++count;
  }
  ASSERT_GT(count, 0);
  const tools::testing::CliResult cli =
      tools::testing::RunCli(flags + " --max_new_tokens=0 --prompt_logprobs");
  ASSERT_EQ(cli.exit_code, 0) << cli.err;
  EXPECT_THAT(cli.err, ::testing::HasSubstr(absl::StrFormat(
                           "[prompt logprob sum %.4f over %d tokens]", sum, count)));
  const v1::PromptToken& last = *scored.responses[0].prompt_tokens().rbegin();
  EXPECT_THAT(cli.err, ::testing::HasSubstr(absl::StrCat("[prompt ", last.token_id(), " '")));
}

// vLLM's /tokenize and /detokenize over HTTP: the tokenizer's ids (BOS first unless
// add_special_tokens is false) and its text back; bad input is 400.
TEST_F(TextE2ETest, TokenizeAndDetokenizeOverHttp) {
  const std::string text = "hello world, hello tokens";
  auto plain = tokenizer_->Encode(text, /*add_bos=*/false);
  ASSERT_TRUE(plain.ok()) << plain.status();
  const nlohmann::json bare =
      PostJson("/tokenize", {{"prompt", text}, {"add_special_tokens", false}});
  EXPECT_EQ(bare["http_status"], 200) << bare.dump();
  EXPECT_EQ(bare["tokens"].get<std::vector<int32_t>>(), *plain);
  EXPECT_EQ(bare["count"], plain->size());
  EXPECT_EQ(bare["max_model_len"], 128);
  auto with_bos = tokenizer_->Encode(text, tokenizer_->bos_id().has_value());
  ASSERT_TRUE(with_bos.ok());
  EXPECT_EQ(PostJson("/tokenize", {{"prompt", text}})["tokens"].get<std::vector<int32_t>>(),
            *with_bos);

  const nlohmann::json back = PostJson("/detokenize", {{"tokens", *plain}});
  EXPECT_EQ(back["http_status"], 200) << back.dump();
  EXPECT_EQ(back["prompt"], text);

  EXPECT_EQ(PostJson("/detokenize", {{"tokens", {1, 99999}}})["http_status"], 400);
  // An id the model has but the tokenizer lacks (the vocabulary's padding rows, which the
  // model can sample) decodes to nothing, as in the stream and as Hugging Face's decode.
  const int32_t padding = tokenizer_->vocab_size();
  ASSERT_FALSE(tokenizer_->HasId(padding));
  std::vector<int32_t> padded = *plain;
  padded.insert(padded.begin() + 1, padding);
  const nlohmann::json dropped = PostJson("/detokenize", {{"tokens", padded}});
  EXPECT_EQ(dropped["http_status"], 200) << dropped.dump();
  EXPECT_EQ(dropped["prompt"], text);
  EXPECT_EQ(PostJson("/tokenize", {{"prompt", 5}})["http_status"], 400);
  EXPECT_EQ(PostJson("/tokenize", {{"prompt", "x"}, {"model", "other"}})["http_status"], 404);
}

// echo without logprobs returns the prompt's text unscored (the service only attaches its
// tokens), the same text the scored echo gives; then the completion follows it.
TEST_F(TextE2ETest, EchoWithoutLogprobsReturnsThePromptText) {
  const nlohmann::json only =
      PostJson("/v1/completions", {{"prompt", "hello world"}, {"echo", true}, {"max_tokens", 0}});
  ASSERT_EQ(only["http_status"], 200) << only.dump();
  const std::string echoed = only["choices"][0]["text"];
  EXPECT_TRUE(echoed.ends_with("hello world")) << echoed;
  EXPECT_TRUE(only["choices"][0]["logprobs"].is_null());
  EXPECT_EQ(only["usage"]["completion_tokens"], 0);
  const nlohmann::json scored =
      PostJson("/v1/completions",
               {{"prompt", "hello world"}, {"echo", true}, {"max_tokens", 0}, {"logprobs", 0}});
  ASSERT_EQ(scored["http_status"], 200) << scored.dump();
  EXPECT_EQ(scored["choices"][0]["text"], echoed);
  EXPECT_FALSE(scored["choices"][0]["logprobs"].is_null());
  const nlohmann::json more = PostJson("/v1/completions", {{"prompt", "hello world"},
                                                           {"echo", true},
                                                           {"max_tokens", 4},
                                                           {"temperature", 0},
                                                           {"ignore_eos", true}});
  ASSERT_EQ(more["http_status"], 200) << more.dump();
  Generated g = Generate(*stub_, TextRequest("hello world", 4));
  ASSERT_TRUE(g.status.ok()) << g.status.error_message();
  std::string generated;
  for (const v1::GenerateResponse& r : g.responses) generated += r.text();
  EXPECT_EQ(more["choices"][0]["text"], echoed + generated);
}

// Text prompts over HTTP, a batch with n: each choice's text and tokens are the gRPC request's
// of its prompt (greedy).
TEST_F(TextE2ETest, TextPromptBatchOverHttpEqualsGrpc) {
  const std::vector<std::string> prompts = {"hello world", "tokens of text"};
  const nlohmann::json j = PostJson("/v1/completions", {{"prompt", prompts},
                                                        {"n", 2},
                                                        {"max_tokens", 6},
                                                        {"temperature", 0},
                                                        {"ignore_eos", true},
                                                        {"return_token_ids", true}});
  ASSERT_EQ(j["http_status"], 200) << j.dump();
  ASSERT_EQ(j["choices"].size(), 4u);
  for (size_t i = 0; i < prompts.size(); ++i) {
    Generated g = Generate(*stub_, TextRequest(prompts[i], 6));
    ASSERT_TRUE(g.status.ok()) << g.status.error_message();
    std::string text;
    for (const v1::GenerateResponse& r : g.responses) text += r.text();
    for (size_t k = 0; k < 2; ++k) {
      const nlohmann::json& choice = j["choices"][i * 2 + k];
      EXPECT_EQ(choice["token_ids"].get<std::vector<int32_t>>(), g.tokens) << i << " " << k;
      EXPECT_EQ(choice["text"], text) << i << " " << k;
    }
  }
}

// prompt_logprobs with text: the prompt tokens' pieces join into the prompt, each candidate's
// text is its token decoded alone, and the scores are those of the generated tokens' path
// (the first generated token's logprob equals its top-1 candidate's when greedy).
TEST_F(TextE2ETest, PromptTokensCarryTheirPiecesAndCandidateTexts) {
  v1::GenerateRequest req = TextRequest("hello world, hello tokens", 2);
  req.set_prompt_logprobs(true);
  req.set_logprobs(true);
  req.set_top_logprobs(3);
  Generated got = Generate(*stub_, req);
  ASSERT_TRUE(got.status.ok()) << got.status.error_message();
  ASSERT_FALSE(got.responses.empty());
  const v1::GenerateResponse& first = got.responses.front();
  auto ids = tokenizer_->Encode(req.text(), /*add_bos=*/tokenizer_->bos_id().has_value());
  ASSERT_TRUE(ids.ok()) << ids.status();
  ASSERT_EQ(first.prompt_tokens_size(), static_cast<int>(ids->size()));
  std::string joined;
  for (int k = 0; k < first.prompt_tokens_size(); ++k) {
    const v1::PromptToken& t = first.prompt_tokens(k);
    EXPECT_EQ(t.token_id(), (*ids)[k]);
    joined += t.text();
    EXPECT_EQ(t.token_text(), *tokenizer_->Decode({t.token_id()}));
    EXPECT_EQ(t.has_logprob(), k > 0);
    EXPECT_EQ(t.top_logprobs_size(), k > 0 ? 3 : 0);
    float previous = 0.0f;  // candidates come likeliest first, each a finite logprob
    for (const v1::TopLogprob& c : t.top_logprobs()) {
      EXPECT_EQ(c.text(), *tokenizer_->Decode({c.token_id()})) << "candidate " << c.token_id();
      EXPECT_TRUE(std::isfinite(c.logprob())) << "candidate " << c.token_id();
      EXPECT_LE(c.logprob(), previous) << "candidate " << c.token_id();
      previous = c.logprob();
    }
    // The token's own logprob is at most the likeliest candidate's.
    if (k > 0) {
      EXPECT_LE(t.logprob(), t.top_logprobs(0).logprob());
    }
  }
  EXPECT_EQ(joined, req.text());
  ASSERT_EQ(first.top_logprobs_size(), 3);
  EXPECT_EQ(first.top_logprobs(0).token_id(), first.token_id());
  EXPECT_EQ(first.top_logprobs(0).logprob(), first.logprob());
  EXPECT_EQ(first.top_logprobs(0).text(), *tokenizer_->Decode({first.token_id()}));
  EXPECT_EQ(first.token_text(), first.top_logprobs(0).text());
}

// A truncated text prompt keeps the BOS its encoding starts with and its last k - 1 tokens,
// and generates as those token ids do.
TEST_F(TextE2ETest, ATruncatedTextPromptKeepsItsBos) {
  const std::string text = "hello world, hello tokens, hello world again and again";
  v1::GenerateRequest whole = TextRequest(text, 1);
  whole.set_echo_prompt(true);
  const Generated all = Generate(*stub_, whole);
  ASSERT_TRUE(all.status.ok()) << all.status.error_message();
  ASSERT_FALSE(all.responses.empty());
  std::vector<int32_t> ids;
  for (const v1::PromptToken& t : all.responses.front().prompt_tokens())
    ids.push_back(t.token_id());
  ASSERT_GT(ids.size(), 6u);
  ASSERT_EQ(ids.front(), 2) << "the server's encoding starts with BOS";

  v1::GenerateRequest cut = TextRequest(text, 4);
  cut.set_echo_prompt(true);
  cut.set_truncate_prompt_tokens(5);
  const Generated truncated = Generate(*stub_, cut);
  ASSERT_TRUE(truncated.status.ok()) << truncated.status.error_message();
  ASSERT_FALSE(truncated.responses.empty());
  std::vector<int32_t> kept;
  for (const v1::PromptToken& t : truncated.responses.front().prompt_tokens()) {
    kept.push_back(t.token_id());
  }
  std::vector<int32_t> want = {ids.front()};
  want.insert(want.end(), ids.end() - 4, ids.end());
  EXPECT_THAT(kept, ElementsAreArray(want));

  v1::GenerateRequest as_ids = GreedyRequest(want, 4);
  const Generated same = Generate(*stub_, as_ids);
  ASSERT_TRUE(same.status.ok()) << same.status.error_message();
  EXPECT_THAT(truncated.tokens, ElementsAreArray(same.tokens));
}

TEST_F(TextE2ETest, StreamedTextIsTheDecodedTokens) {
  Generated got = Generate(*stub_, TextRequest("hello world", 24));
  ASSERT_TRUE(got.status.ok()) << got.status.error_message();
  ASSERT_EQ(got.tokens.size(), 24u);
  auto text = tokenizer_->Decode(got.tokens, /*skip_special_tokens=*/true);
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ(got.text, *text);
  EXPECT_EQ(got.responses.back().finish_reason(), v1::FINISH_REASON_LENGTH);
}

TEST_F(TextE2ETest, StopSequenceEndsTheStreamBeforeIt) {
  Generated full = Generate(*stub_, TextRequest("the quick brown fox", 32));
  ASSERT_TRUE(full.status.ok()) << full.status.error_message();
  // A stop string: the last pair of printable ASCII characters in the text.
  size_t at = std::string::npos;
  for (size_t i = full.text.size(); i-- > 1 && at == std::string::npos;) {
    auto ascii = [](char c) { return c > 0x20 && c < 0x7f; };
    if (ascii(full.text[i - 1]) && ascii(full.text[i])) at = i - 1;
  }
  if (at == std::string::npos) GTEST_SKIP() << "no ASCII pair to stop at in: " << full.text;
  const std::string stop = full.text.substr(at, 2);
  v1::GenerateRequest req = TextRequest("the quick brown fox", 32);
  req.add_stop(stop);
  Generated cut = Generate(*stub_, req);
  ASSERT_TRUE(cut.status.ok()) << cut.status.error_message();
  EXPECT_EQ(cut.text, full.text.substr(0, full.text.find(stop))) << "stop '" << stop << "'";
  EXPECT_EQ(cut.responses.back().finish_reason(), v1::FINISH_REASON_STOP);
  EXPECT_LT(cut.tokens.size(), full.tokens.size());
}

// /v1/chat/completions runs the messages' transcript (coordinator/openai_chat.h) as a text
// prompt that stops at the next user turn: the same tokens as Generate on that text, whole
// and streamed (the role in each choice's first delta, the pieces joining into the content,
// which starts at the reply's first non-whitespace character).
TEST_F(TextE2ETest, ChatCompletionIsGenerateOnTheTranscript) {
  const nlohmann::json messages = {{{"role", "system"}, {"content", "Be brief."}},
                                   {{"role", "user"}, {"content", "hello world"}}};
  v1::GenerateRequest grpc_request = TextRequest("Be brief.\n\nUser: hello world\n\nAssistant:", 8);
  grpc_request.add_stop("\n\nUser:");
  grpc_request.add_stop("\nUser:");
  const Generated want = Generate(*stub_, grpc_request);
  ASSERT_TRUE(want.status.ok()) << want.status.error_message();
  ASSERT_FALSE(want.text.empty());
  const std::string reply(absl::StripLeadingAsciiWhitespace(want.text));
  const nlohmann::json body = {{"messages", messages},     {"max_completion_tokens", 8},
                               {"temperature", 0},         {"ignore_eos", true},
                               {"return_token_ids", true}, {"n", 2},
                               {"logprobs", true},         {"top_logprobs", 2}};
  const nlohmann::json j = PostJson("/v1/chat/completions", body);
  ASSERT_EQ(j["http_status"], 200) << j.dump();
  EXPECT_EQ(j["object"], "chat.completion");
  EXPECT_TRUE(j["id"].get<std::string>().starts_with("chatcmpl-")) << j["id"];
  ASSERT_EQ(j["choices"].size(), 2u);
  // The tokens' raw bytes join into the reply's bytes, where a token's own text shows U+FFFD
  // for the part of a character it holds.
  const absl::StatusOr<std::string> raw = tokenizer_->DecodeBytes(want.tokens);
  ASSERT_TRUE(raw.ok()) << raw.status();
  for (const nlohmann::json& choice : j["choices"]) {
    EXPECT_EQ(choice["message"]["role"], "assistant");
    EXPECT_EQ(choice["message"]["content"], reply);
    EXPECT_EQ(choice["token_ids"].get<std::vector<int32_t>>(), want.tokens);
    std::string joined;
    ASSERT_EQ(choice["logprobs"]["content"].size(), want.tokens.size());
    for (const nlohmann::json& t : choice["logprobs"]["content"]) {
      for (const int b : t["bytes"].get<std::vector<int>>()) joined.push_back(static_cast<char>(b));
    }
    EXPECT_EQ(joined, *raw);
    // Each candidate's bytes are its token's own: its text where that is whole characters,
    // else raw bytes where its text shows U+FFFD (this model's candidates include some).
    int split = 0;
    for (const nlohmann::json& t : choice["logprobs"]["content"]) {
      ASSERT_EQ(t["top_logprobs"].size(), 2u);
      for (const nlohmann::json& c : t["top_logprobs"]) {
        std::string bytes;
        for (const int b : c["bytes"].get<std::vector<int>>())
          bytes.push_back(static_cast<char>(b));
        const std::string label = c["token"];
        if (label.find("\xEF\xBF\xBD") == std::string::npos) {
          EXPECT_EQ(bytes, label);
        } else {
          EXPECT_NE(bytes, label) << "raw bytes, not the replacement character";
          ++split;
        }
      }
    }
    EXPECT_GT(split, 0) << "no candidate holds part of a character here";
  }
  EXPECT_EQ(j["usage"]["completion_tokens"], 2 * want.tokens.size());

  nlohmann::json streamed = body;
  streamed["stream"] = true;
  streamed["n"] = 1;
  httplib::Client client("127.0.0.1", http_port_);
  client.set_read_timeout(60, 0);
  const httplib::Result res =
      client.Post("/v1/chat/completions", streamed.dump(), "application/json");
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  std::string content;
  int events = 0;
  std::string finish;
  for (size_t at = 0; (at = res->body.find("data: ", at)) != std::string::npos; at += 6) {
    const std::string data = res->body.substr(at + 6, res->body.find("\n\n", at) - at - 6);
    if (data == "[DONE]") break;
    const nlohmann::json chunk = nlohmann::json::parse(data);
    EXPECT_EQ(chunk["object"], "chat.completion.chunk");
    const nlohmann::json& delta = chunk["choices"][0]["delta"];
    EXPECT_EQ(delta.contains("role"), events == 0) << data;
    content += delta.value("content", "");
    if (!chunk["choices"][0]["finish_reason"].is_null())
      finish = chunk["choices"][0]["finish_reason"];
    ++events;
  }
  EXPECT_EQ(content, reply);
  EXPECT_EQ(finish,
            want.responses.back().finish_reason() == v1::FINISH_REASON_LENGTH ? "length" : "stop");
  EXPECT_TRUE(res->body.ends_with("data: [DONE]\n\n"));
}

// Without max_tokens a chat reply may fill the context, up to --default_max_tokens; tools
// are refused with 400.
TEST_F(TextE2ETest, ChatWithoutMaxTokensFillsTheContextAndRefusesTools) {
  const auto reply = [](const std::string& content, int min_tokens = 0) {
    const nlohmann::json messages = {{{"role", "user"}, {"content", content}}};
    return PostJson("/v1/chat/completions", {{"messages", messages},
                                             {"temperature", 0},
                                             {"ignore_eos", true},
                                             {"min_tokens", min_tokens}});
  };
  // This model never writes "\nUser:" greedily here, so each reply runs to its limit.
  const nlohmann::json capped = reply("hello");
  ASSERT_EQ(capped["http_status"], 200) << capped.dump();
  EXPECT_EQ(capped["choices"][0]["finish_reason"], "length") << capped.dump();
  ASSERT_LT(capped["usage"]["prompt_tokens"].get<int>(), 128 - kDefaultMaxTokens);
  EXPECT_EQ(capped["usage"]["completion_tokens"], kDefaultMaxTokens) << capped["usage"].dump();
  // A prompt that leaves fewer positions than the flag: the reply fills the context.
  std::string longer;
  for (int i = 0; i < 12; ++i) longer += "hello world ";
  const nlohmann::json filled = reply(longer);
  ASSERT_EQ(filled["http_status"], 200) << filled.dump();
  // min_tokens is checked against the reply's limit, not a placeholder, and the context's end
  // still comes first: the same reply with a minimum beyond what the prompt leaves.
  EXPECT_EQ(reply("hello", 50)["usage"]["completion_tokens"], kDefaultMaxTokens);
  const nlohmann::json at_least = reply(longer, kDefaultMaxTokens);
  ASSERT_EQ(at_least["http_status"], 200) << at_least.dump();
  EXPECT_EQ(at_least["choices"][0]["message"]["content"],
            filled["choices"][0]["message"]["content"]);
  EXPECT_EQ(filled["choices"][0]["finish_reason"], "length") << filled.dump();
  ASSERT_GT(filled["usage"]["prompt_tokens"].get<int>(), 128 - kDefaultMaxTokens);
  EXPECT_EQ(filled["usage"]["total_tokens"], 128) << "the whole context: " << filled["usage"];
  const nlohmann::json messages = {{{"role", "user"}, {"content", "hello"}}};
  const nlohmann::json tools = PostJson(
      "/v1/chat/completions", {{"messages", messages}, {"tools", {{{"type", "function"}}}}});
  EXPECT_EQ(tools["http_status"], 400) << tools.dump();
  EXPECT_NE(tools["error"]["message"].get<std::string>().find("tools"), std::string::npos);
  // A limit beyond the context is refused in the name of the field the client sent.
  for (const char* field : {"max_tokens", "max_completion_tokens"}) {
    const nlohmann::json over =
        PostJson("/v1/chat/completions", {{"messages", messages}, {field, 100000}});
    EXPECT_EQ(over["http_status"], 400) << over.dump();
    EXPECT_EQ(over["error"]["message"].get<std::string>().rfind(
                  absl::StrCat(field, " is 100000 but the model's context holds 128"), 0),
              0)
        << over.dump();
  }
}

// The official OpenAI Python SDK (scripts/openai-venv.sh installs it) reads the chat answers:
// the transcript's greedy reply whole (logprobs with two alternatives) and streamed, and the
// BadRequestError a request with tools gets.
TEST_F(TextE2ETest, OfficialOpenAiPythonClientChats) {
  const absl::StatusOr<std::string> python = OpenAiSdkPython();
  if (!python.ok()) GTEST_SKIP() << python.status().message();
  v1::GenerateRequest grpc_request = TextRequest("Be brief.\n\nUser: hello world\n\nAssistant:", 8);
  grpc_request.add_stop("\n\nUser:");
  grpc_request.add_stop("\nUser:");
  grpc_request.set_logprobs(true);
  const Generated want = Generate(*stub_, grpc_request);
  ASSERT_TRUE(want.status.ok()) << want.status.error_message();
  const absl::StatusOr<std::string> output =
      RunAndRead(absl::StrCat(*python, " ", SourcePath("tests/e2e/openai_chat_client.py"), " ",
                              http_port_, " ", kModel, " 8"));
  ASSERT_TRUE(output.ok()) << output.status();
  const nlohmann::json j = nlohmann::json::parse(*output);
  EXPECT_EQ(j["role"], "assistant");
  const std::string reply(absl::StripLeadingAsciiWhitespace(want.text));
  EXPECT_EQ(j["content"], reply);
  EXPECT_EQ(j["stream_content"], reply);
  EXPECT_EQ(j["stream_roles"], nlohmann::json({"assistant"}));
  const std::string finish =
      want.responses.back().finish_reason() == v1::FINISH_REASON_LENGTH ? "length" : "stop";
  EXPECT_EQ(j["finish_reason"], finish);
  EXPECT_EQ(j["stream_finish_reason"], finish);
  EXPECT_EQ(j["usage"], want.tokens.size());
  ASSERT_EQ(j["logprobs"].size(), want.tokens.size());
  for (size_t i = 0; i < want.tokens.size(); ++i) {
    EXPECT_NEAR(j["logprobs"][i].get<double>(), want.responses[i].logprob(), 1e-6) << i;
    ASSERT_EQ(j["top_logprobs"][i].size(), 2u) << i;
    // Greedy: the chosen token is the likeliest.
    EXPECT_NEAR(j["top_logprobs"][i][0].get<double>(), want.responses[i].logprob(), 1e-6) << i;
  }
  EXPECT_EQ(j["error"]["status"], 400);
  EXPECT_NE(j["error"]["message"].get<std::string>().find("tools"), std::string::npos);
}

TEST_F(TextE2ETest, SeededSamplingIsReproducibleAndLogprobsAreReturned) {
  v1::GenerateRequest req = TextRequest("hello", 16);
  req.set_temperature(0.9f);
  req.set_top_k(50);
  req.set_top_p(0.95f);
  req.set_seed(1234);
  req.set_logprobs(true);
  Generated a = Generate(*stub_, req);
  Generated b = Generate(*stub_, req);
  ASSERT_TRUE(a.status.ok()) << a.status.error_message();
  ASSERT_TRUE(b.status.ok()) << b.status.error_message();
  EXPECT_THAT(a.tokens, ElementsAreArray(b.tokens));
  for (const v1::GenerateResponse& r : a.responses) {
    ASSERT_TRUE(r.has_logprob());
    EXPECT_LE(r.logprob(), 0.0f);
  }
  // And it samples: other seeds give other texts (a server decoding greedily would give the
  // same 16 tokens to all of them).
  std::set<std::vector<int32_t>> texts = {a.tokens};
  for (uint64_t seed : {1u, 2u, 3u, 4u}) {
    req.set_seed(seed);
    Generated other = Generate(*stub_, req);
    ASSERT_TRUE(other.status.ok()) << other.status.error_message();
    texts.insert(other.tokens);
  }
  EXPECT_GE(texts.size(), 3u) << "5 seeds, at most 2 different outputs";
}

}  // namespace
}  // namespace llmint8::e2e
