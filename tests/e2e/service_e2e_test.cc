// End-to-end: a coordinator and 2 workers (Gloo, TP 2) as separate `llmint8` processes on
// loopback, serving tests/golden/tiny-opt in fp32, called through the C++ stub and through
// Python grpcio.
#include <signal.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gmock/gmock.h"
#include "grpcpp/generic/generic_stub.h"
#include "gtest/gtest.h"
#include "llmint8/v1/rendezvous.grpc.pb.h"
#include "nlohmann/json.hpp"
#include "tests/e2e/cluster.h"
#include "tests/e2e/metrics_scrape.h"
#include "tests/e2e/reference.h"

namespace llmint8::e2e {
namespace {

using ::testing::ElementsAreArray;

constexpr char kModelDir[] = "tests/golden/tiny-opt";
constexpr int kContext = 128;  // max_position_embeddings of tiny-opt
constexpr int kVocab = 1000;

struct GoldenCase {
  std::vector<int32_t> prompt;
  std::vector<int32_t> greedy;  // Hugging Face transformers, fp32
};

std::vector<GoldenCase> LoadGoldenCases() {
  std::ifstream in(SourcePath(absl::StrCat(kModelDir, "/expected.json")));
  nlohmann::json j = nlohmann::json::parse(in);
  std::vector<GoldenCase> cases;
  for (const auto& c : j["cases"]) {
    cases.push_back(
        {c["prompt"].get<std::vector<int32_t>>(), c["greedy_tokens"].get<std::vector<int32_t>>()});
  }
  return cases;
}

class ServiceE2ETest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ClusterOptions options;
    options.model = SourcePath(kModelDir);
    options.dtype = "fp32";
    options.workers = 2;
    // These tests check that a finished or cancelled sequence leaves the workers at once: no
    // prefix cache keeps finished ones (PrefixCacheE2ETest covers it).
    metrics_port_ = FreePort();
    options.extra_coordinator_flags = {"--prefix_cache_entries=0",
                                       absl::StrCat("--metrics_listen=127.0.0.1:", metrics_port_)};
    cluster_ = new Cluster(options);
    ASSERT_TRUE(WaitForHealth(cluster_->address(), 1, 60))
        << "the coordinator never reported SERVING";
    auto ref = InProcessReference::Open(SourcePath(kModelDir), model::Precision::kF32);
    ASSERT_TRUE(ref.ok()) << ref.status();
    reference_ = ref->release();
  }
  static void TearDownTestSuite() {
    delete cluster_;
    delete reference_;
  }
  void SetUp() override {
    ASSERT_NE(cluster_, nullptr);
    ASSERT_NE(reference_, nullptr);
    stub_ = cluster_->NewStub();
  }

  static Cluster* cluster_;
  static InProcessReference* reference_;
  static int metrics_port_;
  std::unique_ptr<v1::Generation::Stub> stub_;
};

Cluster* ServiceE2ETest::cluster_ = nullptr;
int ServiceE2ETest::metrics_port_ = 0;
InProcessReference* ServiceE2ETest::reference_ = nullptr;

// The last response's timings, which the server measures on one clock from the request's
// arrival: queued <= first token <= end, and a decode rate once two tokens were made.
void ExpectConsistentTimings(const v1::GenerateResponse& last, int completion_tokens) {
  ASSERT_TRUE(last.has_timings());
  const v1::Timings& t = last.timings();
  EXPECT_GE(t.queue_ms(), 0.0);
  EXPECT_LE(t.queue_ms(), t.time_to_first_token_ms());
  EXPECT_LE(t.time_to_first_token_ms(), t.total_ms());
  EXPECT_LT(t.total_ms(), 60'000.0);
  if (completion_tokens > 1) {
    EXPECT_GT(t.decode_tokens_per_second(), 0.0);
    // (n - 1) tokens over the time after the first: at least as fast as over the whole call.
    EXPECT_GE(t.decode_tokens_per_second(),
              (completion_tokens - 1) / (t.total_ms() / 1000) * 0.999);
  } else {
    EXPECT_EQ(t.decode_tokens_per_second(), 0.0);
  }
}

TEST_F(ServiceE2ETest, GreedyTokensEqualInProcessRuntimeAndTransformers) {
  for (const GoldenCase& c : LoadGoldenCases()) {
    const int n = static_cast<int>(c.greedy.size());
    Generated got = Generate(*stub_, GreedyRequest(c.prompt, n));
    ASSERT_TRUE(got.status.ok()) << got.status.error_message();
    auto ref = reference_->Greedy(c.prompt, n);
    ASSERT_TRUE(ref.ok()) << ref.status();
    EXPECT_THAT(got.tokens, ElementsAreArray(*ref)) << "prompt " << absl::StrJoin(c.prompt, ",");
    EXPECT_THAT(got.tokens, ElementsAreArray(c.greedy));
    ASSERT_FALSE(got.responses.empty());
    const v1::GenerateResponse& last = got.responses.back();
    EXPECT_EQ(last.finish_reason(), v1::FINISH_REASON_LENGTH);
    EXPECT_EQ(last.usage().prompt_tokens(), static_cast<int>(c.prompt.size()));
    EXPECT_EQ(last.usage().completion_tokens(), n);
    ExpectConsistentTimings(last, n);
  }
}

// truncate_prompt_tokens keeps the prompt's end: a prompt longer than the context generates
// what its last tokens alone give, and counts only them.
TEST_F(ServiceE2ETest, ATruncatedPromptGeneratesFromItsLastTokens) {
  std::vector<int32_t> prompt(kContext + 72);
  for (size_t i = 0; i < prompt.size(); ++i) prompt[i] = static_cast<int32_t>(3 + i * 7 % 900);
  const std::vector<int32_t> last(prompt.end() - 10, prompt.end());
  v1::GenerateRequest request = GreedyRequest(prompt, 5);
  EXPECT_EQ(Generate(*stub_, request).status.error_code(), grpc::StatusCode::OUT_OF_RANGE);
  request.set_truncate_prompt_tokens(10);
  const Generated got = Generate(*stub_, request);
  ASSERT_TRUE(got.status.ok()) << got.status.error_message();
  auto ref = reference_->Greedy(last, 5);
  ASSERT_TRUE(ref.ok()) << ref.status();
  EXPECT_THAT(got.tokens, ElementsAreArray(*ref));
  ASSERT_FALSE(got.responses.empty());
  EXPECT_EQ(got.responses.back().usage().prompt_tokens(), 10);
}

// repetition_penalty as Hugging Face applies it (tests/golden/make_penalty_golden.py: HF generate
// with repetition_penalty 1.3 and 0.8, fp32): the same greedy tokens. The smallest penalised
// top-1 margin in the fixture (0.011) is far above the fp32 forward's 1.3e-5 difference.
TEST_F(ServiceE2ETest, RepetitionPenaltyGreedyEqualsTransformers) {
  std::ifstream in(SourcePath(absl::StrCat(kModelDir, "/repetition_penalty.json")));
  ASSERT_TRUE(in) << "missing fixture repetition_penalty.json";
  const nlohmann::json j = nlohmann::json::parse(in);
  int runs = 0;
  for (const auto& run : j["runs"]) {
    const auto prompt = run["prompt"].get<std::vector<int32_t>>();
    const auto want = run["greedy_tokens"].get<std::vector<int32_t>>();
    v1::GenerateRequest req = GreedyRequest(prompt, static_cast<int>(want.size()));
    req.set_repetition_penalty(run["penalty"].get<float>());
    Generated got = Generate(*stub_, req);
    ASSERT_TRUE(got.status.ok()) << got.status.error_message();
    EXPECT_THAT(got.tokens, ElementsAreArray(want))
        << "penalty " << run["penalty"] << ", prompt " << absl::StrJoin(prompt, ",");
    ++runs;
  }
  EXPECT_EQ(runs, 8);
  // The same prompts without the penalty still give the plain greedy tokens: nothing of a
  // penalised sequence stayed behind on the workers.
  const GoldenCase c = LoadGoldenCases().front();
  EXPECT_THAT(Generate(*stub_, GreedyRequest(c.prompt, 8)).tokens,
              ElementsAreArray(std::vector<int32_t>(c.greedy.begin(), c.greedy.begin() + 8)));
}

nlohmann::json LoadOpenAiSamplingFixture() {
  std::ifstream in(SourcePath(absl::StrCat(kModelDir, "/openai_sampling.json")));
  EXPECT_TRUE(in) << "missing fixture openai_sampling.json";
  return in ? nlohmann::json::parse(in) : nlohmann::json();
}

// frequency_penalty / presence_penalty as OpenAI defines them, applied by a transformers
// LogitsProcessor in tests/golden/make_penalty_golden.py (fp32): the same greedy tokens. The
// fixture's smallest processed top-1 margin is far above the fp32 forward's 1.3e-5 error.
TEST_F(ServiceE2ETest, FrequencyAndPresencePenaltiesGreedyEqualTransformers) {
  const nlohmann::json j = LoadOpenAiSamplingFixture();
  int runs = 0;
  for (const auto& run : j["penalty_runs"]) {
    const auto prompt = run["prompt"].get<std::vector<int32_t>>();
    const auto want = run["greedy_tokens"].get<std::vector<int32_t>>();
    ASSERT_GT(*std::min_element(run["margins"].begin(), run["margins"].end()), 1e-3);
    v1::GenerateRequest req = GreedyRequest(prompt, static_cast<int>(want.size()));
    req.set_frequency_penalty(run["frequency_penalty"].get<float>());
    req.set_presence_penalty(run["presence_penalty"].get<float>());
    Generated got = Generate(*stub_, req);
    ASSERT_TRUE(got.status.ok()) << got.status.error_message();
    EXPECT_THAT(got.tokens, ElementsAreArray(want))
        << "frequency " << run["frequency_penalty"] << ", presence " << run["presence_penalty"]
        << ", prompt " << absl::StrJoin(prompt, ",");
    ++runs;
  }
  EXPECT_EQ(runs, 16);
}

// top_logprobs: per position the most likely ids and their logprobs, as torch's log_softmax
// of transformers' logits gives them (fixture: 5 per step, 8 greedy steps per prompt). The
// logprobs match within 1e-4 (the forward's logit error is 1.3e-5, and a logprob moves by at
// most twice that); the ids match exactly where the fixture's 5th-to-6th gap exceeds that.
TEST_F(ServiceE2ETest, TopLogprobsEqualTransformers) {
  const nlohmann::json j = LoadOpenAiSamplingFixture();
  const int top_n = j["top_n"].get<int>();
  int positions = 0;
  for (const auto& run : j["top_logprobs_runs"]) {
    const auto prompt = run["prompt"].get<std::vector<int32_t>>();
    const auto want = run["greedy_tokens"].get<std::vector<int32_t>>();
    v1::GenerateRequest req = GreedyRequest(prompt, static_cast<int>(want.size()));
    req.set_logprobs(true);
    req.set_top_logprobs(top_n);
    Generated got = Generate(*stub_, req);
    ASSERT_TRUE(got.status.ok()) << got.status.error_message();
    ASSERT_THAT(got.tokens, ElementsAreArray(want));
    int step = 0;
    for (const v1::GenerateResponse& r : got.responses) {
      if (!r.has_token_id()) continue;
      const auto& expected = run["top"][step];
      ASSERT_EQ(r.top_logprobs_size(), top_n) << "step " << step;
      ASSERT_GT(expected["gap"].get<double>(), 1e-4);
      for (int k = 0; k < top_n; ++k) {
        EXPECT_EQ(r.top_logprobs(k).token_id(), expected["ids"][k].get<int32_t>())
            << "step " << step << " rank " << k;
        EXPECT_NEAR(r.top_logprobs(k).logprob(), expected["logprobs"][k].get<double>(), 1e-4)
            << "step " << step << " rank " << k;
        EXPECT_TRUE(r.top_logprobs(k).text().empty());  // tiny-opt has no tokenizer
      }
      // Greedy: the sampled token is the likeliest, with the same logprob.
      EXPECT_EQ(r.top_logprobs(0).token_id(), r.token_id());
      EXPECT_EQ(r.top_logprobs(0).logprob(), r.logprob());
      ++step;
      ++positions;
    }
  }
  EXPECT_EQ(positions, 32);
  // Without top_logprobs none are sent.
  const Generated plain = Generate(*stub_, GreedyRequest({2, 5, 6}, 3));
  ASSERT_TRUE(plain.status.ok());
  for (const v1::GenerateResponse& r : plain.responses) EXPECT_EQ(r.top_logprobs_size(), 0);
}

// The prompt tokens of a prompt_logprobs response against the fixture's transformers scores
// (the same 1e-4 bound as for top_logprobs).
void ExpectPromptScores(const v1::GenerateResponse& first, const nlohmann::json& run, int top_n) {
  const auto prompt = run["prompt"].get<std::vector<int32_t>>();
  const nlohmann::json& scores = run["prompt_scores"];
  ASSERT_EQ(first.prompt_tokens_size(), static_cast<int>(prompt.size()));
  for (int k = 0; k < first.prompt_tokens_size(); ++k) {
    const v1::PromptToken& t = first.prompt_tokens(k);
    EXPECT_EQ(t.token_id(), prompt[k]);
    if (k == 0) {
      EXPECT_FALSE(t.has_logprob());
      EXPECT_EQ(t.top_logprobs_size(), 0);
      continue;
    }
    const nlohmann::json& want = scores[k - 1];
    ASSERT_TRUE(t.has_logprob()) << "prompt token " << k;
    EXPECT_NEAR(t.logprob(), want["logprob"].get<double>(), 1e-4) << "prompt token " << k;
    ASSERT_EQ(t.top_logprobs_size(), top_n) << "prompt token " << k;
    ASSERT_GT(want["gap"].get<double>(), 1e-4);
    for (int r = 0; r < top_n; ++r) {
      EXPECT_EQ(t.top_logprobs(r).token_id(), want["ids"][r].get<int32_t>()) << k << "/" << r;
      EXPECT_NEAR(t.top_logprobs(r).logprob(), want["logprobs"][r].get<double>(), 1e-4);
    }
  }
}

// prompt_logprobs: the first response lists the prompt's tokens with their logprobs given the
// tokens before them (transformers' full forward in the fixture); the generation is unchanged.
TEST_F(ServiceE2ETest, PromptLogprobsEqualTransformers) {
  const nlohmann::json j = LoadOpenAiSamplingFixture();
  for (const auto& run : j["top_logprobs_runs"]) {
    const auto prompt = run["prompt"].get<std::vector<int32_t>>();
    const auto want = run["greedy_tokens"].get<std::vector<int32_t>>();
    v1::GenerateRequest req = GreedyRequest(prompt, 4);
    req.set_prompt_logprobs(true);
    req.set_top_logprobs(j["top_n"].get<int>());
    Generated got = Generate(*stub_, req);
    ASSERT_TRUE(got.status.ok()) << got.status.error_message();
    EXPECT_THAT(got.tokens, ElementsAreArray(want.begin(), want.begin() + 4));
    ASSERT_FALSE(got.responses.empty());
    ExpectPromptScores(got.responses.front(), run, j["top_n"].get<int>());
    for (size_t i = 1; i < got.responses.size(); ++i) {
      EXPECT_EQ(got.responses[i].prompt_tokens_size(), 0);  // the first response only
    }
  }
}

TEST_F(ServiceE2ETest, PythonGrpcioClientGetsTheSameTokens) {
  if (std::system("/usr/bin/python3 -c 'import grpc' 2>/dev/null") != 0) {
    GTEST_SKIP() << "python3-grpcio is not installed (apt-get install python3-grpcio)";
  }
  const GoldenCase c = LoadGoldenCases()[1];
  const std::string cmd = absl::StrCat(
      "/usr/bin/python3 ", SourcePath("tests/e2e/python_client.py"),
      " --target=", cluster_->address(), " --proto_dir=", SourcePath("proto"),
      " --token_ids=", absl::StrJoin(c.prompt, ","), " --max_new_tokens=", c.greedy.size());
  absl::StatusOr<std::string> output = RunAndRead(cmd);
  ASSERT_TRUE(output.ok()) << output.status();
  nlohmann::json j = nlohmann::json::parse(*output);
  EXPECT_EQ(j["code"], "OK");
  EXPECT_EQ(j["finish_reason"], "FINISH_REASON_LENGTH");
  EXPECT_THAT(j["tokens"].get<std::vector<int32_t>>(), ElementsAreArray(c.greedy));
}

TEST_F(ServiceE2ETest, ConcurrentClientsEachEqualTheirSoloRun) {
  constexpr int kClients = 32;
  std::vector<std::vector<int32_t>> prompts(kClients);
  std::vector<int> lengths(kClients);
  std::vector<std::vector<int32_t>> solo(kClients);
  for (int i = 0; i < kClients; ++i) {
    const int prompt_len = 1 + (i * 7) % 23;
    prompts[i].push_back(2);
    for (int t = 1; t < prompt_len; ++t) prompts[i].push_back((i * 131 + t * 17) % kVocab);
    lengths[i] = 4 + (i * 5) % 17;
    auto ref = reference_->Greedy(prompts[i], lengths[i]);
    ASSERT_TRUE(ref.ok()) << ref.status();
    solo[i] = *ref;
  }
  // Solo through the service, for a few of them (the rest equal the in-process runtime,
  // which the first test shows the solo service run equals).
  for (int i : {0, 13}) {
    Generated got = Generate(*stub_, GreedyRequest(prompts[i], lengths[i]));
    ASSERT_TRUE(got.status.ok()) << got.status.error_message();
    ASSERT_THAT(got.tokens, ElementsAreArray(solo[i]));
  }
  std::vector<Generated> results(kClients);
  std::vector<std::thread> threads;
  for (int i = 0; i < kClients; ++i) {
    threads.emplace_back([&, i] {
      auto stub = cluster_->NewStub();
      results[i] = Generate(*stub, GreedyRequest(prompts[i], lengths[i]), 120);
    });
  }
  for (std::thread& t : threads) t.join();
  for (int i = 0; i < kClients; ++i) {
    ASSERT_TRUE(results[i].status.ok())
        << "client " << i << ": " << results[i].status.error_message();
    EXPECT_THAT(results[i].tokens, ElementsAreArray(solo[i])) << "client " << i;
  }
  EXPECT_TRUE(cluster_->WaitNoActiveSequences()) << "finished sequences still hold KV cache";
}

// `req` is refused with `code` and a message holding `says` (what to change), and the server
// goes on serving: a valid request after it is answered.
void ExpectCode(v1::Generation::Stub& stub, const v1::GenerateRequest& req, grpc::StatusCode code,
                const std::string& says) {
  Generated got = Generate(stub, req);
  EXPECT_EQ(got.status.error_code(), code) << says << ": " << got.status.error_message();
  EXPECT_THAT(got.status.error_message(), ::testing::HasSubstr(says));
  EXPECT_TRUE(got.tokens.empty()) << says;
  const Generated after = Generate(stub, GreedyRequest({2, 5}, 2));
  EXPECT_TRUE(after.status.ok()) << "after '" << says << "': " << after.status.error_message();
  EXPECT_EQ(after.tokens.size(), 2u);
}

TEST_F(ServiceE2ETest, EmptyPromptIsInvalidArgument) {
  v1::GenerateRequest req;
  req.set_max_new_tokens(4);
  ExpectCode(*stub_, req, grpc::StatusCode::INVALID_ARGUMENT,
             "the prompt is empty; set GenerateRequest.text or");
  req.set_text("");
  ExpectCode(*stub_, req, grpc::StatusCode::INVALID_ARGUMENT, "the prompt is empty");
  req.mutable_token_ids();
  ExpectCode(*stub_, req, grpc::StatusCode::INVALID_ARGUMENT, "the prompt is empty");
}

TEST_F(ServiceE2ETest, PromptLongerThanContextIsOutOfRange) {
  ExpectCode(
      *stub_, GreedyRequest(std::vector<int32_t>(kContext, 5), 1), grpc::StatusCode::OUT_OF_RANGE,
      "the prompt has 128 tokens but the context holds 128 including at least one new token; "
      "shorten it");
}

TEST_F(ServiceE2ETest, MaxNewTokensOutOfBounds) {
  ExpectCode(*stub_, GreedyRequest({2, 5}, 0), grpc::StatusCode::INVALID_ARGUMENT,
             "max_new_tokens is 0; it must be at least 1");
  ExpectCode(*stub_, GreedyRequest({2, 5}, -3), grpc::StatusCode::INVALID_ARGUMENT,
             "max_new_tokens is -3; it must be at least 1");
  ExpectCode(
      *stub_, GreedyRequest({2, 5}, kContext + 1), grpc::StatusCode::OUT_OF_RANGE,
      "max_new_tokens is 129 but the model's context holds 128 tokens including the prompt (2 "
      "tokens here); set max_new_tokens <= 126");
  ExpectCode(*stub_, GreedyRequest(std::vector<int32_t>(100, 5), 29),
             grpc::StatusCode::OUT_OF_RANGE, "set max_new_tokens <= 28");
}

TEST_F(ServiceE2ETest, NegativeTemperatureIsInvalidArgument) {
  v1::GenerateRequest req = GreedyRequest({2, 5}, 4);
  req.set_temperature(-0.5f);
  ExpectCode(*stub_, req, grpc::StatusCode::INVALID_ARGUMENT,
             "temperature is -0.5; it must be finite and >= 0");
}

TEST_F(ServiceE2ETest, TopPOutsideUnitIntervalIsInvalidArgument) {
  for (float top_p : {0.0f, -0.1f, 1.5f}) {
    v1::GenerateRequest req = GreedyRequest({2, 5}, 4);
    req.set_top_p(top_p);
    ExpectCode(*stub_, req, grpc::StatusCode::INVALID_ARGUMENT,
               absl::StrCat("top_p is ", top_p, "; it must be in (0, 1]"));
  }
}

TEST_F(ServiceE2ETest, PenaltiesAndTopLogprobsOutOfRangeAreInvalidArgument) {
  v1::GenerateRequest frequency = GreedyRequest({2, 5}, 4);
  frequency.set_frequency_penalty(2.5f);
  ExpectCode(*stub_, frequency, grpc::StatusCode::INVALID_ARGUMENT,
             "frequency_penalty is 2.5; it must be in [-2, 2]");
  v1::GenerateRequest presence = GreedyRequest({2, 5}, 4);
  presence.set_presence_penalty(-3.0f);
  ExpectCode(*stub_, presence, grpc::StatusCode::INVALID_ARGUMENT,
             "presence_penalty is -3; it must be in [-2, 2]");
  v1::GenerateRequest top = GreedyRequest({2, 5}, 4);
  top.set_top_logprobs(21);
  ExpectCode(*stub_, top, grpc::StatusCode::INVALID_ARGUMENT,
             "top_logprobs is 21; it must be in [0, 20]");
}

TEST_F(ServiceE2ETest, TokenIdOutsideVocabularyIsInvalidArgument) {
  ExpectCode(*stub_, GreedyRequest({2, kVocab}, 4), grpc::StatusCode::INVALID_ARGUMENT,
             "prompt token 1 is 1000; token ids must be in [0, 1000)");
  ExpectCode(*stub_, GreedyRequest({-1}, 4), grpc::StatusCode::INVALID_ARGUMENT,
             "prompt token 0 is -1; token ids must be in [0, 1000)");
}

TEST_F(ServiceE2ETest, MessageOverSizeLimitIsResourceExhausted) {
  v1::GenerateRequest req;
  req.set_text(std::string(5 << 20, 'a'));  // the coordinator accepts 4 MiB
  req.set_max_new_tokens(1);
  ExpectCode(*stub_, req, grpc::StatusCode::RESOURCE_EXHAUSTED,
             "Received message larger than max (5242887 vs. 4194304)");
}

TEST_F(ServiceE2ETest, TextPromptWithoutTokenizerIsFailedPrecondition) {
  v1::GenerateRequest req;
  req.set_text("Hello");
  req.set_max_new_tokens(1);
  ExpectCode(*stub_, req, grpc::StatusCode::FAILED_PRECONDITION,
             "served without a tokenizer (no vocab.json/merges.txt); send the prompt as token_ids");
}

// Raw request bytes to `method`, as a client of another language (or a broken one) may send
// them: the call's status.
grpc::Status CallWithBytes(const std::string& address, const std::string& method,
                           const std::string& bytes) {
  grpc::GenericStub stub(grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  grpc::CompletionQueue cq;
  grpc::Slice slice(bytes);
  const grpc::ByteBuffer request(&slice, 1);
  std::unique_ptr<grpc::GenericClientAsyncResponseReader> call =
      stub.PrepareUnaryCall(&ctx, method, request, &cq);
  call->StartCall();
  grpc::ByteBuffer response;
  grpc::Status status;
  call->Finish(&response, &status, reinterpret_cast<void*>(1));
  void* tag = nullptr;
  bool ok = false;
  cq.Next(&tag, &ok);
  return status;
}

// A string field that is not UTF-8 (proto3 strings must be) cannot be parsed, before any
// handler runs: INVALID_ARGUMENT saying so, not gRPC's bare INTERNAL; the server stays up.
TEST_F(ServiceE2ETest, AStringFieldThatIsNotUtf8IsInvalidArgument) {
  // TokenizeRequest{text: "Hi \xff"} and GenerateRequest{text: "Hi", stop: ["\xff"]}.
  const std::string tokenize("\x0a\x04Hi \xff", 6);
  const std::string generate("\x0a\x02Hi\x18\x01\x42\x01\xff", 9);
  for (const auto& [method, bytes] : {std::pair{"/llmint8.v1.Generation/Tokenize", tokenize},
                                      std::pair{"/llmint8.v1.Generation/Generate", generate}}) {
    const grpc::Status status = CallWithBytes(cluster_->address(), method, bytes);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << method;
    EXPECT_THAT(status.error_message(), ::testing::HasSubstr("not valid UTF-8")) << method;
  }
  Generated g = Generate(*stub_, GreedyRequest({2, 5}, 2));
  EXPECT_TRUE(g.status.ok()) << g.status.error_message();
}

TEST_F(ServiceE2ETest, CancelFreesTheSequenceAndLaterRequestsWork) {
  grpc::ClientContext ctx;
  auto reader = stub_->Generate(&ctx, GreedyRequest({2, 7}, 120));
  v1::GenerateResponse resp;
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(reader->Read(&resp));
  ctx.TryCancel();
  while (reader->Read(&resp)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_TRUE(cluster_->WaitNoActiveSequences())
      << "the cancelled sequence still holds KV cache on the workers";
  const GoldenCase c = LoadGoldenCases()[0];
  Generated got = Generate(*stub_, GreedyRequest(c.prompt, 8));
  ASSERT_TRUE(got.status.ok()) << got.status.error_message();
  EXPECT_THAT(got.tokens,
              ElementsAreArray(std::vector<int32_t>(c.greedy.begin(), c.greedy.begin() + 8)));
}

// A deadline that passes mid-stream: DEADLINE_EXCEEDED for the client, the sequence freed, and
// the server counts (and logs) it as DEADLINE_EXCEEDED too: gRPC cancels the call at its
// deadline, so a failed write there must not read as a client that left (CANCELLED). The
// deadline starts at half the time the same request takes here; a run that still finishes in
// time (the machine was busier while it was timed) halves it, one that ends before its first
// token doubles it, so it passes mid-stream on a machine of any speed and load.
TEST_F(ServiceE2ETest, DeadlineMidStreamFreesTheSequenceAndIsCountedAsDeadline) {
  const std::string deadline = "llmint8_requests_total{code=\"DEADLINE_EXCEEDED\"}";
  const std::string cancelled = "llmint8_requests_total{code=\"CANCELLED\"}";
  const v1::GenerateRequest request = GreedyRequest({2, 7}, 126);
  const auto start = std::chrono::steady_clock::now();
  ASSERT_TRUE(Generate(*stub_, request).status.ok());
  auto budget = (std::chrono::steady_clock::now() - start) / 2;
  for (int attempt = 0; attempt < 10; ++attempt) {
    const std::string before = Scrape(metrics_port_);
    ASSERT_FALSE(before.empty()) << "no metrics on port " << metrics_port_;
    const double deadlines = std::max(0.0, Sample(before, deadline));
    const double cancels = std::max(0.0, Sample(before, cancelled));
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + budget);
    auto reader = stub_->Generate(&ctx, request);
    v1::GenerateResponse resp;
    int tokens = 0;
    while (reader->Read(&resp)) tokens += resp.has_token_id();
    const grpc::Status finished = reader->Finish();
    if (finished.ok()) {
      budget /= 2;
      continue;
    }
    ASSERT_EQ(finished.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED)
        << finished.error_message() << " after " << tokens << " of 126 tokens";
    EXPECT_TRUE(cluster_->WaitNoActiveSequences())
        << "the expired sequence still holds KV cache on the workers";
    EXPECT_EQ(WaitForSample(metrics_port_, deadline, deadlines + 1, 10), deadlines + 1);
    if (tokens == 0) {  // the deadline passed before the stream began
      budget *= 2;
      continue;
    }
    EXPECT_EQ(Sample(Scrape(metrics_port_), cancelled), cancels == 0 ? -1 : cancels);
    return;
  }
  FAIL() << "in 10 runs no deadline passed mid-stream";
}

// A client's x-request-id comes back in the initial metadata, sanitized, and names the
// request in the coordinator's log line.
TEST_F(ServiceE2ETest, RequestIdIsSentBackAndLogged) {
  grpc::ClientContext ctx;
  ctx.AddMetadata("x-request-id", "job-7/a b");
  auto reader = stub_->Generate(&ctx, GreedyRequest({2, 7}, 3));
  v1::GenerateResponse resp;
  while (reader->Read(&resp)) {
  }
  ASSERT_TRUE(reader->Finish().ok());
  const auto& md = ctx.GetServerInitialMetadata();
  const auto it = md.find("x-request-id");
  ASSERT_NE(it, md.end());
  EXPECT_EQ(std::string(it->second.data(), it->second.size()), "job-7/a_b");
  // The line is written as the handler records the request, just before the call ends.
  EXPECT_TRUE(WaitForLogLine(cluster_->log_dir() + "/coordinator.log",
                             " id=job-7/a_b OK: finish=length prompt=2 generated=3", 5))
      << "no request log line for job-7/a_b";
}

TEST_F(ServiceE2ETest, ModelInfoDescribesTheGroup) {
  grpc::ClientContext ctx;
  v1::GetModelInfoRequest req;
  v1::ModelInfo info;
  ASSERT_TRUE(stub_->GetModelInfo(&ctx, req, &info).ok());
  EXPECT_EQ(info.tensor_parallel(), 2);
  EXPECT_EQ(info.dtype(), "fp32");
  EXPECT_EQ(info.backend(), "gloo");
  EXPECT_EQ(info.vocab_size(), kVocab);
  EXPECT_EQ(info.max_context(), kContext);
  EXPECT_EQ(info.group_state(), "ready");
  EXPECT_EQ(info.group_error(), "");
  // The model's generation_config.json (--generation_config=auto) sets no eos list and no
  // sampling defaults: config.json's eos, and none.
  EXPECT_THAT(info.eos_token_ids(), ::testing::ElementsAre(2));
  const v1::GenerationDefaults& d = info.generation_defaults();
  EXPECT_TRUE(absl::EndsWith(d.source(), "tiny-opt/generation_config.json")) << d.source();
  EXPECT_FALSE(d.has_temperature() || d.has_top_k() || d.has_top_p() || d.has_min_p() ||
               d.has_repetition_penalty() || d.has_max_new_tokens());
  ASSERT_EQ(info.workers_size(), 2);
  for (const v1::WorkerInfo& w : info.workers()) {
    EXPECT_TRUE(w.healthy());
    EXPECT_GT(w.weight_bytes(), 0);
  }
}

TEST_F(ServiceE2ETest, ReflectionListsTheServicesAndHealthIsServing) {
  EXPECT_THAT(ReflectionServices(cluster_->address()),
              ::testing::IsSupersetOf({"llmint8.v1.Generation", "grpc.health.v1.Health"}));
  // Readiness under "" and the API's name, liveness under "liveness" (Kubernetes probes ask
  // them by name); a name no server sets is NOT_FOUND (-1).
  const std::string& a = cluster_->address();
  EXPECT_EQ(HealthStatus(a), 1);
  EXPECT_EQ(HealthStatus(a, nullptr, "llmint8.v1.Generation"), 1);
  EXPECT_EQ(HealthStatus(a, nullptr, "liveness"), 1);
  EXPECT_EQ(HealthStatus(a, nullptr, "llmint8.v1.Nothing"), -1);
  for (int rank = 0; rank < 2; ++rank) {
    EXPECT_EQ(HealthStatus(cluster_->worker_address(rank)), 1) << "worker " << rank;
    EXPECT_EQ(HealthStatus(cluster_->worker_address(rank), nullptr, "liveness"), 1);
  }
}

// --rendezvous_listen: the workers form their group through a second port that serves only
// the Rendezvous (the --advertise default follows it), and the public port no longer serves
// it, so a network policy can keep group formation to the workers.
TEST(RendezvousPortE2ETest, TheGroupFormsThroughItsOwnPortAndThePublicOneHasNoRendezvous) {
  const int rendezvous_port = FreePort();
  ClusterOptions options;
  options.model = SourcePath(kModelDir);
  options.extra_coordinator_flags = {
      absl::StrCat("--rendezvous_listen=127.0.0.1:", rendezvous_port)};
  Cluster cluster(options);
  ASSERT_TRUE(WaitForHealth(cluster.address(), 1, 60)) << "the group never formed";
  Generated g = Generate(*cluster.NewStub(), GreedyRequest({2, 5, 9}, 4));
  ASSERT_TRUE(g.status.ok()) << g.status.error_message();
  EXPECT_EQ(g.tokens.size(), 4u);

  EXPECT_THAT(ReflectionServices(cluster.address()),
              ::testing::Not(::testing::Contains("llmint8.v1.Rendezvous")));
  v1::AddRequest add;  // a counter no group uses: served there, refused as no group's key
  add.set_key("rendezvous-port-test");
  add.set_delta(1);
  for (const auto& [address, want] : {std::pair{cluster.address(), grpc::StatusCode::UNIMPLEMENTED},
                                      std::pair{absl::StrCat("127.0.0.1:", rendezvous_port),
                                                grpc::StatusCode::FAILED_PRECONDITION}}) {
    auto stub =
        v1::Rendezvous::NewStub(grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    v1::AddResponse resp;
    const grpc::Status s = stub->Add(&ctx, add, &resp);
    EXPECT_EQ(s.error_code(), want) << address << ": " << s.error_message();
  }
}

// Chunked prefill (--prefill_chunk=5): prompts go to the workers 5 tokens a step, next to the
// decode steps of the other streams. Every stream still equals its solo greedy run, and a
// solo request takes ceil(prompt / 5) prefill steps plus one per further token.
// Prompts scored in chunks (--score_chunk 7: the 17- and 40-token prompts cross at least 2 and
// 5 chunk boundaries, where rank 0 scores the next chunk's first token), all at once, sharing
// the 7 scored tokens of each step, while two greedy streams decode in the same steps: the
// same scores as one full forward, and the streams' own tokens; max_new_tokens 0 only scores,
// in one response with no token, and frees the sequence.
TEST(ChunkedPrefillE2ETest, PromptLogprobsAcrossChunksEqualTransformers) {
  ClusterOptions options;
  options.model = SourcePath(kModelDir);
  const int metrics_port = FreePort();
  options.extra_coordinator_flags = {"--prefill_chunk=7", "--score_chunk=7",
                                     absl::StrCat("--metrics_listen=127.0.0.1:", metrics_port)};
  Cluster cluster(options);
  ASSERT_TRUE(WaitForHealth(cluster.address(), 1, 60)) << "never SERVING";
  auto stub = cluster.NewStub();
  // Greedy streams decoding all along: scored prompts share their steps, which must not
  // change these streams' tokens (nor theirs).
  auto ref = InProcessReference::Open(SourcePath(kModelDir), model::Precision::kF32);
  ASSERT_TRUE(ref.ok()) << ref.status();
  std::vector<std::vector<int32_t>> stream_prompts = {{2, 11, 12}, {2, 300, 301, 302, 303}};
  std::vector<std::vector<int32_t>> stream_want;
  for (const auto& p : stream_prompts) {
    auto greedy = (*ref)->Greedy(p, 60);
    ASSERT_TRUE(greedy.ok()) << greedy.status();
    stream_want.push_back(*greedy);
  }
  std::vector<Generated> streams(stream_prompts.size());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < stream_prompts.size(); ++i) {
    threads.emplace_back([&, i] {
      auto own = cluster.NewStub();
      streams[i] = Generate(*own, GreedyRequest(stream_prompts[i], 60));
    });
  }
  const nlohmann::json j = LoadOpenAiSamplingFixture();
  const int top_n = j["top_n"].get<int>();
  std::vector<std::pair<const nlohmann::json*, int>> scorings;  // (run, new tokens)
  for (const auto& run : j["top_logprobs_runs"]) {
    for (int new_tokens : {0, 3}) scorings.emplace_back(&run, new_tokens);
  }
  std::vector<Generated> scored_runs(scorings.size());
  for (size_t k = 0; k < scorings.size(); ++k) {
    threads.emplace_back([&, k] {
      const auto& [run, new_tokens] = scorings[k];
      v1::GenerateRequest req =
          GreedyRequest((*run)["prompt"].get<std::vector<int32_t>>(), new_tokens);
      req.set_prompt_logprobs(true);
      req.set_top_logprobs(top_n);
      auto own = cluster.NewStub();
      scored_runs[k] = Generate(*own, req);
    });
  }
  for (std::thread& t : threads) t.join();
  for (size_t k = 0; k < scorings.size(); ++k) {
    const nlohmann::json& run = *scorings[k].first;
    const int new_tokens = scorings[k].second;
    const auto prompt = run["prompt"].get<std::vector<int32_t>>();
    {
      const Generated& got = scored_runs[k];
      ASSERT_TRUE(got.status.ok()) << got.status.error_message();
      ASSERT_FALSE(got.responses.empty());
      ExpectPromptScores(got.responses.front(), run, top_n);
      const auto want = run["greedy_tokens"].get<std::vector<int32_t>>();
      EXPECT_THAT(got.tokens, ElementsAreArray(want.begin(), want.begin() + new_tokens));
      if (new_tokens == 0) {
        ASSERT_EQ(got.responses.size(), 1u);
        const v1::GenerateResponse& only = got.responses.front();
        EXPECT_FALSE(only.has_token_id());
        EXPECT_EQ(only.finish_reason(), v1::FINISH_REASON_LENGTH);
        EXPECT_EQ(only.usage().prompt_tokens(), static_cast<int>(prompt.size()));
        EXPECT_EQ(only.usage().completion_tokens(), 0);
        ExpectConsistentTimings(only, 0);
      }
    }
  }
  for (size_t i = 0; i < streams.size(); ++i) {
    ASSERT_TRUE(streams[i].status.ok()) << streams[i].status.error_message();
    EXPECT_THAT(streams[i].tokens, ElementsAreArray(stream_want[i])) << "stream " << i;
  }
  // Every worker holds just the sequences the prefix cache keeps (scored prompts among them),
  // once the last one has left the batch (its final response comes before).
  EXPECT_EQ(WaitForSample(metrics_port, "llmint8_running_sequences", 0, 10), 0);
  const double parked = Sample(Scrape(metrics_port), "llmint8_prefix_cache_sequences");
  EXPECT_EQ(cluster.ActiveSequences(), static_cast<int64_t>(2 * parked))
      << "a scored prompt still holds KV cache beyond the prefix cache";
  // max_new_tokens 0 without prompt_logprobs is still refused; a prompt that fills the
  // whole context (128) can be scored.
  const Generated refused = Generate(*stub, GreedyRequest({2, 5}, 0));
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  v1::GenerateRequest full = GreedyRequest(std::vector<int32_t>(kContext, 7), 0);
  full.set_prompt_logprobs(true);
  const Generated scored = Generate(*stub, full);
  ASSERT_TRUE(scored.status.ok()) << scored.status.error_message();
  ASSERT_EQ(scored.responses.size(), 1u);
  EXPECT_EQ(scored.responses.front().prompt_tokens_size(), kContext);
  // Every step the scheduler sent ran on the workers: none was empty (the last request went
  // alone, and a scored prompt alone takes every step, not every other one) or refused.
  EXPECT_EQ(Sample(Scrape(metrics_port), "llmint8_scheduler_steps_total"),
            static_cast<double>(cluster.WorkerSteps()));
}

// A sequence rank 0 cannot sample (here a bias on an id outside the vocabulary, which the
// coordinator never sends) fails alone: the other sequence of the same step gets its token.
// The Step goes straight to the one worker of a TP 1 group, under ids the coordinator never
// uses.
TEST(WorkerStepE2ETest, ASequenceThatCannotBeSampledFailsAlone) {
  ClusterOptions options;
  options.model = SourcePath(kModelDir);
  options.workers = 1;
  Cluster cluster(options);
  ASSERT_TRUE(WaitForHealth(cluster.address(), 1, 60)) << "never SERVING";
  auto worker = cluster.NewWorkerStub(0);
  v1::WorkerInfoResponse info;
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(worker->Info(&ctx, v1::WorkerInfoRequest(), &info).ok());
  }
  v1::StepRequest step;
  step.set_epoch(info.epoch());
  step.set_step_id(1);
  constexpr uint64_t kGood = uint64_t{1} << 40, kBad = kGood + 1;
  for (uint64_t id : {kGood, kBad}) {
    v1::SeqStep* s = step.add_seqs();
    s->set_seq_id(id);
    s->add_token_ids(2);
    s->add_token_ids(id == kGood ? 5 : 7);
    if (id == kBad) {
      v1::TokenBias* b = s->mutable_sampling()->add_logit_bias();
      b->set_token_id(kVocab + 3);
      b->set_bias(1.0f);
    }
  }
  grpc::ClientContext ctx;
  v1::StepResponse resp;
  const grpc::Status st = worker->Step(&ctx, step, &resp);
  ASSERT_TRUE(st.ok()) << st.error_message();
  ASSERT_EQ(resp.results_size(), 2);
  EXPECT_GE(resp.results(0).token_id(), 0);
  EXPECT_TRUE(resp.results(0).sample_error().empty());
  EXPECT_EQ(resp.results(1).token_id(), -1);
  EXPECT_THAT(resp.results(1).sample_error(), ::testing::HasSubstr("outside the vocabulary"));
  grpc::ClientContext release_ctx;
  v1::ReleaseRequest release;
  release.set_epoch(info.epoch());
  release.add_seq_ids(kGood);
  release.add_seq_ids(kBad);
  v1::ReleaseResponse released;
  ASSERT_TRUE(worker->Release(&release_ctx, release, &released).ok());
  EXPECT_TRUE(cluster.WaitNoActiveSequences());
}

// Automatic prefix caching under a KV budget of 128 positions, greedy 8 tokens each (a
// request reserves prompt + 8): prompts that share 30 tokens with a finished one, repeat it,
// or extend it into its generated tokens copy those positions (the worker runs only the
// rest) and give the runtime's own tokens; admission evicts the least recently used finished
// sequence, not the one the new prompt starts from; the workers hold nothing else.
TEST(PrefixCacheE2ETest, PromptsStartFromFinishedSequencesCachesAndEvictionKeepsTheirMatch) {
  ClusterOptions options;
  options.model = SourcePath(kModelDir);
  const int metrics_port = FreePort();
  options.extra_coordinator_flags = {"--kv_budget_tokens=128",
                                     absl::StrCat("--metrics_listen=127.0.0.1:", metrics_port)};
  Cluster cluster(options);
  ASSERT_TRUE(WaitForHealth(cluster.address(), 1, 60)) << "never SERVING";
  auto ref = InProcessReference::Open(SourcePath(kModelDir), model::Precision::kF32);
  ASSERT_TRUE(ref.ok()) << ref.status();
  auto stub = cluster.NewStub();
  constexpr int kTokens = 8;
  // Runs `prompt`, checks its tokens against the runtime's and that its usage reports
  // `cached` prompt tokens, returns the tokens worker 0 ran.
  auto run = [&](const std::vector<int32_t>& prompt, int cached) -> uint64_t {
    auto want = (*ref)->Greedy(prompt, kTokens);
    EXPECT_TRUE(want.ok()) << want.status();
    const int64_t before = cluster.WorkerTokens();
    const Generated got = Generate(*stub, GreedyRequest(prompt, kTokens));
    EXPECT_TRUE(got.status.ok()) << got.status.error_message();
    if (want.ok()) {
      EXPECT_THAT(got.tokens, ElementsAreArray(*want));
    }
    EXPECT_TRUE(!got.responses.empty() &&
                got.responses.back().usage().cached_prompt_tokens() == cached)
        << "cached_prompt_tokens: "
        << (got.responses.empty() ? -1 : got.responses.back().usage().cached_prompt_tokens())
        << ", want " << cached;
    return cluster.WorkerTokens() - before;
  };
  auto hits = [&] { return Sample(Scrape(metrics_port), "llmint8_prefix_cache_hit_tokens_total"); };

  std::vector<int32_t> a = {2};
  for (int t = 1; t < 40; ++t) a.push_back((t * 37 + 11) % kVocab);
  EXPECT_EQ(run(a, 0), 40u + kTokens - 1);
  EXPECT_EQ(hits(), 0);
  std::vector<int32_t> b(a.begin(), a.begin() + 30);
  for (int t = 0; t < 10; ++t) b.push_back((t * 53 + 7) % kVocab);
  ASSERT_NE(b[30], a[30]);
  EXPECT_EQ(run(b, 30), 10u + kTokens - 1);  // 30 positions copied
  EXPECT_EQ(hits(), 30);
  // A again: 48 + 48 parked + 48 more is over 128, so one goes: B (A was just used), and A's
  // prompt but its last token is copied.
  EXPECT_EQ(run(a, 39), 1u + kTokens - 1);
  EXPECT_EQ(hits(), 30 + 39);
  // A, then 5 of its generated tokens (cached too: decode positions), then another token.
  auto a_out = (*ref)->Greedy(a, kTokens);
  ASSERT_TRUE(a_out.ok());
  std::vector<int32_t> d = a;
  d.insert(d.end(), a_out->begin(), a_out->begin() + 5);
  d.push_back(((*a_out)[5] + 1) % kVocab);
  EXPECT_EQ(run(d, 45), 1u + kTokens - 1);  // 45 positions copied
  EXPECT_EQ(hits(), 30 + 39 + 45);

  EXPECT_EQ(WaitForSample(metrics_port, "llmint8_running_sequences", 0, 10), 0);
  // D (54 positions) evicted A and kept the second A it started from: that one (47 cached
  // positions: 48 in granules of 16) and D (53: 64) are left.
  EXPECT_EQ(Sample(Scrape(metrics_port), "llmint8_prefix_cache_sequences"), 2);
  EXPECT_EQ(Sample(Scrape(metrics_port), "llmint8_prefix_cache_positions"), 48 + 64);
  EXPECT_EQ(cluster.ActiveSequences(), options.workers * 2);
}

// A prompt that starts like a running sequence's copies those prompt positions too: B,
// sent once A has its first token and while A decodes 80 more, shares A's first 30 tokens.
// Both get the runtime's tokens; B ends before A does.
TEST(PrefixCacheE2ETest, APromptStartsFromARunningSequencesPrompt) {
  ClusterOptions options;
  options.model = SourcePath(kModelDir);
  Cluster cluster(options);
  ASSERT_TRUE(WaitForHealth(cluster.address(), 1, 60)) << "never SERVING";
  auto ref = InProcessReference::Open(SourcePath(kModelDir), model::Precision::kF32);
  ASSERT_TRUE(ref.ok()) << ref.status();
  std::vector<int32_t> a = {2};
  for (int t = 1; t < 40; ++t) a.push_back((t * 29 + 5) % kVocab);
  std::vector<int32_t> b(a.begin(), a.begin() + 30);
  for (int t = 0; t < 6; ++t) b.push_back((t * 17 + 900) % kVocab);
  auto a_want = (*ref)->Greedy(a, 80);
  auto b_want = (*ref)->Greedy(b, 6);
  ASSERT_TRUE(a_want.ok() && b_want.ok());

  auto stub = cluster.NewStub();
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  const auto a_sent = std::chrono::steady_clock::now();
  auto reader = stub->Generate(&ctx, GreedyRequest(a, 80));
  std::vector<int32_t> a_tokens;
  v1::GenerateResponse resp;
  ASSERT_TRUE(reader->Read(&resp));  // A's prompt is on the workers
  a_tokens.push_back(resp.token_id());
  const Generated got = Generate(*cluster.NewStub(), GreedyRequest(b, 6));
  const double b_done_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - a_sent).count();
  double a_total_ms = 0;
  while (reader->Read(&resp)) {
    if (resp.has_token_id()) a_tokens.push_back(resp.token_id());
    if (resp.has_timings()) a_total_ms = resp.timings().total_ms();
  }
  ASSERT_TRUE(reader->Finish().ok());
  ASSERT_TRUE(got.status.ok()) << got.status.error_message();
  EXPECT_THAT(got.tokens, ElementsAreArray(*b_want));
  EXPECT_THAT(a_tokens, ElementsAreArray(*a_want));
  EXPECT_EQ(got.responses.back().usage().cached_prompt_tokens(), 30);
  // A ended (arrival + total, arrival after a_sent) after B did: B started from A running, not
  // from A parked.
  EXPECT_GT(a_total_ms, b_done_ms) << "A ended first: a parked A was the source";
  std::fprintf(stderr, "A total %.1f ms, B done %.1f ms after A was sent\n", a_total_ms, b_done_ms);
}

TEST(ChunkedPrefillE2ETest, ChunkedPromptsGiveTheSoloTokens) {
  constexpr int kChunk = 5;
  ClusterOptions options;
  options.model = SourcePath(kModelDir);
  options.extra_coordinator_flags = {absl::StrCat("--prefill_chunk=", kChunk)};
  Cluster cluster(options);
  ASSERT_TRUE(WaitForHealth(cluster.address(), 1, 60)) << "never SERVING";
  auto ref = InProcessReference::Open(SourcePath(kModelDir), model::Precision::kF32);
  ASSERT_TRUE(ref.ok()) << ref.status();
  auto stub = cluster.NewStub();

  constexpr int kClients = 12;
  std::vector<std::vector<int32_t>> prompts(kClients);
  std::vector<int> lengths(kClients);
  std::vector<std::vector<int32_t>> solo(kClients);
  for (int i = 0; i < kClients; ++i) {
    const int prompt_len = 1 + (i * 11) % 61;  // 1..61 tokens: 1 to 13 chunks
    prompts[i].push_back(2);
    for (int t = 1; t < prompt_len; ++t) prompts[i].push_back((i * 37 + t * 29) % kVocab);
    lengths[i] = 3 + (i * 7) % 13;
    auto greedy = (*ref)->Greedy(prompts[i], lengths[i]);
    ASSERT_TRUE(greedy.ok()) << greedy.status();
    solo[i] = *greedy;
  }

  const int longest = 10;  // 1 + 110 % 61 = 50 tokens
  ASSERT_EQ(prompts[longest].size(), 50u);
  const int64_t steps_before = cluster.WorkerSteps();
  Generated alone = Generate(*stub, GreedyRequest(prompts[longest], lengths[longest]));
  ASSERT_TRUE(alone.status.ok()) << alone.status.error_message();
  EXPECT_THAT(alone.tokens, ElementsAreArray(solo[longest]));
  EXPECT_EQ(cluster.WorkerSteps() - steps_before, 50 / kChunk + lengths[longest] - 1);

  std::vector<Generated> results(kClients);
  std::vector<std::thread> threads;
  for (int i = 0; i < kClients; ++i) {
    threads.emplace_back([&, i] {
      results[i] = Generate(*cluster.NewStub(), GreedyRequest(prompts[i], lengths[i]), 120);
    });
  }
  for (std::thread& t : threads) t.join();
  for (int i = 0; i < kClients; ++i) {
    ASSERT_TRUE(results[i].status.ok())
        << "client " << i << ": " << results[i].status.error_message();
    EXPECT_THAT(results[i].tokens, ElementsAreArray(solo[i])) << "client " << i;
    EXPECT_EQ(results[i].responses.back().usage().prompt_tokens(),
              static_cast<int>(prompts[i].size()));
  }
}

// SIGTERM drains: the stream in flight is served to its end (not cut with UNAVAILABLE), a new
// request is refused with UNAVAILABLE, and the coordinator then exits.
TEST(DrainE2ETest, SigtermServesTheRunningStreamAndRefusesNewOnes) {
  ClusterOptions options;
  options.model = SourcePath(kModelDir);
  Cluster cluster(options);
  ASSERT_TRUE(WaitForHealth(cluster.address(), 1, 60)) << "never SERVING";
  auto ref = InProcessReference::Open(SourcePath(kModelDir), model::Precision::kF32);
  ASSERT_TRUE(ref.ok()) << ref.status();
  const std::vector<int32_t> prompt = {2, 11, 12};
  auto expected = (*ref)->Greedy(prompt, 120);
  ASSERT_TRUE(expected.ok()) << expected.status();

  auto stub = cluster.NewStub();
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  auto reader = stub->Generate(&ctx, GreedyRequest(prompt, 120));
  std::vector<int32_t> tokens;
  v1::GenerateResponse resp;
  while (tokens.size() < 3 && reader->Read(&resp)) {
    if (resp.has_token_id()) tokens.push_back(resp.token_id());
  }
  cluster.SignalCoordinator(SIGTERM);
  // Draining starts when health turns NOT_SERVING (polled closely: the drain is short).
  int health = 1;
  for (int i = 0; i < 1000 && health == 1; ++i) {
    health = HealthStatus(cluster.address());
    if (health == 1) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_EQ(health, 2) << "health never said NOT_SERVING";
  const Generated refused = Generate(*stub, GreedyRequest(prompt, 4), 10);
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::UNAVAILABLE)
      << refused.status.error_message();
  while (reader->Read(&resp)) {
    if (resp.has_token_id()) tokens.push_back(resp.token_id());
  }
  const grpc::Status status = reader->Finish();
  EXPECT_TRUE(status.ok()) << "the stream in flight was cut: " << status.error_message();
  EXPECT_THAT(tokens, ElementsAreArray(*expected));
}

// A second SIGTERM during the drain (an impatient operator's second Ctrl-C) ends it at once:
// the coordinator exits without serving the queue, whose requests fail UNAVAILABLE, well
// within a --drain_timeout that would otherwise have let them all run.
TEST(DrainE2ETest, ASecondSigtermEndsTheDrainAtOnce) {
  ClusterOptions options;
  options.model = SourcePath(kModelDir);
  options.extra_coordinator_flags = {"--drain_timeout=120s", "--max_batch=1"};
  Cluster cluster(options);
  ASSERT_TRUE(WaitForHealth(cluster.address(), 1, 60)) << "never SERVING";
  constexpr int kRequests = 60;  // one at a time, 100 tokens each: seconds of work queued
  std::vector<Generated> results(kRequests);
  std::vector<std::thread> clients;
  for (int i = 0; i < kRequests; ++i) {
    clients.emplace_back([&, i] {
      results[i] = Generate(*cluster.NewStub(), GreedyRequest({2, 11, 12}, 100), 120);
    });
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // a few served, most queued
  cluster.SignalCoordinator(SIGTERM);
  EXPECT_TRUE(WaitForLogLine(cluster.log_dir() + "/coordinator.log", "coordinator draining", 10));
  const auto second = std::chrono::steady_clock::now();
  cluster.StopCoordinator(SIGTERM);  // the second signal; returns once it exited
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - second).count();
  for (std::thread& t : clients) t.join();
  EXPECT_LT(seconds, 10.0) << "the drain went on after the second signal";
  int cut = 0;
  for (const Generated& r : results) {
    if (r.status.ok()) continue;
    EXPECT_EQ(r.status.error_code(), grpc::StatusCode::UNAVAILABLE) << r.status.error_message();
    ++cut;
  }
  EXPECT_GT(cut, 0) << "every request was served: the drain was not ended";
  EXPECT_TRUE(WaitForLogLine(cluster.log_dir() + "/coordinator.log", "again: stopping now", 1));
}

}  // namespace
}  // namespace llmint8::e2e
