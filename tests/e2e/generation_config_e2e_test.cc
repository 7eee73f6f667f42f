// End-to-end: a model's generation_config.json (--generation_config) as a coordinator + 2 Gloo
// workers serve tests/golden/tiny-opt: its eos_token_id list ends gRPC and HTTP streams, its
// defaults fill the OpenAI API fields a request leaves out, GetModelInfo reports them, and a
// file the sampler cannot take stops the coordinator at start.
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "nlohmann/json.hpp"
#include "tests/e2e/cluster.h"
#include "tests/e2e/reference.h"

namespace llmint8::e2e {
namespace {

using ::testing::ElementsAreArray;
using ::testing::HasSubstr;
using json = nlohmann::json;

constexpr char kModelDir[] = "tests/golden/tiny-opt";
constexpr int kContext = 128;     // the model's max_position_embeddings
constexpr int kMaxNewTokens = 6;  // the file's max_new_tokens
const std::vector<int32_t> kPrompt = {2, 5, 7};

std::string TempFile(const std::string& name, const std::string& text) {
  const std::filesystem::path dir =
      std::filesystem::path(testing::TempDir()) / absl::StrCat("generation_config_e2e_", getpid());
  std::filesystem::create_directories(dir);
  const std::string path = (dir / name).string();
  std::ofstream(path) << text;
  return path;
}

class GenerationConfigE2ETest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto ref = InProcessReference::Open(SourcePath(kModelDir), model::Precision::kF32);
    ASSERT_TRUE(ref.ok()) << ref.status();
    absl::StatusOr<std::vector<int32_t>> greedy = (*ref)->Greedy(kPrompt, 8);
    ASSERT_TRUE(greedy.ok()) << greedy.status();
    greedy_ = *greedy;
    // The second eos id: the first greedy token after the first that the run has not made
    // before (and not eos 2), so the stream ends on it.
    for (size_t k = 1; k < greedy_.size() && stop_at_ == 0; ++k) {
      if (greedy_[k] != 2 &&
          std::find(greedy_.begin(), greedy_.begin() + k, greedy_[k]) == greedy_.begin() + k) {
        stop_at_ = k;
      }
    }
    ASSERT_GT(stop_at_, 0u) << "the greedy run repeats one token";
    // do_sample false: greedy by default (its temperature is transformers' to ignore too).
    path_ = new std::string(
        TempFile("generation_config.json", json{{"do_sample", false},
                                                {"temperature", 0.7},
                                                {"eos_token_id", {2, greedy_[stop_at_]}},
                                                {"max_new_tokens", kMaxNewTokens}}
                                               .dump()));
    http_port_ = FreePort();
    ClusterOptions options;
    options.model = SourcePath(kModelDir);
    // A tokenizer, for the chat API (its vocabulary fits in the model's).
    options.extra_coordinator_flags = {
        absl::StrCat("--http_listen=127.0.0.1:", http_port_),
        absl::StrCat("--generation_config=", *path_),
        absl::StrCat("--tokenizer=",
                     SourcePath("tests/fixtures/tokenizer/tiny-bpe/tokenizer.json"))};
    cluster_ = new Cluster(options);
    ASSERT_TRUE(WaitForHealth(cluster_->address(), 1, 60)) << "never SERVING";
  }
  static void TearDownTestSuite() {
    delete cluster_;
    delete path_;
  }
  void SetUp() override { ASSERT_NE(cluster_, nullptr); }

  // The choice of a /v1/completions answer to `body`.
  static json Complete(const json& body) {
    httplib::Client client("127.0.0.1", http_port_);
    client.set_read_timeout(60, 0);
    const httplib::Result res = client.Post("/v1/completions", body.dump(), "application/json");
    EXPECT_TRUE(res && res->status == 200) << (res ? res->body : "no answer");
    if (!res || res->status != 200) return json::object();
    return json::parse(res->body)["choices"][0];
  }
  static std::vector<int32_t> Greedy(size_t n) {
    return {greedy_.begin(), greedy_.begin() + static_cast<std::ptrdiff_t>(n)};
  }

  static std::vector<int32_t> greedy_;
  static size_t stop_at_;
  static std::string* path_;
  static int http_port_;
  static Cluster* cluster_;
};

std::vector<int32_t> GenerationConfigE2ETest::greedy_;
size_t GenerationConfigE2ETest::stop_at_ = 0;
std::string* GenerationConfigE2ETest::path_ = nullptr;
int GenerationConfigE2ETest::http_port_ = 0;
Cluster* GenerationConfigE2ETest::cluster_ = nullptr;

TEST_F(GenerationConfigE2ETest, ModelInfoListsTheEosIdsAndTheDefaults) {
  auto stub = cluster_->NewStub();
  grpc::ClientContext ctx;
  v1::ModelInfo info;
  ASSERT_TRUE(stub->GetModelInfo(&ctx, v1::GetModelInfoRequest(), &info).ok());
  std::vector<int32_t> eos = {2, greedy_[stop_at_]};
  std::sort(eos.begin(), eos.end());
  EXPECT_THAT(info.eos_token_ids(), ElementsAreArray(eos));
  EXPECT_EQ(info.eos_token_id(), 2);  // config.json's
  const v1::GenerationDefaults& d = info.generation_defaults();
  EXPECT_EQ(d.source(), *path_);
  ASSERT_TRUE(d.has_temperature());
  EXPECT_EQ(d.temperature(), 0.0f);  // do_sample false
  EXPECT_EQ(d.max_new_tokens(), kMaxNewTokens);
  EXPECT_FALSE(d.has_top_k());
  EXPECT_FALSE(d.has_top_p());
  EXPECT_FALSE(d.has_repetition_penalty());
}

TEST_F(GenerationConfigE2ETest, EveryEosIdEndsAGrpcStream) {
  auto stub = cluster_->NewStub();
  v1::GenerateRequest request = GreedyRequest(kPrompt, 8);
  request.set_ignore_eos(false);
  const Generated run = Generate(*stub, request);
  ASSERT_TRUE(run.status.ok()) << run.status.error_message();
  EXPECT_THAT(run.tokens, ElementsAreArray(Greedy(stop_at_ + 1)));
  ASSERT_FALSE(run.responses.empty());
  EXPECT_EQ(run.responses.back().finish_reason(), v1::FINISH_REASON_EOS);

  const Generated all = Generate(*stub, GreedyRequest(kPrompt, 8));  // ignore_eos
  ASSERT_TRUE(all.status.ok()) << all.status.error_message();
  EXPECT_THAT(all.tokens, ElementsAreArray(greedy_));
}

TEST_F(GenerationConfigE2ETest, OpenAiFieldsLeftOutTakeTheModelsDefaults) {
  // No temperature, no max_tokens: greedy (do_sample false) up to the second eos id.
  json choice = Complete({{"prompt", kPrompt}, {"return_token_ids", true}});
  EXPECT_THAT(choice["token_ids"].get<std::vector<int32_t>>(),
              ElementsAreArray(Greedy(stop_at_ + 1)));
  EXPECT_EQ(choice["finish_reason"], "stop");

  // Past the eos ids: the file's max_new_tokens.
  choice = Complete({{"prompt", kPrompt}, {"return_token_ids", true}, {"ignore_eos", true}});
  EXPECT_THAT(choice["token_ids"].get<std::vector<int32_t>>(),
              ElementsAreArray(Greedy(kMaxNewTokens)));
  EXPECT_EQ(choice["finish_reason"], "length");

  // A request's own max_tokens wins.
  choice = Complete(
      {{"prompt", kPrompt}, {"return_token_ids", true}, {"ignore_eos", true}, {"max_tokens", 8}});
  EXPECT_THAT(choice["token_ids"].get<std::vector<int32_t>>(), ElementsAreArray(greedy_));

  // The file's max_new_tokens is a limit: a prompt that leaves 2 tokens of the context gets 2,
  // where an explicit max_tokens of 6 is refused.
  std::vector<int32_t> long_prompt(kContext - 2, 5);
  long_prompt[0] = 2;
  choice = Complete({{"prompt", long_prompt}, {"return_token_ids", true}, {"ignore_eos", true}});
  EXPECT_EQ(choice["token_ids"].size(), 2u);
  EXPECT_EQ(choice["finish_reason"], "length");
  httplib::Client client("127.0.0.1", http_port_);
  const httplib::Result refused = client.Post(
      "/v1/completions", json{{"prompt", long_prompt}, {"max_tokens", kMaxNewTokens}}.dump(),
      "application/json");
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->status, 400) << refused->body;
}

// A chat reply without a limit of its own (and no --default_max_tokens): the file's
// max_new_tokens.
TEST_F(GenerationConfigE2ETest, AChatReplyStopsAtTheModelsMaxNewTokens) {
  httplib::Client client("127.0.0.1", http_port_);
  client.set_read_timeout(60, 0);
  const json body = {{"messages", {{{"role", "user"}, {"content", "hello"}}}},
                     {"ignore_eos", true}};
  const httplib::Result res = client.Post("/v1/chat/completions", body.dump(), "application/json");
  ASSERT_TRUE(res && res->status == 200) << (res ? res->body : "no answer");
  const json answer = json::parse(res->body);
  EXPECT_EQ(answer["usage"]["completion_tokens"], kMaxNewTokens) << res->body;
  EXPECT_EQ(answer["choices"][0]["finish_reason"], "length");
}

// A file the sampler cannot take: the coordinator says which field at start, and serves
// nothing; --generation_config=none serves without it.
TEST(GenerationConfigStartE2ETest, ABadFileStopsTheCoordinatorNamingTheField) {
  const std::string bad = TempFile("bad_generation_config.json", R"({"top_p": 1.5})");
  const std::string command =
      absl::StrCat(LlmintBinary(), " coordinator --listen=127.0.0.1:", FreePort(),
                   " --workers=127.0.0.1:", FreePort(), " --model=", SourcePath(kModelDir),
                   " --dtype=fp32 --generation_config=", bad, " 2>&1");
  const absl::StatusOr<std::string> out = RunAndRead(command);
  ASSERT_FALSE(out.ok()) << "the coordinator started: " << *out;
  EXPECT_THAT(out.status().message(), HasSubstr(absl::StrCat(bad, ": field \"top_p\"")));
  EXPECT_THAT(out.status().message(), HasSubstr("--generation_config=none"));

  const std::string missing =
      absl::StrCat(LlmintBinary(), " coordinator --workers=127.0.0.1:", FreePort(),
                   " --model=", SourcePath(kModelDir), " --generation_config=/no/such/dir 2>&1");
  const absl::StatusOr<std::string> none = RunAndRead(missing);
  ASSERT_FALSE(none.ok());
  EXPECT_THAT(none.status().message(), HasSubstr("no /no/such/dir"));

  const std::string override_command =
      absl::StrCat(LlmintBinary(), " coordinator --workers=127.0.0.1:", FreePort(),
                   " --model=", SourcePath(kModelDir),
                   " --override_generation_config='{\"temperature\": -1}' 2>&1");
  const absl::StatusOr<std::string> overridden = RunAndRead(override_command);
  ASSERT_FALSE(overridden.ok());
  EXPECT_THAT(overridden.status().message(),
              HasSubstr("--override_generation_config: field \"temperature\""));
}

}  // namespace
}  // namespace llmint8::e2e
