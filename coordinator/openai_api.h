// The OpenAI-compatible completions API (POST /v1/completions, GET /v1/models) as pure
// translations between its JSON and the Generation service's messages; the HTTP server
// (coordinator/http_api.h) does the I/O.
//
// Request fields (https://platform.openai.com/docs/api-reference/completions):
//   prompt        a string, an array of token ids, or a batch: an array of strings or of
//                 arrays of token ids (one choice per prompt, or n: see n), at most 1024;
//   n             completions per prompt, 1..128: choice i * n + j is prompt i's j-th, sampled
//                 with seed + j when a seed is given (so j 0 is what the prompt alone gives);
//                 all the choices of a request are queued at once or the request is refused
//                 (429 when the queue lacks room for them now); usage counts each prompt once;
//   max_tokens    default 16, or the model's (RequestDefaults); temperature default 1 (0:
//                 greedy), or the model's; top_p default 1, or the model's; seed; stop
//                 (a string or an array of strings); stream; stream_options.include_usage
//                 (and vLLM's continuous_usage_stats: usage in every chunk, see
//                 CompletionChunkEvent; stream_options other than {} only with stream true, as vLLM's);
//                 logprobs (an integer 0..20: each token's logprob, and top_logprobs holds
//                 that many most likely tokens' {text: logprob} per position, the sampled
//                 token's too (alone with 0), as OpenAI does; a token without text is
//                 "token_id:<id>" as in vLLM; the chat API's boolean true: logprobs only;
//                 text_offset counts bytes of the choice's text, per chunk when streamed);
//                 frequency_penalty, presence_penalty ([-2, 2], over the generated tokens);
//                 model (must be the served model's id when given);
//                 echo (the prompt's text, and with logprobs its tokens with their logprobs
//                 given the tokens before them, null for the first, lead the choice; with
//                 logprobs the service scores the prompt, in chunks beside the other
//                 sequences' steps (coordinator/scheduler.h), without it only returns its
//                 tokens; with max_tokens 0 the prompt is only echoed (or scored);
//                 lm-evaluation-harness scores with echo, logprobs 1 and max_tokens 1);
//   logit_bias    {"token id": bias in [-100, 100]}, at most 300 ids: added to the logits
//                 before sampling (logprobs stay the model's own);
//   best_of (1 or n), suffix (empty) are accepted only at those values, and so are vLLM's
//                 fields this server does not serve (use_beam_search false, length_penalty 1,
//                 allowed_token_ids and prompt_logprobs null, bad_words [],
//                 include_stop_str_in_output false, skip_special_tokens and
//                 spaces_between_special_tokens true): refused otherwise, never ignored; user
//                 is ignored;
//   extensions as vLLM names them: top_k (0 or -1: off), min_p, repetition_penalty (each
//                 off by default, or the model's),
//                 ignore_eos, stop_token_ids (ids that end the completion: in token_ids, not
//                 in the text), min_tokens (no end, by eos, stop ids or stop strings, before
//                 that many; a stop string must end in the text after them),
//                 return_token_ids (adds the generated token_ids to the choice),
//                 truncate_prompt_tokens (keep the prompt's last k >= 1 tokens; a text
//                 prompt keeps its BOS and its last k - 1; an echo is of the kept tokens);
//   guided decoding (GenerateRequest.guide, coordinator/output_constraint.h): response_format
//                 {"type": "json_object"} or {"type": "json_schema", "json_schema":
//                 {"schema": {...}}} ({"type": "text"}: none), vLLM's guided_choice (an
//                 array of strings), guided_regex (coordinator/guided_regex.h), guided_json
//                 (a JSON Schema, or a string holding one: coordinator/json_schema.h) and
//                 structured_outputs {"choice": [...]}, {"regex": "..."}, {"json": ...} or
//                 {"json_object": true}; at most one guide. vLLM's guided_grammar,
//                 guided_whitespace_pattern and structured_outputs grammar / structural_tag /
//                 whitespace_pattern / disable_any_whitespace true are InvalidArgument
//                 (disable_additional_properties is what a schema's objects do anyway).
// Unknown fields are ignored (clients send their own defaults). A field of the wrong type is
// InvalidArgument naming it. Value checks (ranges, context length) are the service's.
//
// Errors map to HTTP as google.rpc does (InvalidArgument / OutOfRange / FailedPrecondition
// 400, NotFound 404, ResourceExhausted 429, Cancelled 499, Unimplemented 501, Unavailable 503,
// DeadlineExceeded 504, the rest 500) with an OpenAI error body.
//
// Thread-safe: pure functions.
#ifndef LLMINT8_COORDINATOR_OPENAI_API_H_
#define LLMINT8_COORDINATOR_OPENAI_API_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "llmint8/v1/generation.pb.h"
#include "model/generation_config.h"

namespace llmint8::coordinator::openai {

inline constexpr int32_t kMaxN = 128;  // OpenAI's own limit on n
// Prompts in one request: more are refused while parsing, before a request is built for each
// (the service then refuses more sequences than its queue holds).
inline constexpr int32_t kMaxPrompts = 1024;

struct CompletionRequest {
  v1::GenerateRequest generate;  // the parameters every choice shares, with the first prompt
  // Every prompt of the request, in order (prompts[0]'s is generate's); each holds only its
  // prompt (text or token_ids).
  std::vector<v1::GenerateRequest> prompts;
  int32_t n = 1;  // choices per prompt
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage: a last chunk with usage
  // stream_options.continuous_usage_stats (vLLM's), with include_usage: every chunk carries its
  // choice's usage so far (its prompt, the tokens generated up to and with this chunk).
  bool continuous_usage = false;
  bool logprobs = false;
  // logprobs given as a count (0 included): top_logprobs lists that many candidates and the
  // sampled token per position, as OpenAI does; the boolean true lists none (null).
  bool top_logprobs_listed = false;
  bool return_token_ids = false;
  bool echo = false;  // the prompt's tokens lead the choice's text and logprobs
  // POST /v1/chat/completions (coordinator/openai_chat.h): answered as chat.completion objects.
  bool chat = false;
  // No max_tokens was given: the reply may fill the context up to generate.max_new_tokens, or
  // when that is 0 (the chat API) up to the service's default_max_tokens (the service sets each
  // sequence's max_new_tokens to what its prompt leaves of that; GenerationService::AdmitAll).
  bool fill_context = false;
  // The field that set generate.max_new_tokens, for errors in the client's words: the chat API
  // takes max_completion_tokens or the older max_tokens.
  std::string max_tokens_field = "max_tokens";
  // The chat API's tool_choice named this function (or "required" with one tool): each
  // choice's reply is its arguments, a JSON value under its parameters schema (guide
  // json_schema), answered as the message's tool_calls (coordinator/openai_chat.h).
  std::string tool_call_name;
  // tool_choice "required": a reply that ends is finish_reason "tool_calls", as OpenAI's and
  // vLLM's (a named tool_choice's is "stop").
  bool tool_choice_required = false;
};

// What a request gets for the sampling fields it leaves out: OpenAI's defaults, or those of the
// model's generation_config.json (RequestDefaultsFrom), as vLLM's --generation-config auto.
struct RequestDefaults {
  float temperature = 1.0f;
  std::optional<float> top_p;
  std::optional<int32_t> top_k;
  std::optional<float> min_p;
  std::optional<float> repetition_penalty;
  // A completion without max_tokens generates up to this many tokens, fewer where its prompt
  // leaves less of the context; unset: 16 (OpenAI's default), the context unchecked. The chat
  // API's reply without one fills the context up to the server's default_max_tokens
  // (coordinator/openai_chat.h), which the coordinator takes from here when its flag is unset.
  std::optional<int32_t> max_tokens;

  friend bool operator==(const RequestDefaults&, const RequestDefaults&) = default;
};

// The file's fields as vLLM's --generation-config auto takes them: temperature, top_k (0:
// off), top_p, min_p, repetition_penalty and max_new_tokens (as max_tokens) where set, the
// OpenAI API's defaults elsewhere (transformers' own, such as top_k 50, are not applied);
// except that do_sample false is greedy, as in transformers' generate() (temperature 0;
// top_k, top_p and min_p not used; a repetition penalty still applies, as in greedy search).
// An unset do_sample samples, as in vLLM (transformers would search greedily).
RequestDefaults RequestDefaultsFrom(const model::GenerationConfig& config);

// The served model as /v1/models lists it.
struct ModelCard {
  std::string id;           // e.g. "opt-sotu-cpu" (the model directory's name)
  int64_t max_context = 0;  // max_model_len
  int64_t created = 0;      // unix seconds (the server's start)
};

// `model_id`: the served model; a request naming another is NotFound. `defaults`: what fields
// left out get.
absl::StatusOr<CompletionRequest> ParseCompletionRequest(std::string_view body,
                                                         std::string_view model_id,
                                                         const RequestDefaults& defaults = {});

// vLLM's tokenizer routes, with the server's tokenizer:
//   POST /tokenize   {"prompt": text, "add_special_tokens": true (BOS first)} ->
//                    {"count", "max_model_len", "tokens": [ids]}
//   POST /detokenize {"tokens": [ids]} -> {"prompt": text}
// "model", when given, must be the served model's id (NotFound otherwise).
struct TokenizeRequest {
  std::string text;
  bool add_special_tokens = true;
};
absl::StatusOr<TokenizeRequest> ParseTokenizeRequest(std::string_view body,
                                                     std::string_view model_id);
std::string TokenizeJson(const std::vector<int32_t>& ids, int64_t max_context);
absl::StatusOr<std::vector<int32_t>> ParseDetokenizeRequest(std::string_view body,
                                                            std::string_view model_id);
std::string DetokenizeJson(std::string_view text);

// The model id of a --model value: a directory's last path component, else the spec itself.
std::string ModelId(std::string_view model_spec);
// InvalidArgument unless `name` can be a model id given by the operator
// (--served_model_name): 1 to 256 bytes of UTF-8, no ASCII space or control character.
absl::Status CheckServedModelName(std::string_view name);

// The whole answer of a non-streamed request, from the responses the service streamed for
// each choice (in index order; the last response of each carries its finish reason and usage).
std::string CompletionJson(const CompletionRequest& request,
                           const std::vector<std::vector<v1::GenerateResponse>>& choices,
                           std::string_view completion_id, int64_t created,
                           std::string_view model_id);

// One server-sent event ("data: {...}\n\n") of a streamed request: choice `index`'s
// `response`. `token_start`: where this event's first token begins in the choice's text (the
// bytes of the choice's tokens in earlier events), advanced past this one's, so that logprobs'
// text_offset counts from the start of the choice's text as a non-streamed answer's does
// (null: from this event's first token). `usage_so_far`: the choice's usage after this event
// (AddToUsage), the chunk's usage with request.continuous_usage (null: the chunk's usage is
// null while the client waits for the usage event, as OpenAI's).
std::string CompletionChunkEvent(const CompletionRequest& request, size_t index,
                                 const v1::GenerateResponse& response,
                                 std::string_view completion_id, int64_t created,
                                 std::string_view model_id, size_t* token_start = nullptr,
                                 const v1::Usage* usage_so_far = nullptr);
// A streamed choice's usage after `response`: its final response's usage (which counts cached
// prompt tokens), else one completion token more for a response with a token. Start from a
// Usage with the choice's prompt_tokens.
void AddToUsage(const v1::GenerateResponse& response, v1::Usage& usage);
// The request's usage from each choice's (its final response's; index order): every choice's
// completion tokens, each prompt's tokens once.
v1::Usage TotalUsage(const CompletionRequest& request, const std::vector<v1::Usage>& choices);
// With stream_options.include_usage, the event after the last choice's: no choices, the usage
// (a chat.completion.chunk for the chat API).
std::string UsageEvent(const CompletionRequest& request, const v1::Usage& usage,
                       std::string_view completion_id, int64_t created, std::string_view model_id);
inline constexpr std::string_view kDoneEvent = "data: [DONE]\n\n";

std::string ModelsJson(const ModelCard& card);
// GET /v1/models/{id}: the model object alone (OpenAI's models.retrieve).
std::string ModelJson(const ModelCard& card);

int HttpStatus(absl::StatusCode code);
// {"error": {"message", "type", "param", "code"}}. The type follows the HTTP status: 429
// rate_limit_error, other 4xx invalid_request_error, 5xx server_error; param is the request
// field the message names ("field 'n' must be ...", or a refusal of the service's validation
// that starts with one: "temperature is -1; ..."), else null; code the gRPC code's name.
std::string ErrorJson(const absl::Status& status);

}  // namespace llmint8::coordinator::openai

#endif  // LLMINT8_COORDINATOR_OPENAI_API_H_
