// Checks a GenerateRequest against the served model before anything is queued. Every error
// names the field and says what to change:
//   INVALID_ARGUMENT  empty prompt, max_new_tokens < 0 (or 0 without prompt_logprobs or
//                     echo_prompt),
//                     temperature < 0 or not finite,
//                     top_k < 0, top_p outside (0, 1], repetition_penalty <= 0,
//                     frequency / presence penalty outside [-2, 2], top_logprobs outside
//                     [0, 20], a token id outside the vocabulary,
//                     too many / empty / too long stop sequences, prompt text not UTF-8
//                     (an HTTP request's; over gRPC protobuf cannot parse a string field
//                     that is not UTF-8, answered INVALID_ARGUMENT too:
//                     coordinator/parse_error_interceptor.h);
//   OUT_OF_RANGE      prompt (or its text) longer than the context, or prompt +
//                     max_new_tokens beyond it;
//   FAILED_PRECONDITION  a text prompt or stop sequences for a model without a tokenizer.
#ifndef LLMINT8_COORDINATOR_REQUEST_VALIDATION_H_
#define LLMINT8_COORDINATOR_REQUEST_VALIDATION_H_

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "common/sampling_limits.h"
#include "coordinator/sequence.h"
#include "llmint8/v1/generation.pb.h"

namespace llmint8::coordinator {

class GuideCache;  // guide_cache.h

struct ModelLimits {
  int64_t vocab_size = 0;
  int64_t max_context = 0;  // prompt + generated tokens
  bool has_tokenizer = false;
  // The tokenizer's longest token in bytes (Tokenizer::max_token_bytes); 0: unknown. A text
  // prompt longer than max_context tokens of this many bytes is refused before it is encoded.
  int64_t max_token_bytes = 0;
  int max_stop_sequences = kMaxStopSequences;
  int max_stop_bytes = kMaxStopBytes;
  // The scheduler admits by GenerateRequest.priority (Scheduling::kPriority); else it must be 0.
  bool priority_scheduling = false;
};

// That the request has a prompt in a form this server reads (text needs the tokenizer).
absl::Status ValidatePromptInput(const v1::GenerateRequest& request, const ModelLimits& limits);

// Encoding costs memory and time in proportion to a text: OUT_OF_RANGE, naming it as `what`,
// for one longer than max_context tokens of max_token_bytes each, which no prompt can use.
absl::Status ValidateTextLength(size_t bytes, const ModelLimits& limits, std::string_view what);

// Everything except the prompt's contents (which need the tokenizer first); the prompt's
// presence as ValidatePromptInput. A guided_regex or guided_json guide comes from `guides`
// when given (compiled there once for every request that sends it), else is compiled here.
absl::StatusOr<GenerationParams> ValidateGenerationParams(const v1::GenerateRequest& request,
                                                          const ModelLimits& limits,
                                                          GuideCache* guides = nullptr);

// The prompt's token ids (after tokenization for a text prompt) against vocab and context.
absl::Status ValidatePromptTokens(const std::vector<int32_t>& prompt,
                                  const GenerationParams& params, const ModelLimits& limits);

}  // namespace llmint8::coordinator

#endif  // LLMINT8_COORDINATOR_REQUEST_VALIDATION_H_
