// Sends one unary RPC to several stubs at once and waits for the answers (gRPC callback API).
//
//   FanOutResult<v1::StepResponse> r = FanOut<v1::StepResponse>(
//       n, /*timeout=*/absl::Seconds(5), /*cancel_on=*/FatalFailure,
//       [&](int i, grpc::ClientContext* ctx, v1::StepResponse* resp, auto done) {
//         stubs[i]->async()->Step(ctx, &request, resp, std::move(done));
//       });
//
// Returns when every call has finished or, as soon as one fails with a status for which
// `cancel_on` is true, after cancelling the rest (their status then reads CANCELLED). The
// request objects must outlive the call to FanOut only (gRPC serializes them at start).
//
// FanOutAbandoning also asks `abandon` every 50 ms while calls are pending: a non-OK answer
// (e.g. the group broke: a member stopped answering its probes) cancels the pending calls,
// whose status then is that answer, and the first of them is first_failure unless a call
// failed already. A peer that is silent (a frozen host sends no reset) ends the wait then,
// not at the deadline.
#ifndef LLMINT8_COORDINATOR_FAN_OUT_H_
#define LLMINT8_COORDINATOR_FAN_OUT_H_

#include <chrono>
#include <functional>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/grpc_status.h"
#include "grpcpp/grpcpp.h"

namespace llmint8::coordinator {

template <typename Resp>
struct FanOutResult {
  std::vector<grpc::Status> statuses;
  std::vector<Resp> responses;  // valid where statuses[i].ok()
  int first_failure = -1;       // index of the first call that failed, -1 if none
};

template <typename Resp, typename StartFn>
FanOutResult<Resp> FanOutAbandoning(int n, absl::Duration timeout,
                                    const std::function<bool(const grpc::Status&)>& cancel_on,
                                    const std::function<absl::Status()>& abandon, StartFn start) {
  struct Call {
    grpc::ClientContext ctx;
    Resp resp;
    grpc::Status status;
    bool done = false;
  };
  struct State {
    absl::Mutex mu;
    std::vector<std::unique_ptr<Call>> calls;
    int pending = 0;
    int first_failure = -1;
    bool cancel = false;
    std::function<bool(const grpc::Status&)> cancel_on;  // callbacks may outlive FanOut
  };
  auto state = std::make_shared<State>();
  state->pending = n;
  state->cancel_on = cancel_on;
  const auto deadline = std::chrono::system_clock::now() +
                        std::chrono::milliseconds(absl::ToInt64Milliseconds(timeout));
  for (int i = 0; i < n; ++i) {
    state->calls.push_back(std::make_unique<Call>());
    state->calls.back()->ctx.set_deadline(deadline);
  }
  for (int i = 0; i < n; ++i) {
    Call* call = state->calls[i].get();
    start(i, &call->ctx, &call->resp, [state, i](grpc::Status s) {
      absl::MutexLock lock(&state->mu);
      Call& c = *state->calls[i];
      c.status = std::move(s);
      c.done = true;
      --state->pending;
      if (!c.status.ok() && state->first_failure < 0) state->first_failure = i;
      if (!c.status.ok() && state->cancel_on(c.status)) state->cancel = true;
    });
  }
  FanOutResult<Resp> result;
  const absl::Condition finished(
      +[](State* s) { return s->pending == 0 || s->cancel; }, state.get());
  absl::Status abandoned;
  state->mu.Lock();
  if (!abandon) {
    state->mu.Await(finished);
  } else {
    while (!state->mu.AwaitWithTimeout(finished, absl::Milliseconds(50))) {
      state->mu.Unlock();  // `abandon` may take its owner's locks
      abandoned = abandon();
      state->mu.Lock();
      if (!abandoned.ok()) break;
    }
  }
  if (state->pending > 0) {
    for (auto& c : state->calls) {
      if (!c->done) c->ctx.TryCancel();
    }
  }
  result.first_failure = state->first_failure;
  for (size_t i = 0; i < state->calls.size(); ++i) {
    Call& c = *state->calls[i];
    if (c.done) {
      result.statuses.push_back(c.status);
      result.responses.push_back(c.resp);
      continue;
    }
    if (!abandoned.ok()) {
      result.statuses.push_back(ToGrpcStatus(abandoned));
      if (result.first_failure < 0) result.first_failure = static_cast<int>(i);
    } else {
      result.statuses.push_back(
          ToGrpcStatus(absl::CancelledError("cancelled after another worker failed")));
    }
    result.responses.emplace_back();
  }
  state->mu.Unlock();
  return result;
}

template <typename Resp, typename StartFn>
FanOutResult<Resp> FanOut(int n, absl::Duration timeout,
                          const std::function<bool(const grpc::Status&)>& cancel_on,
                          StartFn start) {
  return FanOutAbandoning<Resp>(n, timeout, cancel_on, nullptr, std::move(start));
}

}  // namespace llmint8::coordinator

#endif  // LLMINT8_COORDINATOR_FAN_OUT_H_
