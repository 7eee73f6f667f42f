// The coordinator's line per finished request: what it says for a finished, a failed and a
// refused request, and that a client's message cannot make it long or split it.
#include "coordinator/request_log.h"

#include <string>

#include "gtest/gtest.h"

namespace llmint8::coordinator {
namespace {

TEST(RequestLogTest, AFinishedRequestGivesItsCountsAndTimes) {
  RequestRecord r;
  r.sequence_id = 17;
  r.prompt_tokens = 204;
  r.generated_tokens = 16;
  v1::GenerateResponse last;
  last.set_finish_reason(v1::FINISH_REASON_STOP);
  last.mutable_usage()->set_cached_prompt_tokens(180);
  last.mutable_timings()->set_queue_ms(0.25);
  last.mutable_timings()->set_time_to_first_token_ms(45.21);
  last.mutable_timings()->set_total_ms(310.0);
  last.mutable_timings()->set_decode_tokens_per_second(52.13);
  r.final_message = last;
  EXPECT_EQ(RequestLogLine(r, absl::OkStatus()),
            "seq 17 OK: finish=stop prompt=204 cached=180 generated=16 queue=0.2ms ttft=45.2ms "
            "total=310.0ms decode=52.1tok/s");
  // Nothing cached, one token (no decode rate).
  last.mutable_usage()->set_cached_prompt_tokens(0);
  last.mutable_timings()->set_decode_tokens_per_second(0);
  last.set_finish_reason(v1::FINISH_REASON_LENGTH);
  r.final_message = last;
  r.generated_tokens = 1;
  EXPECT_EQ(RequestLogLine(r, absl::OkStatus()),
            "seq 17 OK: finish=length prompt=204 generated=1 queue=0.2ms ttft=45.2ms "
            "total=310.0ms");
  // Preempted twice (prefilled again each time), with a priority.
  r.preemptions = 2;
  r.priority = -1;
  EXPECT_EQ(RequestLogLine(r, absl::OkStatus()),
            "seq 17 OK: finish=length prompt=204 generated=1 priority=-1 preempted=2 queue=0.2ms "
            "ttft=45.2ms total=310.0ms");
  // Speculative decoding: 3 of 8 draft tokens became its output.
  r.priority = 0;
  r.preemptions = 0;
  r.draft_tokens = 8;
  r.accepted_draft_tokens = 3;
  EXPECT_EQ(RequestLogLine(r, absl::OkStatus()),
            "seq 17 OK: finish=length prompt=204 generated=1 drafts=3/8 queue=0.2ms "
            "ttft=45.2ms total=310.0ms");
}

TEST(RequestLogTest, FailedAndRefusedRequestsGiveTheirStatus) {
  RequestRecord r;
  r.sequence_id = 18;
  r.prompt_tokens = 12;
  r.generated_tokens = 3;
  EXPECT_EQ(RequestLogLine(r, absl::CancelledError("the client went away")),
            "seq 18 CANCELLED: prompt=12 generated=3: the client went away");
  EXPECT_EQ(RequestLogLine(RequestRecord{}, absl::InvalidArgumentError("temperature must be >= 0")),
            "seq - INVALID_ARGUMENT: temperature must be >= 0");
}

TEST(RequestLogTest, MessagesStayOnOneShortLine) {
  const std::string line = RequestLogLine(
      RequestRecord{}, absl::InvalidArgumentError("a\nb\rc" + std::string(1000, 'x')));
  EXPECT_EQ(RequestLogLine(RequestRecord{},
                           absl::InvalidArgumentError("stop \"\x1b[31m\" \xc3\xa9\t\x7f")),
            "seq - INVALID_ARGUMENT: stop \"\\x1b[31m\" \xc3\xa9\\x09\\x7f");
  EXPECT_EQ(line.find('\n'), std::string::npos);
  EXPECT_EQ(line.find('\r'), std::string::npos);
  EXPECT_EQ(line.rfind("seq - INVALID_ARGUMENT: a\\nb\\rc", 0), 0u) << line;
  // 300 bytes of the message, then "...".
  EXPECT_EQ(line.size(), std::string("seq - INVALID_ARGUMENT: ").size() + 300 + 2 + 3);
  EXPECT_EQ(line.substr(line.size() - 3), "...");
  // Not cut inside a UTF-8 character: "\xc3\xa9" would straddle byte 300.
  const std::string utf8 = RequestLogLine(
      RequestRecord{}, absl::InvalidArgumentError(std::string(299, 'x') + "\xc3\xa9!"));
  EXPECT_EQ(utf8, "seq - INVALID_ARGUMENT: " + std::string(299, 'x') + "...");
}

TEST(RequestLogTest, TheClientsRequestIdNamesTheLineSanitized) {
  RequestRecord r;
  r.sequence_id = 5;
  r.prompt_tokens = 2;
  r.generated_tokens = 1;
  r.request_id = SanitizeRequestId("job-7/a b\n\x1b");
  EXPECT_EQ(r.request_id, "job-7/a_b__");
  EXPECT_EQ(RequestLogLine(r, absl::CancelledError("gone")),
            "seq 5 id=job-7/a_b__ CANCELLED: prompt=2 generated=1: gone");
  EXPECT_EQ(SanitizeRequestId("cmpl-1700000000-3"), "cmpl-1700000000-3");
  EXPECT_EQ(SanitizeRequestId("a.b:c+d=e_f"), "a.b:c+d=e_f");
  EXPECT_EQ(SanitizeRequestId(std::string(500, 'x')), std::string(128, 'x'));
}

TEST(RequestLogTest, OnlyServerFaultsAreServerErrors) {
  for (absl::StatusCode code : {absl::StatusCode::kInternal, absl::StatusCode::kUnavailable,
                                absl::StatusCode::kDataLoss, absl::StatusCode::kUnknown}) {
    EXPECT_TRUE(IsServerError(code)) << absl::StatusCodeToString(code);
  }
  for (absl::StatusCode code :
       {absl::StatusCode::kOk, absl::StatusCode::kInvalidArgument, absl::StatusCode::kCancelled,
        absl::StatusCode::kDeadlineExceeded, absl::StatusCode::kResourceExhausted,
        absl::StatusCode::kOutOfRange, absl::StatusCode::kUnauthenticated,
        absl::StatusCode::kFailedPrecondition}) {
    EXPECT_FALSE(IsServerError(code)) << absl::StatusCodeToString(code);
  }
}

}  // namespace
}  // namespace llmint8::coordinator
