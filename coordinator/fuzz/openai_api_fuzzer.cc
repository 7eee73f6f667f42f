// libFuzzer target: the body of POST /v1/completions (arbitrary client bytes) through
// ParseCompletionRequest, then the JSON the server answers with: CompletionJson and
// CompletionChunkEvent for fake responses whose text pieces are slices of the input (so may be
// invalid UTF-8, as a piece of model output can be), and ErrorJson with the input as the
// message. Besides "no crash, no exception, no sanitizer report", it checks:
//   - every answer is valid JSON (text that is not UTF-8 is replaced, never thrown on) and a
//     text that was valid UTF-8 comes back unchanged;
//   - token-id prompts (one, or a batch) are taken exactly: each id equals its JSON integer,
//     and an integer outside int32 is InvalidArgument (never wrapped into range);
//   - the answer has one choice per prompt and n, in index order, and its usage counts every
//     choice's completion tokens and each prompt's tokens once;
//   - "logprobs" given as an integer in [0, 20] is accepted and asks for that many
//     top_logprobs; a larger one is refused;
//   - an echoed prompt leads the choice's text and its logprobs tokens.
// Build and run: coordinator/fuzz/README.md.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/ascii.h"
#include "coordinator/openai_api.h"
#include "coordinator/openai_chat.h"
#include "nlohmann/json.hpp"

namespace {

namespace openai = llmint8::coordinator::openai;
namespace v1 = llmint8::v1;
using json = nlohmann::json;

constexpr std::string_view kModel = "opt-sotu-cpu";
constexpr std::string_view kId = "cmpl-fuzz";
constexpr int64_t kCreated = 1700000000;

void Check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "invariant broken: %s\n", what);
    std::abort();
  }
}

bool IsUtf8(const std::string& s) {
  try {
    (void)json(s).dump();
    return true;
  } catch (const json::type_error&) {
    return false;
  }
}

json MustParse(std::string_view text) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  Check(!j.is_discarded() && j.is_object(), "an answer is not a JSON object");
  return j;
}

// "data: {...}\n\n" events, each a JSON object.
std::vector<json> ParseEvents(std::string_view events) {
  std::vector<json> out;
  while (!events.empty()) {
    Check(events.substr(0, 6) == "data: ", "an event does not start with 'data: '");
    const size_t end = events.find("\n\n");
    Check(end != std::string_view::npos, "an event does not end with a blank line");
    out.push_back(MustParse(events.substr(6, end - 6)));
    events.remove_prefix(end + 2);
  }
  return out;
}

bool IsTokenArray(const json& p) {
  if (!p.is_array() || p.empty()) return false;
  for (const json& t : p) {
    if (!t.is_number_integer()) return false;
  }
  return true;
}

// The body's prompts as the parser should read them when they are token ids: one array, or a
// batch of non-empty arrays. Empty when the prompt is not of that form.
std::vector<const json*> TokenPrompts(const json& body) {
  if (!body.is_object()) return {};
  auto it = body.find("prompt");
  if (it == body.end()) return {};
  if (IsTokenArray(*it)) return {&*it};
  std::vector<const json*> batch;
  if (!it->is_array()) return {};
  for (const json& p : *it) {
    if (!IsTokenArray(p)) return {};
    batch.push_back(&p);
  }
  return batch;
}

bool InInt32(const json& t) {
  if (t.is_number_unsigned()) {
    return t.get<uint64_t>() <= static_cast<uint64_t>(std::numeric_limits<int32_t>::max());
  }
  const int64_t v = t.get<int64_t>();
  return v >= std::numeric_limits<int32_t>::min() && v <= std::numeric_limits<int32_t>::max();
}

void CheckParse(std::string_view body, const absl::StatusOr<openai::CompletionRequest>& r) {
  const json parsed = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (parsed.is_discarded()) {
    Check(!r.ok() && r.status().code() == absl::StatusCode::kInvalidArgument,
          "a body that is not JSON was accepted");
    return;
  }
  const std::vector<const json*> prompts = TokenPrompts(parsed);
  bool all_int32 = true;
  for (const json* ids : prompts) {
    for (const json& t : *ids) all_int32 = all_int32 && InInt32(t);
  }
  if (!all_int32) {
    Check(!r.ok(), "a prompt token id outside int32 was accepted");
  } else if (r.ok() && !prompts.empty()) {
    Check(r->prompts.size() == prompts.size(), "the batch has a different number of prompts");
    for (size_t k = 0; k < prompts.size() && k < r->prompts.size(); ++k) {
      const json& ids = *prompts[k];
      const auto& got = r->prompts[k].token_ids().ids();
      Check(got.size() == static_cast<int>(ids.size()), "a prompt has a different length");
      for (int i = 0; i < got.size() && i < static_cast<int>(ids.size()); ++i) {
        Check(static_cast<int64_t>(got[i]) == ids[i].get<int64_t>(),
              "a prompt token id differs from its JSON integer");
      }
    }
  }
  if (parsed.is_object() && parsed.contains("logprobs")) {
    const json& lp = parsed["logprobs"];
    // "-0" is a signed integer whose value is 0: in range too.
    const bool in_range = lp.is_number_unsigned() ? lp.get<uint64_t>() <= 20
                          : lp.is_number_integer()
                              ? lp.get<int64_t>() >= 0 && lp.get<int64_t>() <= 20
                              : false;
    if (in_range) {
      Check(r.ok() ? r->logprobs &&
                         r->generate.top_logprobs() == static_cast<int32_t>(lp.get<int64_t>())
                   : r.status().message().find("'logprobs'") == absl::string_view::npos,
            "an integer logprobs in [0, 20] was refused or did not ask for its top_logprobs");
    } else if (lp.is_number_integer()) {
      Check(!r.ok(), "an integer logprobs outside [0, 20] was accepted");
    }
  }
}

// A GenerateResponse stream as the service produces it for `request`: tokens with text pieces
// taken from `bytes`, then the finish.
std::vector<v1::GenerateResponse> FakeResponses(const openai::CompletionRequest& request,
                                                std::string_view bytes) {
  std::vector<v1::GenerateResponse> out;
  const size_t pieces = 1 + bytes.size() % 3;
  const size_t step = bytes.size() / pieces;
  for (size_t i = 0; i < pieces; ++i) {
    v1::GenerateResponse r;
    const auto& ids = request.generate.token_ids().ids();
    r.set_token_id(ids.empty() ? static_cast<int32_t>(i) : ids[static_cast<int>(i) % ids.size()]);
    r.set_text(
        std::string(i + 1 == pieces ? bytes.substr(i * step) : bytes.substr(i * step, step)));
    if (request.logprobs) r.set_logprob(-0.25f * static_cast<float>(i));
    out.push_back(std::move(r));
  }
  if (request.echo) {  // the service's scored prompt: its pieces join into the prompt text
    for (int k = 0; k < 2; ++k) {
      v1::PromptToken* t = out.front().add_prompt_tokens();
      t->set_token_id(k);
      t->set_text(k == 0 ? "" : std::string(bytes.substr(0, bytes.size() / 2)));
      if (k > 0) t->set_logprob(-1.5f);
    }
  }
  // The finish: on the last token, or on a message of its own (no token), by the input size.
  static constexpr v1::FinishReason kReasons[] = {
      v1::FINISH_REASON_LENGTH, v1::FINISH_REASON_STOP, v1::FINISH_REASON_EOS,
      v1::FINISH_REASON_CANCELLED, v1::FINISH_REASON_UNSPECIFIED};
  if (bytes.size() % 2 == 1) out.emplace_back();
  v1::GenerateResponse& last = out.back();
  last.set_finish_reason(kReasons[bytes.size() % 5]);
  last.mutable_usage()->set_prompt_tokens(
      request.generate.has_token_ids() ? request.generate.token_ids().ids_size()
                                       : static_cast<int32_t>(request.generate.text().size()));
  last.mutable_usage()->set_completion_tokens(static_cast<int32_t>(pieces));
  return out;
}

void CheckAnswers(const openai::CompletionRequest& request, std::string_view bytes) {
  const std::vector<v1::GenerateResponse> responses = FakeResponses(request, bytes);
  std::string all_text;
  size_t tokens = 0;
  for (const auto& r : responses) {
    for (const auto& p : r.prompt_tokens()) all_text += request.echo ? p.text() : "";
    tokens += request.echo ? r.prompt_tokens_size() : 0;
    all_text += r.text();
    tokens += r.has_token_id() ? 1 : 0;
  }

  // One choice per prompt and n (the service answers each the same here).
  const size_t num_choices = request.prompts.size() * static_cast<size_t>(request.n);
  const std::vector<std::vector<v1::GenerateResponse>> choices(num_choices, responses);
  const json whole = MustParse(openai::CompletionJson(request, choices, kId, kCreated, kModel));
  Check(whole["choices"].size() == num_choices, "CompletionJson has a choice per sequence");
  for (size_t i = 0; i < num_choices; ++i) {
    const json& choice = whole["choices"][i];
    Check(choice["index"] == i && choice["text"].is_string(),
          "CompletionJson's choices are out of order or lack text");
    if (IsUtf8(all_text)) {
      Check(choice["text"].get<std::string>() == all_text,
            "CompletionJson changed valid UTF-8 text");
    }
    if (request.logprobs) {
      Check(choice["logprobs"]["tokens"].size() == tokens,
            "CompletionJson has a different number of logprobs tokens");
    }
  }
  const v1::Usage& one = responses.back().usage();
  Check(whole["usage"]["completion_tokens"] == one.completion_tokens() * num_choices &&
            whole["usage"]["prompt_tokens"] == one.prompt_tokens() * request.prompts.size(),
        "usage does not count every choice's tokens and each prompt's once");
  (void)openai::CompletionJson(request, {}, kId, kCreated, kModel);

  for (const auto& r : responses) {
    const std::vector<json> events = ParseEvents(
        openai::CompletionChunkEvent(request, num_choices - 1, r, kId, kCreated, kModel));
    Check(events.size() == 1u, "a chunk has more than one event");
    Check(events[0]["choices"][0]["index"] == num_choices - 1, "a chunk lost its index");
    // A chunk's text: the echoed prompt's pieces (on the first), then the token's.
    std::string text;
    if (request.echo) {
      for (const auto& p : r.prompt_tokens()) text += p.text();
    }
    text += r.text();
    if (IsUtf8(text)) {
      Check(events[0]["choices"][0]["text"].get<std::string>() == text,
            "a chunk changed valid UTF-8 text");
    }
  }
  Check(ParseEvents(openai::UsageEvent(request, one, kId, kCreated, kModel)).size() == 1u,
        "the usage event is not one event");
}

// The chat API's answers for a parsed chat request: valid JSON, the text kept from its first
// non-whitespace byte, one event per chunk with the role in the first only, the deltas
// joining into the whole answer's content.
void CheckChatAnswers(const openai::CompletionRequest& request, std::string_view bytes) {
  const std::vector<v1::GenerateResponse> responses = FakeResponses(request, bytes);
  std::string all_text;
  for (const auto& r : responses) all_text += r.text();
  const size_t num_choices = static_cast<size_t>(request.n);
  const std::vector<std::vector<v1::GenerateResponse>> choices(num_choices, responses);
  const json whole = MustParse(openai::ChatCompletionJson(request, choices, kId, kCreated, kModel));
  Check(whole["choices"].size() == num_choices, "ChatCompletionJson has a choice per sequence");
  for (size_t i = 0; i < num_choices; ++i) {
    const json& message = whole["choices"][i]["message"];
    Check(message["role"] == "assistant" && message["content"].is_string(),
          "ChatCompletionJson's message lacks its role or content");
    if (IsUtf8(all_text)) {
      Check(message["content"].get<std::string>() == absl::StripLeadingAsciiWhitespace(all_text),
            "ChatCompletionJson's content is not the valid UTF-8 text from its first non-space");
    }
  }
  // The server holds back the bytes of a split character, so each streamed piece is valid
  // UTF-8 on its own; the fake pieces may cut a character, whose halves JSON then replaces.
  bool pieces_utf8 = true;
  for (const auto& r : responses) pieces_utf8 = pieces_utf8 && IsUtf8(r.text());
  openai::ChatStream stream;
  std::string streamed;
  for (size_t i = 0; i < responses.size(); ++i) {
    const std::vector<json> events = ParseEvents(
        openai::ChatChunkEvent(request, 0, responses[i], stream, kId, kCreated, kModel));
    Check(events.size() == 1u, "a chat chunk has more than one event");
    const json& delta = events[0]["choices"][0]["delta"];
    Check(delta.contains("role") == (i == 0), "the role is not in the first chat chunk only");
    if (delta.contains("content")) streamed += delta["content"].get<std::string>();
  }
  if (pieces_utf8) {
    Check(streamed == whole["choices"][0]["message"]["content"],
          "the streamed deltas do not join into the whole answer's content");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  const absl::StatusOr<openai::CompletionRequest> request =
      openai::ParseCompletionRequest(bytes, kModel);
  CheckParse(bytes, request);
  if (request.ok()) {
    CheckAnswers(*request, bytes);
  } else {
    (void)MustParse(openai::ErrorJson(request.status()));
    Check(openai::HttpStatus(request.status().code()) / 100 == 4, "a parse error is not 4xx");
  }
  // The same bytes as a chat request body.
  const absl::StatusOr<openai::CompletionRequest> chat =
      openai::ParseChatCompletionRequest(bytes, kModel);
  if (chat.ok()) {
    Check(chat->chat && chat->prompts.size() == 1u && chat->generate.has_text() == true,
          "a chat request is not one text prompt");
    CheckChatAnswers(*chat, bytes);
  } else {
    Check(openai::HttpStatus(chat.status().code()) / 100 == 4, "a chat parse error is not 4xx");
  }
  // Any code, with the client's bytes as the message (e.g. echoed in an error).
  const auto code = static_cast<absl::StatusCode>(size % 17);
  const json error =
      MustParse(openai::ErrorJson(absl::Status(code, absl::string_view(bytes.data(), size))));
  if (code != absl::StatusCode::kOk && IsUtf8(std::string(bytes))) {
    Check(error["error"]["message"].get<std::string>() == bytes, "ErrorJson changed the message");
  }
  return 0;
}
