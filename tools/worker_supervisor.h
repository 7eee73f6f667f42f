// serve's worker processes: started (fork, then execve of a worker command line), watched from
// a thread of their own, started again when one exits, and stopped at the end.
//
// A worker that exits is started again (Options::respawn) after a pause that doubles, from
// 0.5 s to 30 s, while it keeps exiting within kQuickExit of its start; one that exits so
// kQuickExitsBeforeServing times in a row before the group ever served (MarkServed) is lost
// for good: Lost() then says why, for serve to stop with it. Without respawn the first worker
// that exits is lost.
//
// Thread-safe. The workers never outlive the process that started them (PR_SET_PDEATHSIG) and
// are not in its process group (a terminal's Ctrl-C reaches serve alone, which drains first).
#ifndef LLMINT8_TOOLS_WORKER_SUPERVISOR_H_
#define LLMINT8_TOOLS_WORKER_SUPERVISOR_H_

#include <sys/types.h>

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace llmint8::tools {

class WorkerSupervisor {
 public:
  static constexpr absl::Duration kQuickExit = absl::Seconds(10);
  static constexpr int kQuickExitsBeforeServing = 5;

  struct Options {
    std::string exe;                     // the binary to execute (e.g. "/proc/self/exe")
    std::vector<std::string> addresses;  // one per rank (0 .. size - 1), for the logs
    // Rank r's argv (argv[0] first) and environment; built in this process (the child only
    // calls async-signal-safe functions before execve).
    std::function<std::vector<std::string>(int rank)> args;
    std::function<std::vector<std::string>(int rank)> env;
    bool respawn = true;
  };

  // Starts every worker and the thread that watches them. Internal when a fork fails (the
  // workers already started are killed).
  static absl::StatusOr<std::unique_ptr<WorkerSupervisor>> Start(Options options);
  // Stop(now) unless stopped; joins the thread.
  ~WorkerSupervisor();

  // The group has been ready once: from now on quick exits do not make a worker lost.
  void MarkServed() { served_ = true; }
  // Why serve must stop for a worker, "" while none is lost.
  std::string Lost() const;

  // SIGTERM to every worker (nothing is started again from now on), then waits for them to
  // exit; the ones still running at `kill_at`, or when `signalled_within` (waiting up to its
  // argument) reports a signal, are killed with SIGKILL.
  void Stop(absl::Time kill_at, const std::function<bool(absl::Duration)>& signalled_within);

 private:
  explicit WorkerSupervisor(Options options);
  // Starts rank's worker (mu_ held): its pid, or -1 when fork failed (logged).
  pid_t Spawn(int rank);
  // The thread: reaps exits and starts workers again when their pause is over.
  void Watch();
  // A worker exited (mu_ held): whether and when it starts again, or why it is lost.
  void Exited(pid_t pid, int wait_status);

  struct Child {
    int rank;
    absl::Time started;
  };
  const Options options_;
  const pid_t parent_;  // this process: a child whose parent is another exits
  std::atomic<bool> served_{false};
  std::atomic<bool> stopping_{false};
  mutable std::mutex mu_;
  std::map<pid_t, Child> children_;       // guarded by mu_
  std::map<int, absl::Time> respawn_at_;  // rank -> when; guarded by mu_
  std::map<int, int> quick_exits_;        // rank -> exits in a row within kQuickExit; mu_
  std::string lost_;                      // guarded by mu_
  std::thread watcher_;
};

}  // namespace llmint8::tools

#endif  // LLMINT8_TOOLS_WORKER_SUPERVISOR_H_
