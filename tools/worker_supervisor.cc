#include "tools/worker_supervisor.h"

#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/log.h"

namespace llmint8::tools {

WorkerSupervisor::WorkerSupervisor(Options options)
    : options_(std::move(options)), parent_(getpid()) {}

absl::StatusOr<std::unique_ptr<WorkerSupervisor>> WorkerSupervisor::Start(Options options) {
  std::unique_ptr<WorkerSupervisor> s(new WorkerSupervisor(std::move(options)));
  {
    std::lock_guard<std::mutex> lock(s->mu_);
    for (int rank = 0; rank < static_cast<int>(s->options_.addresses.size()); ++rank) {
      const pid_t pid = s->Spawn(rank);
      if (pid < 0) {
        for (const auto& [started, child] : s->children_) kill(started, SIGKILL);
        for (const auto& [started, child] : s->children_) waitpid(started, nullptr, 0);
        s->children_.clear();
        return absl::InternalError(
            absl::StrCat("could not start worker ", rank, " (fork failed; the log says why)"));
      }
      s->children_[pid] = {rank, absl::Now()};
    }
  }
  s->watcher_ = std::thread([raw = s.get()] { raw->Watch(); });
  return s;
}

WorkerSupervisor::~WorkerSupervisor() {
  if (!stopping_) Stop(absl::Now(), [](absl::Duration) { return false; });
  if (watcher_.joinable()) watcher_.join();
}

std::string WorkerSupervisor::Lost() const {
  std::lock_guard<std::mutex> lock(mu_);
  return lost_;
}

pid_t WorkerSupervisor::Spawn(int rank) {
  std::vector<std::string> args = options_.args(rank);
  std::vector<std::string> env = options_.env(rank);
  std::vector<char*> argv, envp;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  for (std::string& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  // The bound of the child's fallback close loop (no getrlimit after fork).
  rlimit fds{};
  const int max_fds = getrlimit(RLIMIT_NOFILE, &fds) == 0 && fds.rlim_cur != RLIM_INFINITY
                          ? static_cast<int>(std::min<rlim_t>(fds.rlim_cur, 1 << 20))
                          : 1 << 16;
  const pid_t pid = fork();
  if (pid == 0) {
    // Never outlive serve: its group is gone with it, and a drain would only hold the port a
    // restarted serve needs. (Had serve died before prctl, the parent is another.)
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent_) _exit(1);
    // Not in serve's process group: a terminal's Ctrl-C reaches serve alone, which drains its
    // requests before it stops the workers.
    setpgid(0, 0);
    sigset_t none;
    sigemptyset(&none);
    pthread_sigmask(SIG_SETMASK, &none, nullptr);
    // Nothing of serve's but stdin/out/err: a worker started again while serving would
    // otherwise hold the clients' connections that are open at this moment (a library's
    // descriptors need not be close-on-exec) for as long as it lives.
    if (close_range(3, ~0U, 0) != 0) {
      for (int fd = 3; fd < max_fds; ++fd) close(fd);
    }
    execve(options_.exe.c_str(), argv.data(), envp.data());
    _exit(127);
  }
  if (pid > 0) {
    LLMINT8_LOG(INFO) << "started worker " << rank << " (pid " << pid << ") on "
                      << options_.addresses[rank];
  } else {
    LLMINT8_LOG(ERROR) << "fork failed: " << std::strerror(errno);
  }
  return pid;
}

void WorkerSupervisor::Watch() {
  while (true) {
    int status = 0;
    // Reaped under the lock: Stop must never signal a pid that is reaped and maybe reused.
    std::unique_lock<std::mutex> lock(mu_);
    const pid_t pid = waitpid(-1, &status, WNOHANG);
    if (pid > 0) {
      Exited(pid, status);
      continue;
    }
    if (stopping_) {
      respawn_at_.clear();
      if (children_.empty()) return;
    }
    for (auto it = respawn_at_.begin(); it != respawn_at_.end();) {
      if (absl::Now() < it->second) {
        ++it;
        continue;
      }
      const pid_t again = Spawn(it->first);
      if (again < 0) {  // fork failed (logged): try again in a second
        it->second = absl::Now() + absl::Seconds(1);
        ++it;
        continue;
      }
      children_[again] = {it->first, absl::Now()};
      it = respawn_at_.erase(it);
    }
    lock.unlock();
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

void WorkerSupervisor::Exited(pid_t pid, int wait_status) {
  auto it = children_.find(pid);
  if (it == children_.end()) return;
  const Child child = it->second;
  children_.erase(it);
  if (stopping_) return;
  const std::string how = WIFSIGNALED(wait_status)
                              ? absl::StrCat("on signal ", WTERMSIG(wait_status))
                              : absl::StrCat("with status ", WEXITSTATUS(wait_status));
  const absl::Duration lived = absl::Now() - child.started;
  LLMINT8_LOG(WARNING) << "worker " << child.rank << " (pid " << pid << ") exited " << how
                       << " after "
                       << absl::FormatDuration(absl::Trunc(lived, absl::Milliseconds(100)));
  if (!options_.respawn) {
    if (lost_.empty()) {
      lost_ =
          absl::StrCat("worker ", child.rank, " exited ", how, " and --norespawn is set; stopping");
    }
    return;
  }
  int& quick = quick_exits_[child.rank];
  quick = lived < kQuickExit ? quick + 1 : 0;
  if (quick >= kQuickExitsBeforeServing && !served_) {
    if (lost_.empty()) {
      lost_ = absl::StrCat("worker ", child.rank, " exited ", quick, " times within ",
                           absl::FormatDuration(kQuickExit),
                           " of its start before the group ever served (last ", how,
                           "); its log lines above say why; stopping");
    }
    return;
  }
  const absl::Duration pause =
      std::min(absl::Seconds(30), absl::Milliseconds(500) * (1 << std::clamp(quick - 1, 0, 6)));
  if (quick > 1) {
    LLMINT8_LOG(WARNING) << "worker " << child.rank << " keeps exiting; starting it again in "
                         << absl::FormatDuration(pause);
  }
  respawn_at_[child.rank] = absl::Now() + pause;
}

void WorkerSupervisor::Stop(absl::Time kill_at,
                            const std::function<bool(absl::Duration)>& signalled_within) {
  const bool at_once = kill_at <= absl::Now();
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    for (const auto& [pid, child] : children_) kill(pid, SIGTERM);
  }
  while (true) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (children_.empty()) break;
    }
    const bool again = signalled_within(absl::Milliseconds(100));
    if (again || absl::Now() >= kill_at) {
      std::lock_guard<std::mutex> lock(mu_);
      LLMINT8_LOG(WARNING) << (again     ? "signalled again"
                               : at_once ? "stopping at once"
                                         : "workers still running after the drain")
                           << ": killing " << children_.size() << " worker(s)";
      for (const auto& [pid, child] : children_) kill(pid, SIGKILL);
      break;
    }
  }
  // The watcher reaps what is left and returns (within 50 ms once no worker is left).
  if (watcher_.joinable()) watcher_.join();
}

}  // namespace llmint8::tools
