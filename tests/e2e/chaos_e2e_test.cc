// A seeded chaos run against real processes: 12 clients send 240 requests at once through gRPC
// and the OpenAI HTTP API (complete streams, sampled or greedy with stops, logprobs, top
// logprobs, penalties, min-p, logit biases, stop ids and minimum lengths, prompts scored with
// or without generation; cancels after a few tokens; expiring deadlines; invalid requests;
// HTTP streams the client leaves, of one prompt or of a batch with n; malformed HTTP bodies), on
// int8 with outlier decomposition, chunked prefill, a small batch, a short queue and a KV budget
// that four long requests outgrow (running sequences are preempted and prefilled again). Each
// request must end with a code its action allows, a greedy probe sent among them must always
// give the solo tokens, and afterwards nothing is held: no queued or running sequence, no KV
// reservation, no sequence on a worker.
#include <atomic>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "tests/e2e/cluster.h"
#include "tests/e2e/metrics_scrape.h"

namespace llmint8::e2e {
namespace {

using ::testing::ElementsAreArray;
using Code = grpc::StatusCode;

constexpr int kVocab = 400;
constexpr char kModel[] =
    "synthetic:125m,layers=2,hidden=64,heads=4,ffn=256,vocab=400,positions=128,seed=7,"
    "outliers=2";
// Its vocabulary matches this tokenizer (text_e2e_test), which stop sequences need.
constexpr char kTokenizer[] = "tests/fixtures/tokenizer/tiny-bpe/tokenizer.json";
constexpr int kClients = 12;
constexpr int kActionsPerClient = 20;
const std::vector<int32_t> kProbe = {2, 17, 250, 3, 99, 311};
constexpr int kProbeTokens = 12;

class Chaos {
 public:
  Chaos(const Cluster& cluster, int http_port, std::vector<int32_t> probe_tokens)
      : cluster_(cluster), http_port_(http_port), probe_tokens_(std::move(probe_tokens)) {}

  void RunClient(int client) {
    std::mt19937 rng(1000 + client);
    auto stub = cluster_.NewStub();
    for (int a = 0; a < kActionsPerClient; ++a) Act(*stub, rng);
  }

  // "action: outcome" -> count; and what broke an expectation.
  std::map<std::string, int> outcomes() const { return outcomes_; }
  std::vector<std::string> problems() const { return problems_; }

 private:
  static int Uniform(std::mt19937& rng, int lo, int hi) {
    return std::uniform_int_distribution<int>(lo, hi)(rng);
  }

  v1::GenerateRequest RandomRequest(std::mt19937& rng) {
    std::vector<int32_t> prompt = {2};
    // Half the prompts start with one of three shared 24-token prefixes (as a system prompt),
    // which the prefix cache copies from finished or running sequences.
    if (Uniform(rng, 0, 1) == 1) {
      const int which = Uniform(rng, 0, 2);
      for (int i = 1; i < 24; ++i) prompt.push_back(3 + (which * 331 + i * 17) % (kVocab - 3));
    }
    const int len = Uniform(rng, 0, 60 - static_cast<int>(prompt.size()) + 1);
    for (int i = 0; i < len; ++i) prompt.push_back(Uniform(rng, 3, kVocab - 1));
    v1::GenerateRequest r = GreedyRequest(prompt, Uniform(rng, 1, 24));
    r.set_ignore_eos(Uniform(rng, 0, 1) == 1);
    if (Uniform(rng, 0, 1) == 1) {
      r.set_temperature(Uniform(rng, 1, 15) / 10.0f);
      r.set_top_k(Uniform(rng, 0, 50));
      r.set_top_p(Uniform(rng, 1, 10) / 10.0f);
      r.set_seed(rng());
    }
    if (Uniform(rng, 0, 4) == 0)
      r.add_stop(std::string(1, static_cast<char>(Uniform(rng, 97, 122))));
    if (Uniform(rng, 0, 2) == 0) r.set_logprobs(true);
    if (Uniform(rng, 0, 3) == 0) r.set_repetition_penalty(Uniform(rng, 8, 13) / 10.0f);
    if (Uniform(rng, 0, 3) == 0) {
      r.set_frequency_penalty(Uniform(rng, -20, 20) / 10.0f);
      r.set_presence_penalty(Uniform(rng, -20, 20) / 10.0f);
    }
    if (Uniform(rng, 0, 3) == 0) r.set_top_logprobs(Uniform(rng, 1, 20));
    if (Uniform(rng, 0, 4) == 0) r.set_min_p(Uniform(rng, 0, 10) / 10.0f);
    if (Uniform(rng, 0, 4) == 0) {
      for (int k = Uniform(rng, 1, 4); k > 0; --k) {
        (*r.mutable_logit_bias())[Uniform(rng, 0, kVocab - 1)] = Uniform(rng, -100, 100);
      }
    }
    if (Uniform(rng, 0, 4) == 0) {
      for (int k = Uniform(rng, 1, 3); k > 0; --k)
        r.add_stop_token_ids(Uniform(rng, 0, kVocab - 1));
      r.set_min_tokens(Uniform(rng, 0, r.max_new_tokens()));
    }
    if (Uniform(rng, 0, 5) == 0) {  // score the prompt (its chunks beside the others), maybe only
      r.set_prompt_logprobs(true);
      if (Uniform(rng, 0, 1) == 0) {
        r.set_max_new_tokens(0);
        r.set_min_tokens(0);
      }
    }
    return r;
  }

  void Note(const std::string& action, const std::string& outcome, bool allowed) {
    std::lock_guard<std::mutex> lock(mu_);
    ++outcomes_[absl::StrCat(action, ": ", outcome)];
    if (!allowed) problems_.push_back(absl::StrCat(action, " ended ", outcome));
  }

  // `allowed` and RESOURCE_EXHAUSTED (the short queue may refuse any valid request; an invalid
  // one is refused before it is queued, so that code there means it was not validated).
  void NoteGrpc(const std::string& action, const grpc::Status& s, std::vector<Code> allowed,
                bool queued = true) {
    if (queued) allowed.push_back(Code::RESOURCE_EXHAUSTED);
    bool ok = false;
    for (Code c : allowed) ok |= s.error_code() == c;
    Note(action, absl::StrCat("code ", s.error_code(), " ", s.error_message()), ok);
  }

  void Act(v1::Generation::Stub& stub, std::mt19937& rng) {
    const int kind = Uniform(rng, 0, 99);
    if (kind < 35) {  // a whole stream
      Generated g = Generate(stub, RandomRequest(rng), 120);
      NoteGrpc("complete", g.status, {Code::OK});
    } else if (kind < 50) {  // the client cancels after a few responses
      grpc::ClientContext ctx;
      auto reader = stub.Generate(&ctx, RandomRequest(rng));
      const int leave_after = Uniform(rng, 0, 4);
      v1::GenerateResponse resp;
      for (int n = 0; n < leave_after && reader->Read(&resp); ++n) {
      }
      ctx.TryCancel();
      while (reader->Read(&resp)) {
      }
      NoteGrpc("cancel", reader->Finish(), {Code::CANCELLED, Code::OK});
    } else if (kind < 60) {  // a deadline that may expire anywhere
      Generated g = Generate(stub, RandomRequest(rng), Uniform(rng, 1, 400) / 1000.0);
      NoteGrpc("deadline", g.status, {Code::OK, Code::DEADLINE_EXCEEDED});
    } else if (kind < 68) {  // invalid
      v1::GenerateRequest r = RandomRequest(rng);
      switch (Uniform(rng, 0, 3)) {
        case 0:
          r.set_max_new_tokens(-1);
          break;
        case 1:
          r.set_temperature(-1.0f);
          break;
        case 2:
          r.set_top_p(1.5f);
          break;
        default:
          r.mutable_token_ids()->set_ids(0, kVocab + 5);
          break;
      }
      NoteGrpc("invalid", Generate(stub, r).status, {Code::INVALID_ARGUMENT}, /*queued=*/false);
    } else if (kind < 78) {  // an HTTP stream the client leaves: one prompt, or 2 x n 2
      const v1::GenerateRequest r = RandomRequest(rng);
      std::string ids;
      for (int32_t t : r.token_ids().ids()) absl::StrAppend(&ids, ids.empty() ? "" : ",", t);
      const bool batch = Uniform(rng, 0, 1) == 1;
      const std::string prompt =
          batch ? absl::StrCat("[[", ids, "], [2, 5, 7]]") : absl::StrCat("[", ids, "]");
      httplib::Request req;
      req.method = "POST";
      req.path = "/v1/completions";
      req.set_header("Content-Type", "application/json");
      req.body = absl::StrCat(R"({"prompt": )", prompt, R"(, "max_tokens": )",
                              std::max(r.max_new_tokens(), 1), batch ? R"(, "n": 2)" : "",
                              R"(, "stream": true})");
      int pieces = 0;
      const int leave_after = Uniform(rng, 1, 3);
      req.content_receiver = [&](const char*, size_t, uint64_t, uint64_t) {
        return ++pieces < leave_after;
      };
      httplib::Client client("127.0.0.1", http_port_);
      client.set_read_timeout(60);
      httplib::Result res = client.send(req);
      Note("http leave", res ? absl::StrCat("status ", res->status) : "left", true);
    } else if (kind < 83) {  // a malformed HTTP body
      std::string junk(Uniform(rng, 1, 200), ' ');
      for (char& c : junk) c = static_cast<char>(Uniform(rng, 0, 255));
      httplib::Client client("127.0.0.1", http_port_);
      httplib::Result res = client.Post("/v1/completions", junk, "application/json");
      const int status = res ? res->status : -1;
      Note("http junk", absl::StrCat("status ", status), status == 400);
    } else {  // the greedy probe: always its solo tokens
      Generated g = Generate(stub, GreedyRequest(kProbe, kProbeTokens), 120);
      if (g.status.error_code() == Code::RESOURCE_EXHAUSTED) {
        Note("probe", "queue full", true);
        return;
      }
      const bool same = g.status.ok() && g.tokens == probe_tokens_;
      Note("probe",
           same ? "solo tokens" : absl::StrCat("code ", g.status.error_code(), " or other tokens"),
           same);
    }
  }

  const Cluster& cluster_;
  const int http_port_;
  const std::vector<int32_t> probe_tokens_;
  std::mutex mu_;
  std::map<std::string, int> outcomes_;
  std::vector<std::string> problems_;
};

TEST(ChaosE2ETest, EveryRequestEndsCleanlyAndNothingLeaks) {
  const int http_port = FreePort();
  const int metrics_port = FreePort();
  ClusterOptions options;
  options.model = kModel;
  options.dtype = "int8";
  options.extra_coordinator_flags = {absl::StrCat("--tokenizer=", SourcePath(kTokenizer)),
                                     "--prefill_chunk=8", "--max_batch=4", "--queue_capacity=8",
                                     // prompts of up to 60 tokens and 24 more: 4 x 84 > 120
                                     "--kv_budget_tokens=120",
                                     absl::StrCat("--http_listen=127.0.0.1:", http_port),
                                     absl::StrCat("--metrics_listen=127.0.0.1:", metrics_port)};
  Cluster cluster(options);
  ASSERT_TRUE(WaitForHealth(cluster.address(), 1, 60)) << "never SERVING";

  Generated solo = Generate(*cluster.NewStub(), GreedyRequest(kProbe, kProbeTokens));
  ASSERT_TRUE(solo.status.ok()) << solo.status.error_message();
  ASSERT_EQ(solo.tokens.size(), static_cast<size_t>(kProbeTokens));

  Chaos chaos(cluster, http_port, solo.tokens);
  std::vector<std::thread> clients;
  for (int c = 0; c < kClients; ++c) clients.emplace_back([&chaos, c] { chaos.RunClient(c); });
  for (std::thread& t : clients) t.join();

  int total = 0;
  for (const auto& [outcome, count] : chaos.outcomes()) {
    total += count;
    RecordProperty(outcome, count);
  }
  EXPECT_EQ(total, kClients * kActionsPerClient);
  EXPECT_THAT(chaos.problems(), ::testing::IsEmpty());
  // Refusals (a full queue) are allowed, but the load must have been served, the probes
  // compared: of ~40 probes and ~85 whole streams most are.
  std::map<std::string, int> outcomes = chaos.outcomes();
  EXPECT_GE(outcomes["probe: solo tokens"], 5);
  EXPECT_GE(outcomes["complete: code 0 "], 10);

  // Nothing held once the last client is gone (a left HTTP stream is noticed at its next token).
  EXPECT_EQ(WaitForSample(metrics_port, "llmint8_queued_requests", 0, 10), 0);
  EXPECT_EQ(WaitForSample(metrics_port, "llmint8_running_sequences", 0, 10), 0);
  EXPECT_EQ(WaitForSample(metrics_port, "llmint8_kv_reserved_positions", 0, 10), 0);
  // The workers hold only what the prefix cache keeps (finished sequences), each of them; the
  // shared prefixes were copied along the way.
  const std::string scraped = Scrape(metrics_port);
  const double parked = Sample(scraped, "llmint8_prefix_cache_sequences");
  const double copied = Sample(scraped, "llmint8_prefix_cache_hit_tokens_total");
  RecordProperty("prefix_cache_hit_tokens", static_cast<int>(copied));
  const double preempted = Sample(scraped, "llmint8_preemptions_total");
  RecordProperty("preemptions", static_cast<int>(preempted));
  EXPECT_GT(preempted, 0) << "nothing was preempted: the budget no longer binds";
  EXPECT_GT(copied, 0) << "no prompt started from a cached prefix";
  EXPECT_EQ(cluster.ActiveSequences(), static_cast<int64_t>(options.workers * parked));
  EXPECT_EQ(WaitForSample(metrics_port, "llmint8_worker_group_epoch", 1, 1), 1)
      << "the group re-formed: a worker failed under the load";

  Generated after = Generate(*cluster.NewStub(), GreedyRequest(kProbe, kProbeTokens));
  ASSERT_TRUE(after.status.ok()) << after.status.error_message();
  EXPECT_THAT(after.tokens, ElementsAreArray(solo.tokens));
}

}  // namespace
}  // namespace llmint8::e2e
