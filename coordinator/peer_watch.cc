#include "coordinator/peer_watch.h"

#include <arpa/inet.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"

namespace llmint8::coordinator {
namespace {

// TCP states as /proc/net/tcp writes them (include/net/tcp_states.h).
constexpr int kEstablished = 0x01;
constexpr int kTimeWait = 0x06;
constexpr int kCloseWait = 0x08;

// "ADDRESS:PORT" as /proc/net/tcp (IPv4) or tcp6 writes it: the address's 32-bit words each
// as the host reads them, in hex, then the port; empty for an address that does not parse.
std::string TableField(const std::string& addr, int port) {
  unsigned char bytes[16];
  int words = 0;
  if (inet_pton(AF_INET, addr.c_str(), bytes) == 1) {
    words = 1;
  } else if (inet_pton(AF_INET6, addr.c_str(), bytes) == 1) {
    words = 4;
  } else {
    return "";
  }
  std::string out;
  for (int w = 0; w < words; ++w) {
    uint32_t word;
    std::memcpy(&word, bytes + 4 * w, sizeof(word));
    char hex[9];
    std::snprintf(hex, sizeof(hex), "%08X", word);
    out += hex;
  }
  char hex_port[5];
  std::snprintf(hex_port, sizeof(hex_port), "%04X", port & 0xffff);
  return absl::StrCat(out, ":", hex_port);
}

using Table = absl::flat_hash_map<std::string, int>;  // "LOCAL REMOTE" -> state

void ReadTable(const char* path, Table& table) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);  // the header
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string slot, local, remote, state;
    if (!(fields >> slot >> local >> remote >> state)) continue;
    int value = 0;
    if (std::sscanf(state.c_str(), "%x", &value) != 1) continue;
    // A connection that reused a 4-tuple still in TIME_WAIT: the live one counts.
    auto [it, added] = table.try_emplace(absl::StrCat(local, " ", remote), value);
    if (!added && it->second == kTimeWait) it->second = value;
  }
}

// The process's view of the tables, read again (outside the lock) once older than the
// asker's `refresh`; the others use the last one meanwhile.
class Snapshot {
 public:
  static Snapshot& Get() {
    static Snapshot* snapshot = new Snapshot();
    return *snapshot;
  }

  struct Found {
    std::optional<int> state;  // nullopt: not in the table
    uint64_t read = 0;         // which read of the tables said so
  };
  Found State(const std::string& key, absl::Duration refresh) {
    bool read = false;
    {
      absl::MutexLock lock(&mu_);
      const absl::Time now = absl::Now();
      if (!reading_ && now - read_ >= refresh) {
        reading_ = true;
        read = true;
      }
    }
    if (read) {
      auto fresh = std::make_shared<Table>();
      ReadTable("/proc/net/tcp", *fresh);
      ReadTable("/proc/net/tcp6", *fresh);
      absl::MutexLock lock(&mu_);
      table_ = std::move(fresh);
      read_ = absl::Now();
      ++reads_;
      reading_ = false;
    }
    std::shared_ptr<const Table> table;
    Found found;
    {
      absl::MutexLock lock(&mu_);
      table = table_;
      found.read = reads_;
    }
    const auto it = table->find(key);
    if (it != table->end()) found.state = it->second;
    return found;
  }

 private:
  absl::Mutex mu_;
  absl::Time read_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  bool reading_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t reads_ ABSL_GUARDED_BY(mu_) = 0;
  std::shared_ptr<const Table> table_ ABSL_GUARDED_BY(mu_) = std::make_shared<Table>();
};

}  // namespace

PeerWatch::PeerWatch(const std::string& local_addr, int local_port, const std::string& remote_addr,
                     int remote_port, absl::Duration refresh)
    : refresh_(refresh) {
  if (local_port <= 0 || remote_port <= 0) return;
  const std::string local = TableField(local_addr, local_port);
  const std::string remote = TableField(remote_addr, remote_port);
  if (!local.empty() && !remote.empty()) key_ = absl::StrCat(local, " ", remote);
}

bool PeerWatch::Gone() {
  if (gone_ || key_.empty()) return gone_;
  const Snapshot::Found found = Snapshot::Get().State(key_, refresh_);
  if (!found.state.has_value()) {
    // Reset (or closed and reaped) after it was seen open; in two reads of the table, as one
    // read may skip a row.
    if (seen_ && found.read != last_miss_) {
      last_miss_ = found.read;
      if (++misses_ >= 2) gone_ = true;
    }
    return gone_;
  }
  misses_ = 0;
  if (*found.state == kCloseWait) {
    gone_ = true;
  } else if (*found.state == kEstablished) {
    seen_ = true;
  }
  return gone_;
}

}  // namespace llmint8::coordinator
