#include "tests/scaleout/netns_topology.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "tests/scaleout/child_process.h"

namespace llmint8::scaleout {
namespace {

constexpr char kPrefix[] = "llmint8-scaleout-";

// Runs `ip args...`; stdout into `out` when given. OK on exit status 0.
absl::Status Ip(std::vector<std::string> args, std::string* out = nullptr) {
  args.insert(args.begin(), "/usr/sbin/ip");
  if (access(args[0].c_str(), X_OK) != 0) args[0] = "/sbin/ip";
  std::string captured;
  const int code = RunCapture(args, "", "/dev/null", &captured);
  if (out != nullptr) *out = captured;
  if (code != 0) {
    return absl::InternalError(
        absl::StrCat("`", absl::StrJoin(args, " "), "` exited with ", code));
  }
  return absl::OkStatus();
}

// Namespaces named by an earlier run of this test whose process is gone.
void RemoveStale() {
  std::string list;
  if (!Ip({"netns", "list"}, &list).ok()) return;
  for (absl::string_view line : absl::StrSplit(list, '\n', absl::SkipEmpty())) {
    const std::string name(line.substr(0, line.find(' ')));
    if (!absl::StartsWith(name, kPrefix)) continue;
    const std::string rest = name.substr(sizeof(kPrefix) - 1);
    int pid = 0;
    if (!absl::SimpleAtoi(rest.substr(0, rest.find('-')), &pid)) continue;
    if (pid > 0 && kill(pid, 0) != 0 && errno == ESRCH) Ip({"netns", "delete", name}).IgnoreError();
  }
}

}  // namespace

NetnsTopology::~NetnsTopology() {
  for (auto it = created_.rbegin(); it != created_.rend(); ++it) {
    Ip({"netns", "delete", *it}).IgnoreError();
  }
}

std::string NetnsTopology::address(int i) const { return absl::StrCat("10.77.0.", i + 1); }

absl::Status NetnsTopology::Create(int nodes) {
  if (geteuid() != 0) {
    return absl::FailedPreconditionError("not root: network namespaces need CAP_SYS_ADMIN");
  }
  RemoveStale();
  prefix_ = absl::StrCat(kPrefix, getpid(), "-");
  hub_ = prefix_ + "hub";
  if (absl::Status s = Ip({"netns", "add", hub_}); !s.ok()) {
    return absl::FailedPreconditionError(absl::StrCat("`ip netns add` fails here: ", s.message()));
  }
  created_.push_back(hub_);
  auto in = [](const std::string& ns, std::vector<std::string> args) {
    args.insert(args.begin(), {"-n", ns});
    return Ip(std::move(args));
  };
  if (absl::Status s = in(hub_, {"link", "add", "br0", "type", "bridge"}); !s.ok()) return s;
  if (absl::Status s = in(hub_, {"link", "set", "br0", "up"}); !s.ok()) return s;
  for (int i = 0; i < nodes; ++i) {
    const std::string ns = absl::StrCat(prefix_, "node", i);
    if (absl::Status s = Ip({"netns", "add", ns}); !s.ok()) return s;
    created_.push_back(ns);
    nodes_.push_back(ns);
    const std::string port = absl::StrCat("p", i);
    // The veth pair is created in the hub with its peer placed straight into the node.
    for (const std::vector<std::string>& step : std::vector<std::vector<std::string>>{
             {"link", "add", port, "type", "veth", "peer", "name", kInterface, "netns", ns},
             {"link", "set", port, "master", "br0"},
             {"link", "set", port, "up"}}) {
      if (absl::Status s = in(hub_, step); !s.ok()) return s;
    }
    for (const std::vector<std::string>& step : std::vector<std::vector<std::string>>{
             {"addr", "add", absl::StrCat(address(i), "/24"), "dev", kInterface},
             {"link", "set", kInterface, "up"},
             {"link", "set", "lo", "up"}}) {
      if (absl::Status s = in(ns, step); !s.ok()) return s;
    }
  }
  return absl::OkStatus();
}

}  // namespace llmint8::scaleout
