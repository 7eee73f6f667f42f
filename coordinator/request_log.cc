#include "coordinator/request_log.h"

#include <optional>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"

namespace llmint8::coordinator {
namespace {

constexpr size_t kMaxMessageBytes = 300;

// `text` with its control characters escaped (\n, \r, \x1b, ...), UTF-8 kept: a message that
// quotes client input can neither split the line nor drive the terminal.
std::string OneLine(absl::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (const char c : text) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (u < 0x20 || u == 0x7f) {
      absl::StrAppendFormat(&out, "\\x%02x", u);
    } else {
      out += c;
    }
  }
  return out;
}

}  // namespace

std::string RequestLogLine(const RequestRecord& record, const absl::Status& status) {
  std::vector<std::string> fields;
  const std::optional<v1::GenerateResponse>& last = record.final_message;
  if (last.has_value()) {
    fields.push_back(absl::StrCat("finish=", FinishReasonLabel(last->finish_reason())));
  }
  if (record.sequence_id != 0) {
    fields.push_back(absl::StrCat("prompt=", record.prompt_tokens));
    if (last.has_value() && last->usage().cached_prompt_tokens() > 0) {
      fields.push_back(absl::StrCat("cached=", last->usage().cached_prompt_tokens()));
    }
    fields.push_back(absl::StrCat("generated=", record.generated_tokens));
    if (record.priority != 0) fields.push_back(absl::StrCat("priority=", record.priority));
    if (record.preemptions > 0) fields.push_back(absl::StrCat("preempted=", record.preemptions));
    if (record.draft_tokens > 0) {
      fields.push_back(
          absl::StrCat("drafts=", record.accepted_draft_tokens, "/", record.draft_tokens));
    }
  }
  if (last.has_value()) {
    const v1::Timings& t = last->timings();
    fields.push_back(absl::StrFormat("queue=%.1fms ttft=%.1fms total=%.1fms", t.queue_ms(),
                                     t.time_to_first_token_ms(), t.total_ms()));
    if (t.decode_tokens_per_second() > 0) {
      fields.push_back(absl::StrFormat("decode=%.1ftok/s", t.decode_tokens_per_second()));
    }
  }
  std::string line = absl::StrCat(
      "seq ", record.sequence_id == 0 ? std::string("-") : absl::StrCat(record.sequence_id),
      record.request_id.empty() ? "" : " id=", record.request_id, " ",
      absl::StatusCodeToString(status.code()));
  if (!fields.empty()) absl::StrAppend(&line, ": ", absl::StrJoin(fields, " "));
  if (!status.ok()) {
    absl::string_view message = status.message();
    const bool cut = message.size() > kMaxMessageBytes;
    if (cut) {
      size_t end = kMaxMessageBytes;  // not inside a UTF-8 character
      while (end > 0 && (static_cast<unsigned char>(message[end]) & 0xC0) == 0x80) --end;
      message = message.substr(0, end);
    }
    absl::StrAppend(&line, ": ", OneLine(message), cut ? "..." : "");
  }
  return line;
}

std::string SanitizeRequestId(std::string_view id) {
  constexpr size_t kMaxBytes = 128;
  std::string out(id.substr(0, kMaxBytes));
  for (char& c : out) {
    const bool keep = absl::ascii_isalnum(static_cast<unsigned char>(c)) ||
                      std::string_view("._:/+=-").find(c) != std::string_view::npos;
    if (!keep) c = '_';
  }
  return out;
}

bool IsServerError(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kUnknown:
    case absl::StatusCode::kInternal:
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kDataLoss:
    case absl::StatusCode::kUnimplemented:
      return true;
    default:
      return false;
  }
}

}  // namespace llmint8::coordinator
