// loadtest: a serving benchmark. Sends --requests Generate calls to a coordinator from
// --concurrency clients at once (each starts its next request when one ends), with random
// token-id prompts of --prompt_tokens (the first --shared_prefix_tokens the same in all, as a
// shared system or few-shot prefix), or the text of --prompt in every request, and
// --max_new_tokens each (ignore_eos unless --end_at_eos; greedy, or sampled with
// --temperature / --top_k / --top_p, request i seeded with --seed + i; with
// --guided_json, --guided_regex, --guided_choice or --json_object every request carries that
// guide instead, and ends where the guide lets it, at the end-of-sequence token or where
// nothing may follow), and
// reports time to first token, time per output token, request latency (p50 / p90 / p99), the
// throughput of generated tokens over the wall time, and the prompt tokens the server copied
// from its prefix cache.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <limits>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/declare.h"
#include "absl/flags/flag.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/json_text.h"
#include "grpcpp/grpcpp.h"
#include "llmint8/v1/generation.grpc.pb.h"
#include "nlohmann/json.hpp"
#include "tools/client_auth.h"
#include "tools/flags.h"
#include "tools/guide_flags.h"
#include "tools/health_client.h"
#include "tools/subcommands.h"

ABSL_FLAG(int32_t, requests, 64, "loadtest: Generate calls in all");
ABSL_FLAG(int32_t, concurrency, 8, "loadtest: calls in flight at once");
ABSL_FLAG(int32_t, prompt_tokens, 32, "loadtest: prompt length (random token ids)");
ABSL_FLAG(int32_t, shared_prefix_tokens, 0,
          "loadtest: the first this many prompt tokens are the same in every request (a shared "
          "system prompt), the rest random per request");
ABSL_FLAG(bool, end_at_eos, false,
          "loadtest: requests end at the model's end-of-sequence token too, so that their "
          "lengths vary below --max_new_tokens as replies do (default: every request generates "
          "--max_new_tokens)");
ABSL_DECLARE_FLAG(bool, json);  // tools/offline_commands.cc

namespace llmint8::tools {
namespace {

using Clock = std::chrono::steady_clock;

struct Outcome {
  grpc::Status status;
  int tokens = 0;
  double ttft_ms = 0;   // first token
  double total_ms = 0;  // last message
  double tpot_ms = 0;   // (total - ttft) / (tokens - 1)
  int cached_prompt_tokens = 0;  // the final usage's
};

Outcome Call(v1::Generation::Stub& stub, const v1::GenerateRequest& req) {
  Outcome out;
  grpc::ClientContext ctx;
  AddApiKey(ctx);
  const Clock::time_point start = Clock::now();
  auto ms = [&start] {
    return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
  };
  auto reader = stub.Generate(&ctx, req);
  v1::GenerateResponse resp;
  while (reader->Read(&resp)) {
    if (resp.has_usage()) out.cached_prompt_tokens = resp.usage().cached_prompt_tokens();
    if (!resp.has_token_id()) continue;
    if (out.tokens++ == 0) out.ttft_ms = ms();
  }
  out.total_ms = ms();
  out.status = reader->Finish();
  if (out.tokens > 1) out.tpot_ms = (out.total_ms - out.ttft_ms) / (out.tokens - 1);
  return out;
}

// The q-quantile (nearest rank: with 8 values p90 and p99 are the largest; vLLM's benchmark
// interpolates) of `v`; 0 when empty.
double Quantile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t rank = static_cast<size_t>(std::ceil(q * static_cast<double>(v.size())));
  return v[std::clamp<size_t>(rank, 1, v.size()) - 1];
}

// The guide's kind, as the report names it ("none" without one).
const char* GuideName(const std::optional<v1::Guide>& guide) {
  if (!guide.has_value()) return "none";
  switch (guide->kind_case()) {
    case v1::Guide::kJsonObject:
      return "json_object";
    case v1::Guide::kChoice:
      return "guided_choice";
    case v1::Guide::kRegex:
      return "guided_regex";
    case v1::Guide::kJsonSchema:
      return "guided_json";
    default:
      return "none";
  }
}

}  // namespace

int RunLoadtest() {
  const int requests = absl::GetFlag(FLAGS_requests);
  const int concurrency = absl::GetFlag(FLAGS_concurrency);
  int prompt_tokens = absl::GetFlag(FLAGS_prompt_tokens);
  const int shared_prefix = absl::GetFlag(FLAGS_shared_prefix_tokens);
  const std::string prompt_text = absl::GetFlag(FLAGS_prompt);
  if (!prompt_text.empty() && shared_prefix > 0) {
    std::fprintf(stderr,
                 "llmint8 loadtest: --shared_prefix_tokens is for random prompts; --prompt is "
                 "the same whole prompt in every request\n");
    return 2;
  }
  const int max_new = absl::GetFlag(FLAGS_max_new_tokens);
  if (shared_prefix < 0 || shared_prefix > prompt_tokens) {
    std::fprintf(stderr,
                 "llmint8 loadtest: --shared_prefix_tokens must be in [0, "
                 "--prompt_tokens]\n");
    return 2;
  }
  if (requests < 1 || concurrency < 1 || prompt_tokens < 1 || max_new < 1) {
    std::fprintf(stderr,
                 "llmint8 loadtest: --requests, --concurrency, --prompt_tokens and "
                 "--max_new_tokens must be >= 1\n");
    return 2;
  }
  if (absl::GetFlag(FLAGS_seed) < -1) {
    std::fprintf(stderr, "llmint8 loadtest: --seed must be >= 0, or -1 for a new one each run\n");
    return 2;
  }
  if (absl::GetFlag(FLAGS_temperature) <= 0.0f &&
      (absl::GetFlag(FLAGS_top_k) != 0 || absl::GetFlag(FLAGS_top_p) != 1.0f)) {
    // The requests would be greedy, and the report would say nothing of them.
    std::fprintf(stderr,
                 "llmint8 loadtest: --top_k and --top_p shape sampling: set --temperature > 0 "
                 "too (without it every request is greedy)\n");
    return 2;
  }
  // Every request carries the same guide, as a service's one response schema: what guided
  // decoding costs the server.
  const absl::StatusOr<std::optional<v1::Guide>> guide = GuideFromFlags();
  if (!guide.ok()) {
    std::fprintf(stderr, "llmint8 loadtest: %s\n", std::string(guide.status().message()).c_str());
    return 2;
  }
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel_or = CoordinatorChannelFromFlags();
  if (!channel_or.ok()) {
    std::fprintf(stderr, "llmint8 loadtest: %s\n", channel_or.status().ToString().c_str());
    return 2;
  }
  std::shared_ptr<grpc::Channel> channel = *std::move(channel_or);
  const std::string target = CoordinatorTargetFromFlags();
  auto stub = v1::Generation::NewStub(channel);
  // Timings start once the group serves: wait (up to 60 s) for grpc.health.v1 SERVING, which
  // the coordinator reports only while its worker group is ready (and up to 10 s for one that
  // does not answer yet: started a moment before).
  const absl::Time give_up = absl::Now() + absl::Seconds(60);
  const absl::Time unanswered_give_up = absl::Now() + absl::Seconds(10);
  int health = HealthCheck(channel, absl::Seconds(5));
  while (health != 1 && absl::Now() < (health == -1 ? unanswered_give_up : give_up)) {
    absl::SleepFor(absl::Milliseconds(100));
    health = HealthCheck(channel, absl::Seconds(5));
  }
  if (health != 1) {
    std::fprintf(stderr, "llmint8 loadtest: %s %s\n", target.c_str(),
                 health == -1 ? "does not answer health checks"
                              : "is not serving after 60 s (see the coordinator's log: a "
                                "worker group that does not form, or is refused)");
    return 1;
  }
  v1::ModelInfo info;
  {
    grpc::ClientContext ctx;
    AddApiKey(ctx);
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    const grpc::Status s = stub->GetModelInfo(&ctx, v1::GetModelInfoRequest(), &info);
    if (!s.ok()) {
      std::fprintf(stderr, "llmint8 loadtest: GetModelInfo on %s failed: %s%s\n", target.c_str(),
                   s.error_message().c_str(), ApiKeyHint(s.error_code()).c_str());
      return 1;
    }
  }
  // --prompt: the model's BOS token (as in the random prompts) and the server's tokens of it.
  std::vector<int32_t> prompt_ids;
  if (!prompt_text.empty()) {
    grpc::ClientContext ctx;
    AddApiKey(ctx);
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    v1::TokenizeRequest tokenize;
    tokenize.set_text(prompt_text);
    v1::TokenizeResponse tokens;
    const grpc::Status s = stub->Tokenize(&ctx, tokenize, &tokens);
    if (!s.ok()) {
      std::fprintf(stderr, "llmint8 loadtest: Tokenize --prompt on %s failed: %s%s\n",
                   target.c_str(), s.error_message().c_str(), ApiKeyHint(s.error_code()).c_str());
      return 1;
    }
    prompt_ids.push_back(info.bos_token_id());
    prompt_ids.insert(prompt_ids.end(), tokens.token_ids().begin(), tokens.token_ids().end());
    prompt_tokens = static_cast<int>(prompt_ids.size());
  }
  if (info.max_context() > 0 &&
      static_cast<int64_t>(prompt_tokens) + max_new > info.max_context()) {
    std::fprintf(stderr,
                 "llmint8 loadtest: the prompt (--prompt_tokens, or --prompt's tokens) + "
                 "--max_new_tokens = %lld is over the served "
                 "context of %d tokens\n",
                 static_cast<long long>(prompt_tokens) + max_new, info.max_context());
    return 2;
  }
  // Prompts: BOS then uniform ids past the special tokens, the shared prefix's the same in
  // every prompt; the same for every run of a seed. Without --seed each run draws new ones:
  // the prompts of the run before are in the server's prefix cache, and a second run on them
  // would time prefills that copy instead of compute. The report names the seed.
  const int64_t seed = absl::GetFlag(FLAGS_seed) >= 0
                           ? absl::GetFlag(FLAGS_seed)
                           : static_cast<int64_t>(std::random_device{}() & 0x7fffffff);
  // A seed past 32 bits takes both halves (--seed=1 and --seed=4294967297 make different
  // prompts); one within seeds the generator as it always has, so recorded runs repeat.
  std::mt19937 rng(static_cast<uint32_t>(seed));
  if (static_cast<uint64_t>(seed) > std::numeric_limits<uint32_t>::max()) {
    std::seed_seq seeds{static_cast<uint32_t>(static_cast<uint64_t>(seed)),
                        static_cast<uint32_t>(static_cast<uint64_t>(seed) >> 32)};
    rng.seed(seeds);
  }
  std::uniform_int_distribution<int32_t> id(4, std::max(4, info.vocab_size() - 1));
  std::vector<int32_t> prefix = {info.bos_token_id()};
  while (static_cast<int>(prefix.size()) < shared_prefix) prefix.push_back(id(rng));
  std::vector<v1::GenerateRequest> reqs(requests);
  const float temperature = absl::GetFlag(FLAGS_temperature);
  for (int i = 0; i < requests; ++i) {
    v1::GenerateRequest& r = reqs[i];
    if (!prompt_ids.empty()) {
      r.mutable_token_ids()->mutable_ids()->Add(prompt_ids.begin(), prompt_ids.end());
    } else {
      r.mutable_token_ids()->add_ids(info.bos_token_id());
      for (int t = 1; t < prompt_tokens; ++t) {
        r.mutable_token_ids()->add_ids(t < shared_prefix ? prefix[t] : id(rng));
      }
    }
    r.set_max_new_tokens(max_new);
    r.set_priority(absl::GetFlag(FLAGS_priority));
    if (temperature > 0.0f) {  // (the server checks the values)
      r.set_temperature(temperature);
      r.set_top_k(absl::GetFlag(FLAGS_top_k));
      r.set_top_p(absl::GetFlag(FLAGS_top_p));
      r.set_seed(static_cast<uint64_t>(seed) + static_cast<uint64_t>(i));
    }
    // A guided text ends where the guide lets it (the end-of-sequence token allowed only
    // there); a free one runs to max_new_tokens, or with --end_at_eos to that token.
    if (guide->has_value()) {
      *r.mutable_guide() = **guide;
    } else {
      r.set_ignore_eos(!absl::GetFlag(FLAGS_end_at_eos));
    }
  }

  std::vector<Outcome> outcomes(requests);
  std::atomic<int> next{0};
  const Clock::time_point start = Clock::now();
  std::vector<std::thread> clients;
  for (int c = 0; c < std::min(concurrency, requests); ++c) {
    clients.emplace_back([&] {
      for (int i = next++; i < requests; i = next++) outcomes[i] = Call(*stub, reqs[i]);
    });
  }
  for (std::thread& t : clients) t.join();
  const double wall_s = std::chrono::duration<double>(Clock::now() - start).count();

  std::vector<double> ttft, tpot, latency;
  int64_t tokens = 0;
  int64_t cached = 0;
  int failed = 0;
  std::string first_error;
  for (const Outcome& o : outcomes) {
    if (!o.status.ok()) {
      if (failed++ == 0) first_error = o.status.error_message();
      continue;
    }
    tokens += o.tokens;
    cached += o.cached_prompt_tokens;
    ttft.push_back(o.ttft_ms);
    latency.push_back(o.total_ms);
    if (o.tokens > 1) tpot.push_back(o.tpot_ms);
  }
  nlohmann::json j = {
      {"model", info.model()},
      {"dtype", info.dtype()},
      {"tensor_parallel", info.tensor_parallel()},
      {"requests", requests},
      {"seed", seed},
      {"failed", failed},
      {"concurrency", std::min(concurrency, requests)},
      {"prompt_tokens", prompt_tokens},
      {"prompt", prompt_text.empty() ? "random" : "text"},
      {"temperature", temperature},
      {"top_k", absl::GetFlag(FLAGS_top_k)},
      {"top_p", absl::GetFlag(FLAGS_top_p)},
      {"shared_prefix_tokens", shared_prefix},
      {"cached_prompt_tokens", cached},
      {"max_new_tokens", max_new},
      {"end_at_eos", absl::GetFlag(FLAGS_end_at_eos)},
      {"priority", absl::GetFlag(FLAGS_priority)},
      {"guide", GuideName(*guide)},
      {"generated_tokens", tokens},
      {"wall_s", wall_s},
      {"output_tokens_per_s", tokens / wall_s},
      {"requests_per_s", (requests - failed) / wall_s},
  };
  for (const auto& [name, v] : {std::pair{"ttft_ms", &ttft}, std::pair{"tpot_ms", &tpot},
                                std::pair{"latency_ms", &latency}}) {
    // None measured (TPOT when no request had a second token, or every request failed): null.
    if (v->empty()) {
      j[name] = nullptr;
      continue;
    }
    j[name] = {{"p50", Quantile(*v, 0.5)}, {"p90", Quantile(*v, 0.9)}, {"p99", Quantile(*v, 0.99)}};
  }
  if (absl::GetFlag(FLAGS_json)) {
    std::printf("%s\n", JsonText(j, 2).c_str());
  } else {
    std::printf(
        "%s (%s, TP %d): %d requests, %d at once, %d prompt + %d new tokens each (--seed=%lld)\n",
        info.model().c_str(), info.dtype().c_str(), info.tensor_parallel(), requests,
        std::min(concurrency, requests), prompt_tokens, max_new, static_cast<long long>(seed));
    if (guide->has_value()) std::printf("  guided: %s\n", GuideName(*guide));
    if (!prompt_text.empty()) std::printf("  prompt: the text of --prompt in every request\n");
    if (temperature > 0.0f) {
      std::printf("  sampled: temperature %g, top_k %d, top_p %g (request i seeded %lld + i)\n",
                  temperature, absl::GetFlag(FLAGS_top_k), absl::GetFlag(FLAGS_top_p),
                  static_cast<long long>(seed));
    }
    if (guide->has_value() || absl::GetFlag(FLAGS_end_at_eos)) {
      std::printf("  %.1f new tokens a request on average (ended by the %s)\n",
                  requests > failed ? static_cast<double>(tokens) / (requests - failed) : 0.0,
                  guide->has_value() ? "guide" : "end-of-sequence token or --max_new_tokens");
    }
    std::printf("  output %.1f tokens/s, %.2f requests/s over %.2f s; %d failed\n", tokens / wall_s,
                (requests - failed) / wall_s, wall_s, failed);
    std::printf("  prompt tokens copied from the server's prefix cache: %lld of %lld\n",
                static_cast<long long>(cached),
                static_cast<long long>(prompt_tokens) * (requests - failed));
    for (const char* name : {"ttft_ms", "tpot_ms", "latency_ms"}) {
      if (j[name].is_null()) {
        std::printf("  %-10s none measured\n", name);
        continue;
      }
      std::printf("  %-10s p50 %8.1f  p90 %8.1f  p99 %8.1f\n", name, j[name]["p50"].get<double>(),
                  j[name]["p90"].get<double>(), j[name]["p99"].get<double>());
    }
  }
  if (failed > 0) {
    std::fprintf(stderr, "llmint8 loadtest: %d of %d requests failed; the first: %s\n", failed,
                 requests, first_error.c_str());
    return 1;
  }
  return 0;
}

}  // namespace llmint8::tools
