#include "coordinator/lingering_close.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <deque>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"

namespace llmint8::coordinator {
namespace {

class Lingerer {
 public:
  static Lingerer& Get() {
    static Lingerer* const lingerer = new Lingerer();  // never destroyed: its thread runs on
    return *lingerer;
  }

  void Add(int fd) {
    ::shutdown(fd, SHUT_WR);
    {
      absl::MutexLock lock(&mu_);
      if (wake_[1] < 0 || lingering_.size() >= kMaxLingering) {
        ::close(fd);  // never polled: the loop cannot be reading it
        return;
      }
      lingering_.push_back({fd, absl::Now() + kLingerFor});
    }
    const char one = 1;
    (void)::write(wake_[1], &one, 1);  // a full pipe has a wake-up pending already
  }

  size_t size() {
    absl::MutexLock lock(&mu_);
    return lingering_.size();
  }

 private:
  struct Entry {
    int fd;
    absl::Time until;
  };

  Lingerer() {
    if (::pipe2(wake_, O_NONBLOCK | O_CLOEXEC) != 0) {
      wake_[0] = wake_[1] = -1;  // Add closes at once
      return;
    }
    std::thread([this] { Loop(); }).detach();
  }

  // Only this thread closes what lingers, so a descriptor it polls is never one the process
  // reused for another connection meanwhile.
  void Loop() {
    std::vector<pollfd> polls;
    std::vector<int> done;
    for (;;) {
      polls.clear();
      polls.push_back({wake_[0], POLLIN, 0});
      absl::Time first = absl::InfiniteFuture();
      {
        absl::MutexLock lock(&mu_);
        for (const Entry& e : lingering_) {
          polls.push_back({e.fd, POLLIN, 0});
          first = std::min(first, e.until);
        }
      }
      const int timeout_ms =
          first == absl::InfiniteFuture()
              ? -1
              : static_cast<int>(std::clamp<int64_t>(
                    absl::ToInt64Milliseconds(first - absl::Now()) + 1, 0, 1000));
      if (::poll(polls.data(), polls.size(), timeout_ms) < 0 && errno != EINTR) {
        absl::SleepFor(absl::Milliseconds(10));  // (not expected) keep to the deadlines
      }
      char sink[16 * 1024];
      while (::read(wake_[0], sink, sizeof(sink)) > 0) {
      }
      done.clear();
      for (size_t i = 1; i < polls.size(); ++i) {
        if (polls[i].revents == 0) continue;
        // What the client sent is dropped; its end (0) or an error ends the lingering.
        const ssize_t got = ::recv(polls[i].fd, sink, sizeof(sink), MSG_DONTWAIT);
        if (got == 0 || (got < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
          done.push_back(polls[i].fd);
        }
      }
      const absl::Time now = absl::Now();
      absl::MutexLock lock(&mu_);
      std::erase_if(lingering_, [&](const Entry& e) {
        if (e.until > now && std::find(done.begin(), done.end(), e.fd) == done.end()) return false;
        ::close(e.fd);
        return true;
      });
    }
  }

  int wake_[2] = {-1, -1};
  absl::Mutex mu_;
  std::deque<Entry> lingering_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

void LingerAndClose(int fd) { Lingerer::Get().Add(fd); }

size_t LingeringConnections() { return Lingerer::Get().size(); }

}  // namespace llmint8::coordinator
