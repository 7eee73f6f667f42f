// One log line per finished sequence (a Generate call, or each prompt x choice of an OpenAI
// call), written by the coordinator unless --log_requests=false:
//
//   seq 17 OK: finish=stop prompt=204 cached=180 generated=16 queue=0.3ms ttft=45.2ms
//       total=310.0ms decode=52.1tok/s
//       (preempted=N after generated: the times the scheduler dropped its KV cache for room and
//       prefilled it again, when any; drafts=A/S: of S draft tokens speculative decoding sent
//       with it, A became its output, when any were sent)
//   seq 18 id=job-7/a CANCELLED: prompt=12 generated=3: the client went away
//       (id: the client's x-request-id header / metadata, or the HTTP API's completion id)
//   seq - INVALID_ARGUMENT: temperature is -1; it must be >= 0 ...  (refused before queueing)
//
// Neither the prompt nor the output text is logged, only counts and times.
#ifndef LLMINT8_COORDINATOR_REQUEST_LOG_H_
#define LLMINT8_COORDINATOR_REQUEST_LOG_H_

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "coordinator/metrics.h"

namespace llmint8::coordinator {

// The line for `record`, which ended with `status` (its message is cut to 300 bytes and kept
// on one line).
std::string RequestLogLine(const RequestRecord& record, const absl::Status& status);

// A client's request id made safe for a log line and a response header: at most 128 bytes of
// letters, digits and ._:/+=- (any other byte becomes '_').
std::string SanitizeRequestId(std::string_view id);

// Whether a request that ended with `code` failed on the server's side (a lost worker, a
// bug: logged as a warning) rather than by the client's doing (bad input, cancel, deadline).
bool IsServerError(absl::StatusCode code);

}  // namespace llmint8::coordinator

#endif  // LLMINT8_COORDINATOR_REQUEST_LOG_H_
