// Network namespaces for the multi-host test: one "node" namespace per process, each with an
// eth0 (10.77.0.<i+1>/24) whose veth peer sits on a bridge in a separate hub namespace, so the
// nodes talk over real (virtual) interfaces and nothing touches the host's own namespace.
// Needs root and iproute2 (`ip`); every namespace carries this process's id in its name and
// is deleted by the destructor (namespaces left by a killed earlier run are removed at Create).
#ifndef LLMINT8_TESTS_SCALEOUT_NETNS_TOPOLOGY_H_
#define LLMINT8_TESTS_SCALEOUT_NETNS_TOPOLOGY_H_

#include <string>
#include <vector>

#include "absl/status/status.h"

namespace llmint8::scaleout {

class NetnsTopology {
 public:
  NetnsTopology() = default;
  ~NetnsTopology();  // deletes every namespace it created
  NetnsTopology(const NetnsTopology&) = delete;
  NetnsTopology& operator=(const NetnsTopology&) = delete;

  // Creates the hub and `nodes` node namespaces. FailedPrecondition when not root or `ip netns`
  // does not work here (the test skips), Internal when a later step fails.
  absl::Status Create(int nodes);

  const std::string& node(int i) const { return nodes_[i]; }  // namespace name
  std::string address(int i) const;                          // "10.77.0.<i+1>"
  static constexpr const char* kInterface = "eth0";

 private:
  std::string prefix_;
  std::string hub_;
  std::vector<std::string> nodes_;
  std::vector<std::string> created_;
};

}  // namespace llmint8::scaleout

#endif  // LLMINT8_TESTS_SCALEOUT_NETNS_TOPOLOGY_H_
