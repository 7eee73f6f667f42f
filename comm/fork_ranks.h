// Runs the ranks of a group as forked child processes on one host: the multi-process tests of
// communicators and tensor-parallel forwards, and `llmint8 eval --tp=N`, which computes a
// tensor-parallel perplexity in one command without a coordinator.
//
// The parent must not have started threads or initialised CUDA before calling (fork() copies
// only the calling thread; a CUDA context does not survive fork). Each child runs
// `body(rank)`, reports the returned Status to the parent through a pipe, and leaves with
// _exit (0 when OK, 1 otherwise), skipping atexit handlers and the test framework's teardown.
// A child that dies without reporting (crash, _exit from the body) shows up as `reported ==
// false` with its exit code or signal. A child is killed when the thread that called ForkRanks
// ends (PR_SET_PDEATHSIG; with the process, for callers on the main thread).
#ifndef LLMINT8_COMM_FORK_RANKS_H_
#define LLMINT8_COMM_FORK_RANKS_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace llmint8::comm {

struct RankOutcome {
  int rank = -1;
  bool reported = false;         // the body returned and its Status came back
  absl::Status status;           // the body's Status when reported
  int exit_code = -1;            // from waitpid, when the child exited
  int signal = 0;                // the signal that ended the child, if any
  bool killed_at_limit = false;  // still running at `limit` (or 20 s after a peer failed): killed
  std::string Describe() const;
};

// Forks `num_processes` children, rank r = 0 .. num_processes-1, and waits for all of them, at
// most `limit` in total; children still running then are killed. Once a child ends without
// reporting OK, the others get at most 20 s more: peers blocked in a collective with it would
// otherwise sit out their own timeouts. Results are in rank order.
std::vector<RankOutcome> ForkRanks(int num_processes,
                                   const std::function<absl::Status(int rank)>& body,
                                   absl::Duration limit);

// Runs `probe` in one forked child and returns what it returned (its error too; UNAVAILABLE
// naming how the child ended when it reported nothing). For questions whose answering would
// leave state this process must not carry into later forks, such as a CUDA context: "how many
// GPUs are there" asked by a parent that forks ranks afterwards.
absl::StatusOr<int64_t> ValueInChild(const std::function<absl::StatusOr<int64_t>()>& probe,
                                     absl::Duration limit);

}  // namespace llmint8::comm

#endif  // LLMINT8_COMM_FORK_RANKS_H_
