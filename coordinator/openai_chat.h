// The OpenAI chat completions API (POST /v1/chat/completions) as pure translations, beside the
// completions API of coordinator/openai_api.h, whose request type, sampling fields, usage and
// errors it shares.
//
// The messages become one text prompt. OPT checkpoints are base models and carry no chat
// template, so the prompt is a plain transcript (ChatTranscript):
//   system and developer messages: their text, then a blank line;
//   user messages: "User: <text>" and assistant messages "Assistant: <text>", each followed by
//   a blank line;
//   last "Assistant:", which the model continues. The reply ends where the model starts the
//   next turn: "\n\nUser:" and "\nUser:" are added to the request's stop strings (and are
//   not in the reply), so a request may carry two fewer stop strings than /v1/completions;
//   not to one guided by choices or JSON (it ends on its own).
// A message's content is a string or an array of {"type": "text", "text": ...} parts (joined by
// newlines, as vLLM joins them); other parts (images, audio) are refused: InvalidArgument naming
// the field. An assistant's tool_calls show in its turn as "[call name(arguments)]", a tool message
// as "Tool: <text>".
//
// Request fields beside messages: those of the completions API (openai_api.h: n, temperature,
// top_p, seed, stop, stream, stream_options, penalties, logit_bias and vLLM's extensions), and
//   max_completion_tokens (or the older max_tokens; neither: the rest of the context, or
//   the server's default_max_tokens if less; with --preemption=off the scheduler reserves KV
//   cache for all of it, as for any max_tokens);
//   logprobs (true/false) and top_logprobs (0..20, with logprobs true);
//   tools with tool_choice "none", a named function ({"type": "function", "function":
//   {"name"}}) or "required" with one tool: the named call's arguments are the reply, guided to
//   its parameters schema (json_schema.h) and answered as message.tool_calls [{id, type
//   "function", function {name, arguments}}] with content null (streamed: the id, type and
//   name in the first delta, the arguments piece by piece), finish_reason "stop" once the
//   arguments are whole, as OpenAI's named tool_choice answers ("tool_calls" for
//   "required", as OpenAI's and vLLM's); "auto" (the default beside
//   tools) is refused, since an OPT model has no format of its own for choosing a tool;
//   response_format and the guides as in openai_api.h (JSON mode, response_format json_schema,
//   guided_choice, guided_regex, guided_json), not beside a named tool.
//
// Answers: a chat.completion object (choices[i].message {role, content}, logprobs {content:
// [{token, logprob, bytes, top_logprobs: [{token, logprob, bytes}]}]}, finish_reason, usage),
// or chat.completion.chunk events whose choices carry a delta (the role in each choice's first).
// The content is the reply's text from its first character that is not ASCII whitespace (the
// model's space or newline after the transcript's "Assistant:" is not part of it), but for a
// reply guided by choices or a regular expression, which is the guide's text as it stands.
// A token's "token" is its text alone (U+FFFD for part of a character), its "bytes" its raw
// bytes: the generated tokens' bytes join into their decoded bytes, the characters they split
// included (which is the reply's content, its leading whitespace included, unless a stop string
// cut it or an ignored end token was generated); null without a tokenizer.
//
// Thread-safe: pure functions, except that ChatChunkEvent updates its ChatStream (one per
// streamed choice, used by one thread).
#ifndef LLMINT8_COORDINATOR_OPENAI_CHAT_H_
#define LLMINT8_COORDINATOR_OPENAI_CHAT_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "coordinator/openai_api.h"
#include "llmint8/v1/generation.pb.h"

namespace llmint8::coordinator::openai {

// The stop strings that end a reply at the transcript's next user turn, after one newline or
// the blank line the transcript puts between turns (the earlier match cuts, so a reply that
// ends in a blank line and a turn keeps neither).
inline constexpr std::string_view kChatTurnStops[] = {"\n\nUser:", "\nUser:"};

struct ChatMessage {
  std::string role;  // system, developer, user, assistant, tool
  std::string content;
  std::vector<std::string> calls = {};  // an assistant's tool calls: "name(arguments)"
};
// The prompt for `messages`, as above.
std::string ChatTranscript(const std::vector<ChatMessage>& messages);

// `model_id`: the served model; a request naming another is NotFound. The request has
// chat = true and one text prompt. `defaults`: what sampling fields left out get (not
// max_tokens: see RequestDefaults).
absl::StatusOr<CompletionRequest> ParseChatCompletionRequest(std::string_view body,
                                                             std::string_view model_id,
                                                             const RequestDefaults& defaults = {});

// The whole answer of a non-streamed request, from each choice's responses (index order).
std::string ChatCompletionJson(const CompletionRequest& request,
                               const std::vector<std::vector<v1::GenerateResponse>>& choices,
                               std::string_view completion_id, int64_t created,
                               std::string_view model_id);

// Where one streamed choice stands: its first event's delta carries the role, and the reply's
// leading whitespace is dropped until its content begins. The logprobs keep every token as
// sampled (" Hi", not "Hi"): they are the tokens', and the content's first token may differ
// from its text by that whitespace (vLLM does not trim the content at all).
struct ChatStream {
  bool role_sent = false;
  bool content_started = false;
};

// One server-sent event of a streamed request: choice `index`'s `response`, `stream` that
// choice's state (updated); `usage_so_far` as CompletionChunkEvent's.
std::string ChatChunkEvent(const CompletionRequest& request, size_t index,
                           const v1::GenerateResponse& response, ChatStream& stream,
                           std::string_view completion_id, int64_t created,
                           std::string_view model_id, const v1::Usage* usage_so_far = nullptr);

}  // namespace llmint8::coordinator::openai

#endif  // LLMINT8_COORDINATOR_OPENAI_CHAT_H_
