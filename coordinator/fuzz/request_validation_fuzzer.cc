// libFuzzer target: a GenerateRequest decoded from arbitrary bytes (as the gRPC server decodes a
// client's message) through the checks GenerationService::MakeSequences makes before queueing:
// ValidateGenerationParams, tokenization of a text prompt (the bundled OPT model's tokenizer,
// BOS first) and ValidatePromptTokens, against the bundled model's limits with and without a
// tokenizer. Besides "no crash, no sanitizer report", it checks that an accepted request keeps
// the promises of coordinator/request_validation.h: max_new_tokens >= 1 (0 when scoring or
// echoing), prompt + max_new_tokens within the context, every prompt id in the vocabulary,
// temperature finite and
// >= 0, top_k >= 0, top_p in (0, 1], min_p in [0, 1], repetition_penalty finite and > 0,
// frequency and presence penalties in [-2, 2], top_logprobs in [0, 20], logit biases and stop
// token ids in the vocabulary and their limits, min_tokens in [0, max_new_tokens], the stop
// sequences within their limits, and a text prompt or stop sequences only with a tokenizer.
// Build and run: coordinator/fuzz/README.md.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "coordinator/request_validation.h"
#include "coordinator/tokenizer.h"
#include "google/protobuf/stubs/logging.h"
#include "llmint8/v1/generation.pb.h"

namespace {

using llmint8::kMaxLogitBias;
using llmint8::kMaxLogitBiasTokens;
using llmint8::kMaxPenalty;
using llmint8::kMaxStopTokenIds;
using llmint8::kMaxTopLogprobs;
using llmint8::coordinator::GenerationParams;
using llmint8::coordinator::ModelLimits;
using llmint8::coordinator::Tokenizer;
using llmint8::coordinator::TokenizerOptions;
namespace v1 = llmint8::v1;

void Check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "invariant broken: %s\n", what);
    std::abort();
  }
}

const Tokenizer& Tok() {
  static const Tokenizer* tok = [] {
    // Quiet: protobuf logs every message whose string field is not UTF-8.
    google::protobuf::SetLogHandler(nullptr);
    const char* src = std::getenv("LLMINT8_SOURCE_DIR");
    const std::string dir =
        std::string(src != nullptr ? src : LLMINT8_DEFAULT_SOURCE_DIR) + "/models/opt-sotu-cpu";
    auto t = Tokenizer::FromVocabAndMergesFiles(dir + "/vocab.json", dir + "/merges.txt");
    if (!t.ok()) {
      std::fprintf(stderr, "cannot load the tokenizer from %s: %s\n", dir.c_str(),
                   t.status().ToString().c_str());
      std::abort();
    }
    return t->release();
  }();
  return *tok;
}

// The bundled model's limits (config.json: vocab_size 50272, max_position_embeddings 256).
ModelLimits Limits(bool has_tokenizer) {
  ModelLimits l;
  l.vocab_size = 50272;
  l.max_context = 256;
  l.has_tokenizer = has_tokenizer;
  return l;
}

// GenerationService::MakeSequences up to the Sequence.
void Admit(const v1::GenerateRequest& req, const ModelLimits& limits) {
  absl::StatusOr<GenerationParams> params = ValidateGenerationParams(req, limits);
  if (!params.ok()) return;
  const GenerationParams& p = *params;
  // (Its bound by the context is the prompt's, checked below.)
  Check(p.max_new_tokens >= (p.prompt_logprobs || p.echo_prompt ? 0 : 1), "max_new_tokens");
  Check(std::isfinite(p.temperature) && p.temperature >= 0.0f, "temperature");
  Check(p.top_k >= 0, "top_k");
  Check(std::isfinite(p.top_p) && p.top_p > 0.0f && p.top_p <= 1.0f, "top_p");
  Check(std::isfinite(p.repetition_penalty) && p.repetition_penalty > 0.0f, "repetition_penalty");
  Check(p.frequency_penalty >= -kMaxPenalty && p.frequency_penalty <= kMaxPenalty,
        "frequency_penalty");
  Check(p.presence_penalty >= -kMaxPenalty && p.presence_penalty <= kMaxPenalty,
        "presence_penalty");
  Check(p.top_logprobs >= 0 && p.top_logprobs <= kMaxTopLogprobs, "top_logprobs");
  Check(p.min_p >= 0.0f && p.min_p <= 1.0f, "min_p");
  Check(static_cast<int>(p.logit_bias.size()) <= kMaxLogitBiasTokens, "number of logit biases");
  for (const auto& [id, bias] : p.logit_bias) {
    Check(id >= 0 && id < limits.vocab_size, "logit_bias id out of range");
    Check(bias >= -kMaxLogitBias && bias <= kMaxLogitBias, "logit_bias value out of range");
  }
  Check(static_cast<int>(p.stop_token_ids.size()) <= kMaxStopTokenIds, "number of stop ids");
  for (int32_t id : p.stop_token_ids) {
    Check(id >= 0 && id < limits.vocab_size, "stop_token_ids id out of range");
  }
  Check(p.min_tokens >= 0 && p.min_tokens <= p.max_new_tokens, "min_tokens");
  Check(static_cast<int>(p.stop.size()) <= limits.max_stop_sequences, "number of stops");
  for (const std::string& s : p.stop) {
    Check(!s.empty() && static_cast<int>(s.size()) <= limits.max_stop_bytes, "stop length");
  }
  Check(limits.has_tokenizer || (p.stop.empty() && req.prompt_case() != v1::GenerateRequest::kText),
        "text or stop sequences accepted without a tokenizer");

  std::vector<int32_t> prompt;
  if (req.prompt_case() == v1::GenerateRequest::kText) {
    const Tokenizer& tok = Tok();
    absl::StatusOr<std::vector<int32_t>> ids =
        tok.Encode(req.text(), /*add_bos=*/tok.bos_id().has_value());
    if (!ids.ok()) return;
    prompt = *std::move(ids);
  } else {
    prompt.assign(req.token_ids().ids().begin(), req.token_ids().ids().end());
  }
  if (!ValidatePromptTokens(prompt, p, limits).ok()) return;
  Check(!prompt.empty(), "empty prompt accepted");
  Check(static_cast<int64_t>(prompt.size()) + p.max_new_tokens <= limits.max_context,
        "prompt + max_new_tokens beyond the context");
  for (int32_t id : prompt) Check(id >= 0 && id < limits.vocab_size, "prompt id out of range");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  (void)Tok();
  v1::GenerateRequest req;
  if (!req.ParseFromArray(data, static_cast<int>(size))) return 0;
  Admit(req, Limits(/*has_tokenizer=*/true));
  Admit(req, Limits(/*has_tokenizer=*/false));
  return 0;
}
