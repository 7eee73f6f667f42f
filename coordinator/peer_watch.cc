#include "coordinator/peer_watch.h"

#include <cstdint>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"

namespace llmint8::coordinator {
namespace {

// TCP states as /proc/net/tcp writes them (include/net/tcp_states.h).
constexpr int kEstablished = 0x01;
constexpr int kCloseWait = 0x08;

uint64_t Key(int local_port, int remote_port) {
  return (static_cast<uint64_t>(local_port) << 16) | static_cast<uint64_t>(remote_port);
}

// The port of an "ADDRESS:PORT" field (hex), or -1.
int PortOf(const std::string& field) {
  const size_t colon = field.rfind(':');
  if (colon == std::string::npos) return -1;
  try {
    return std::stoi(field.substr(colon + 1), nullptr, 16);
  } catch (...) {
    return -1;
  }
}

// (local port, remote port) -> state of every TCP connection in `path`.
void ReadTable(const char* path, absl::flat_hash_map<uint64_t, int>& table) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);  // the header
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string slot, local, remote, state;
    if (!(fields >> slot >> local >> remote >> state)) continue;
    const int lp = PortOf(local), rp = PortOf(remote);
    if (lp < 0 || rp <= 0) continue;  // listening sockets have remote port 0
    try {
      table[Key(lp, rp)] = std::stoi(state, nullptr, 16);
    } catch (...) {
    }
  }
}

// The process's view of the tables, read again when older than the asker's `refresh`.
class Snapshot {
 public:
  static Snapshot& Get() {
    static Snapshot* snapshot = new Snapshot();
    return *snapshot;
  }

  std::optional<int> State(int local_port, int remote_port, absl::Duration refresh) {
    absl::MutexLock lock(&mu_);
    const absl::Time now = absl::Now();
    if (now - read_ >= refresh) {
      table_.clear();
      ReadTable("/proc/net/tcp", table_);
      ReadTable("/proc/net/tcp6", table_);
      read_ = now;
    }
    const auto it = table_.find(Key(local_port, remote_port));
    if (it == table_.end()) return std::nullopt;
    return it->second;
  }

 private:
  absl::Mutex mu_;
  absl::Time read_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  absl::flat_hash_map<uint64_t, int> table_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

PeerWatch::PeerWatch(int local_port, int remote_port, absl::Duration refresh)
    : local_port_(local_port), remote_port_(remote_port), refresh_(refresh) {}

bool PeerWatch::Gone() {
  if (gone_ || local_port_ <= 0 || remote_port_ <= 0) return gone_;
  const std::optional<int> state = Snapshot::Get().State(local_port_, remote_port_, refresh_);
  if (!state.has_value()) {
    gone_ = seen_;  // reset (or closed and reaped) after it was seen open
  } else if (*state == kCloseWait) {
    gone_ = true;
  } else if (*state == kEstablished) {
    seen_ = true;
  }
  return gone_;
}

}  // namespace llmint8::coordinator
