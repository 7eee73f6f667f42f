#include "comm/fork_ranks.h"

#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace llmint8::comm {
namespace {

void WriteAll(int fd, const std::string& data) {
  size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    done += static_cast<size_t>(n);
  }
}

// Child side: "<status code int>\n<message>".
[[noreturn]] void RunChild(int rank, int fd, pid_t parent,
                           const std::function<absl::Status(int)>& body) {
  // A rank outlives no parent: killed with it (`llmint8 eval --tp=2` stopped by Ctrl-C or
  // SIGTERM must not leave its ranks computing). The parent may have died before the prctl.
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() != parent) ::_exit(1);
  absl::Status status = body(rank);
  WriteAll(fd, absl::StrCat(static_cast<int>(status.code()), "\n", status.message()));
  ::close(fd);
  ::_exit(status.ok() ? 0 : 1);
}

}  // namespace

std::string RankOutcome::Describe() const {
  std::string out = absl::StrCat("rank ", rank, ": ");
  if (reported) absl::StrAppend(&out, "returned ", status.ToString(), "; ");
  if (killed_at_limit) {
    absl::StrAppend(&out, "still running at the limit or after a peer failed (hang), killed; ");
  }
  if (signal != 0)
    absl::StrAppend(&out, "ended by signal ", signal, " (", strsignal(signal), ")");
  else
    absl::StrAppend(&out, "exit code ", exit_code);
  return out;
}

std::vector<RankOutcome> ForkRanks(int num_processes,
                                   const std::function<absl::Status(int rank)>& body,
                                   absl::Duration limit) {
  std::fflush(nullptr);  // no buffered output duplicated into the children
  std::vector<RankOutcome> outcomes(num_processes);
  std::vector<pid_t> pids(num_processes, -1);
  std::vector<int> fds(num_processes, -1);
  std::vector<std::string> buffers(num_processes);
  for (int r = 0; r < num_processes; ++r) {
    outcomes[r].rank = r;
    int pipe_fds[2];
    if (::pipe(pipe_fds) != 0) {
      outcomes[r].status = absl::InternalError(absl::StrCat("pipe: ", std::strerror(errno)));
      continue;
    }
    const pid_t parent = ::getpid();
    const pid_t pid = ::fork();
    if (pid == 0) {
      ::close(pipe_fds[0]);
      for (int q = 0; q < r; ++q) {
        if (fds[q] >= 0) ::close(fds[q]);  // siblings' read ends
      }
      RunChild(r, pipe_fds[1], parent, body);
    }
    ::close(pipe_fds[1]);
    if (pid < 0) {
      ::close(pipe_fds[0]);
      outcomes[r].status = absl::InternalError(absl::StrCat("fork: ", std::strerror(errno)));
      continue;
    }
    pids[r] = pid;
    fds[r] = pipe_fds[0];
  }

  // Read every pipe to EOF (the child exited or closed it), up to the limit.
  absl::Time deadline = absl::Now() + limit;
  // A rank that ends without reporting OK leaves its peers blocked in a collective until their
  // own timeout (eval: 5 min): give them a short grace, then kill them.
  constexpr absl::Duration kPeerGrace = absl::Seconds(20);
  for (;;) {
    std::vector<pollfd> polled;
    std::vector<int> ranks;
    for (int r = 0; r < num_processes; ++r) {
      if (fds[r] >= 0) {
        polled.push_back({fds[r], POLLIN, 0});
        ranks.push_back(r);
      }
    }
    if (polled.empty()) break;
    const absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) break;
    const int ready =
        ::poll(polled.data(), polled.size(), static_cast<int>(absl::ToInt64Milliseconds(left)) + 1);
    if (ready < 0 && errno != EINTR) break;
    for (size_t i = 0; i < polled.size(); ++i) {
      if (polled[i].revents == 0) continue;
      const int r = ranks[i];
      char buf[4096];
      const ssize_t n = ::read(fds[r], buf, sizeof(buf));
      if (n > 0) {
        buffers[r].append(buf, static_cast<size_t>(n));
      } else if (n == 0 || errno != EINTR) {
        ::close(fds[r]);
        fds[r] = -1;
        if (buffers[r].rfind("0\n", 0) != 0) {
          deadline = std::min(deadline, absl::Now() + kPeerGrace);
        }
      }
    }
  }
  for (int r = 0; r < num_processes; ++r) {
    if (fds[r] >= 0) {  // still open at the limit: the child hangs
      ::close(fds[r]);
      if (pids[r] > 0) {
        ::kill(pids[r], SIGKILL);
        outcomes[r].killed_at_limit = true;
      }
    }
  }
  for (int r = 0; r < num_processes; ++r) {
    if (pids[r] <= 0) continue;
    int wstatus = 0;
    // A child that closed its pipe is exiting; one that did not was killed above.
    while (::waitpid(pids[r], &wstatus, 0) < 0 && errno == EINTR) {
    }
    if (WIFEXITED(wstatus)) outcomes[r].exit_code = WEXITSTATUS(wstatus);
    if (WIFSIGNALED(wstatus)) outcomes[r].signal = WTERMSIG(wstatus);
    const std::string& text = buffers[r];
    const size_t newline = text.find('\n');
    int code = 0;
    if (newline != std::string::npos && absl::SimpleAtoi(text.substr(0, newline), &code)) {
      outcomes[r].reported = true;
      outcomes[r].status =
          absl::Status(static_cast<absl::StatusCode>(code), text.substr(newline + 1));
    }
  }
  return outcomes;
}

absl::StatusOr<int64_t> ValueInChild(const std::function<absl::StatusOr<int64_t>()>& probe,
                                     absl::Duration limit) {
  // The child reports a Status (code + message); the value travels as the message of a status
  // with a marker only this function writes.
  constexpr absl::string_view kMarker = "llmint8-value-in-child:";
  const std::vector<RankOutcome> outcome = ForkRanks(
      1,
      [&probe, kMarker](int) -> absl::Status {
        absl::StatusOr<int64_t> v = probe();
        if (!v.ok()) return v.status();
        return absl::CancelledError(absl::StrCat(kMarker, *v));
      },
      limit);
  const RankOutcome& o = outcome[0];
  if (!o.reported) return absl::UnavailableError(o.Describe());
  absl::string_view message = o.status.message();
  int64_t value = 0;
  if (o.status.code() == absl::StatusCode::kCancelled && absl::ConsumePrefix(&message, kMarker) &&
      absl::SimpleAtoi(message, &value)) {
    return value;
  }
  return o.status;
}

}  // namespace llmint8::comm
