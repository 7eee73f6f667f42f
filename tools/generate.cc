// generate: a Generation client that streams the answer to the terminal.
#include <chrono>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>

#include "absl/flags/flag.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/grpc_status.h"
#include "coordinator/tokenizer.h"
#include "grpcpp/grpcpp.h"
#include "llmint8/v1/generation.grpc.pb.h"
#include "tools/client_auth.h"
#include "tools/flags.h"
#include "tools/guide_flags.h"
#include "tools/health_client.h"
#include "tools/subcommands.h"

namespace llmint8::tools {
namespace {

const char* FinishName(v1::FinishReason r) {
  switch (r) {
    case v1::FINISH_REASON_LENGTH:
      return "length";
    case v1::FINISH_REASON_STOP:
      return "stop";
    case v1::FINISH_REASON_EOS:
      return "eos";
    case v1::FINISH_REASON_CANCELLED:
      return "cancelled";
    default:
      return "unspecified";
  }
}

}  // namespace

// --stop_token_ids and --logit_bias into `req`; the error says which entry is bad (the server
// checks the ranges and counts).
std::string IdFlagsInto(v1::GenerateRequest& req) {
  for (const std::string& s : absl::GetFlag(FLAGS_stop_token_ids)) {
    int32_t id = 0;
    if (!absl::SimpleAtoi(s, &id)) {
      return absl::StrCat("--stop_token_ids entry '", absl::CHexEscape(s), "' is not a token id");
    }
    req.add_stop_token_ids(id);
  }
  for (const std::string& s : absl::GetFlag(FLAGS_logit_bias)) {
    const size_t colon = s.rfind(':');
    int32_t id = 0;
    float bias = 0;
    if (colon == std::string::npos || !absl::SimpleAtoi(s.substr(0, colon), &id) ||
        !absl::SimpleAtof(s.substr(colon + 1), &bias)) {
      return absl::StrCat("--logit_bias entry '", absl::CHexEscape(s),
                          "' is not ID:BIAS (e.g. 50118:-100)");
    }
    (*req.mutable_logit_bias())[id] = bias;
  }
  return "";
}

// The prompt flags, checked before anything is sent; empty when they are fine.
std::string PromptFlagsError() {
  const std::string& prompt = absl::GetFlag(FLAGS_prompt);
  if (!prompt.empty() && !absl::GetFlag(FLAGS_token_ids).empty()) {
    return "pass --prompt or --token_ids, not both";
  }
  if (prompt.empty() && absl::GetFlag(FLAGS_token_ids).empty()) {
    return "pass the prompt: --prompt=TEXT, or --token_ids=ID,ID,...";
  }
  if (std::optional<size_t> bad = coordinator::FindInvalidUtf8(prompt); bad.has_value()) {
    return absl::StrCat("--prompt is not valid UTF-8 (byte ", *bad,
                        "); pass text, or the ids with --token_ids");
  }
  for (const std::string& stop : absl::GetFlag(FLAGS_stop).values) {
    if (std::optional<size_t> bad = coordinator::FindInvalidUtf8(stop); bad.has_value()) {
      return absl::StrCat("--stop '", absl::CHexEscape(stop), "' is not valid UTF-8 (byte ", *bad,
                          "); stop strings are text");
    }
  }
  if (absl::GetFlag(FLAGS_seed) < -1) {
    return "--seed must be >= 0, or -1 for a seed the server picks";
  }
  if (const double t = absl::GetFlag(FLAGS_timeout); !(t >= 0) || t > 1e7) {
    return "--timeout must be >= 0 and at most 1e7 seconds (0: none)";
  }
  return "";
}

int RunGenerate() {
  if (const std::string error = PromptFlagsError(); !error.empty()) {
    std::fprintf(stderr, "llmint8 generate: %s\n", error.c_str());
    return 2;
  }
  const absl::StatusOr<std::optional<v1::Guide>> guide = GuideFromFlags();
  if (!guide.ok()) {
    std::fprintf(stderr, "llmint8 generate: %s\n", std::string(guide.status().message()).c_str());
    return 2;
  }
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = CoordinatorChannelFromFlags();
  if (!channel.ok()) {
    std::fprintf(stderr, "llmint8 generate: %s\n", channel.status().ToString().c_str());
    return 2;
  }
  auto stub = v1::Generation::NewStub(*channel);

  v1::GenerateRequest req;
  if (!absl::GetFlag(FLAGS_token_ids).empty()) {
    for (const std::string& s : absl::GetFlag(FLAGS_token_ids)) {
      int32_t id = 0;
      if (!absl::SimpleAtoi(s, &id)) {
        std::fprintf(stderr, "llmint8 generate: --token_ids entry '%s' is not an integer\n",
                     s.c_str());
        return 2;
      }
      req.mutable_token_ids()->add_ids(id);
    }
  } else {
    req.set_text(absl::GetFlag(FLAGS_prompt));
  }
  req.set_max_new_tokens(absl::GetFlag(FLAGS_max_new_tokens));
  req.set_temperature(absl::GetFlag(FLAGS_temperature));
  req.set_top_k(absl::GetFlag(FLAGS_top_k));
  req.set_top_p(absl::GetFlag(FLAGS_top_p));
  if (absl::GetFlag(FLAGS_repetition_penalty) != 1.0f) {
    req.set_repetition_penalty(absl::GetFlag(FLAGS_repetition_penalty));
  }
  if (absl::GetFlag(FLAGS_seed) >= 0) req.set_seed(absl::GetFlag(FLAGS_seed));
  for (const std::string& s : absl::GetFlag(FLAGS_stop).values) req.add_stop(s);
  req.set_frequency_penalty(absl::GetFlag(FLAGS_frequency_penalty));
  req.set_presence_penalty(absl::GetFlag(FLAGS_presence_penalty));
  req.set_min_p(absl::GetFlag(FLAGS_min_p));
  req.set_min_tokens(absl::GetFlag(FLAGS_min_tokens));
  req.set_priority(absl::GetFlag(FLAGS_priority));
  // 0 leaves it unset (the whole prompt); a negative value is the server's to refuse.
  if (absl::GetFlag(FLAGS_truncate_prompt_tokens) != 0) {
    req.set_truncate_prompt_tokens(absl::GetFlag(FLAGS_truncate_prompt_tokens));
  }
  req.set_logprobs(absl::GetFlag(FLAGS_logprobs));
  req.set_top_logprobs(absl::GetFlag(FLAGS_top_logprobs));
  req.set_prompt_logprobs(absl::GetFlag(FLAGS_prompt_logprobs));
  req.set_ignore_eos(absl::GetFlag(FLAGS_ignore_eos));
  req.set_echo_prompt(absl::GetFlag(FLAGS_echo_prompt));
  if (guide->has_value()) *req.mutable_guide() = **guide;
  if (const std::string error = IdFlagsInto(req); !error.empty()) {
    std::fprintf(stderr, "llmint8 generate: %s\n", error.c_str());
    return 2;
  }

  // Whether text comes back (models served without a tokenizer stream token ids only).
  bool has_tokenizer = true;
  {
    grpc::ClientContext ctx;
    AddApiKey(ctx);
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    v1::GetModelInfoRequest info_req;
    v1::ModelInfo info;
    if (stub->GetModelInfo(&ctx, info_req, &info).ok()) has_tokenizer = info.has_tokenizer();
  }

  // A coordinator whose worker group is not ready queues the request: say so, or the wait
  // looks like a hang.
  if (HealthCheck(*channel, absl::Seconds(5)) == 2) {
    std::fprintf(
        stderr,
        "llmint8 generate: the coordinator's worker group is not ready; the request "
        "waits in its queue%s\n",
        absl::GetFlag(FLAGS_timeout) > 0 ? " (up to --timeout)" : " (--timeout bounds the wait)");
  }
  grpc::ClientContext ctx;

  AddApiKey(ctx);
  const double timeout = absl::GetFlag(FLAGS_timeout);
  if (timeout > 0) {
    ctx.set_deadline(std::chrono::system_clock::now() +
                     std::chrono::milliseconds(static_cast<int64_t>(timeout * 1000)));
  }
  std::unique_ptr<grpc::ClientReader<v1::GenerateResponse>> reader = stub->Generate(&ctx, req);
  v1::GenerateResponse resp;
  v1::GenerateResponse last;
  double prompt_total = 0;
  bool streamed = false;  // a response came: the text's line is ended, even after an error
  while (reader->Read(&resp)) {
    streamed = true;
    const bool scored = absl::GetFlag(FLAGS_prompt_logprobs);
    for (const v1::PromptToken& t : resp.prompt_tokens()) {
      // The echo: the prompt's text where the output goes, before the generated text.
      if (absl::GetFlag(FLAGS_echo_prompt)) {
        if (has_tokenizer) {
          std::fwrite(t.text().data(), 1, t.text().size(), stdout);
        } else {
          std::printf("%d ", t.token_id());
        }
      }
      if (!scored) continue;
      std::fprintf(stderr, "[prompt %d '%s': %s]", t.token_id(), absl::CHexEscape(t.text()).c_str(),
                   t.has_logprob() ? absl::StrCat(t.logprob()).c_str() : "-");
      prompt_total += t.logprob();
    }
    if (scored && resp.prompt_tokens_size() > 0) {
      std::fprintf(stderr, "\n[prompt logprob sum %.4f over %d tokens]\n", prompt_total,
                   resp.prompt_tokens_size() - 1);
    }
    if (has_tokenizer) {
      std::fwrite(resp.text().data(), 1, resp.text().size(), stdout);
    } else if (resp.has_token_id()) {
      std::printf("%d ", resp.token_id());
    }
    if (resp.has_logprob()) std::fprintf(stderr, "[%d: %.4f]", resp.token_id(), resp.logprob());
    if (resp.top_logprobs_size() > 0) {
      std::fputs("{", stderr);
      for (const v1::TopLogprob& t : resp.top_logprobs()) {
        // Escaped, so that a candidate's newline or control byte keeps the list on one line.
        const std::string text =
            t.text().empty() ? std::string() : absl::StrCat(" '", absl::CHexEscape(t.text()), "'");
        std::fprintf(stderr, " %d%s: %.4f", t.token_id(), text.c_str(), t.logprob());
      }
      std::fputs(" }", stderr);
    }
    std::fflush(stdout);
    last = resp;
  }
  grpc::Status status = reader->Finish();
  if (streamed) std::printf("\n");
  std::fflush(stdout);  // the text's end before the summary on stderr, also through a pipe
  if (!status.ok()) {
    // e.g. "UNAVAILABLE: Generate on 127.0.0.1:50051: failed to connect ...".
    std::fprintf(stderr, "llmint8 generate: %s%s\n",
                 FromGrpcStatus(status, absl::StrCat("Generate on ", CoordinatorTargetFromFlags()))
                     .ToString()
                     .c_str(),
                 ApiKeyHint(status.error_code()).c_str());
    return 1;
  }
  const int cached = last.usage().cached_prompt_tokens();
  std::fprintf(stderr,
               "[finish: %s; %d prompt%s + %d generated tokens; first token %.1f ms, total "
               "%.1f ms, %.1f tokens/s]\n",
               FinishName(last.finish_reason()), last.usage().prompt_tokens(),
               cached > 0 ? absl::StrCat(" (", cached, " cached)").c_str() : "",
               last.usage().completion_tokens(), last.timings().time_to_first_token_ms(),
               last.timings().total_ms(), last.timings().decode_tokens_per_second());
  return 0;
}

}  // namespace llmint8::tools
