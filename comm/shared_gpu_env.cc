#include "comm/shared_gpu_env.h"

#include <stdlib.h>

#include <algorithm>
#include <string_view>

#include "absl/strings/str_cat.h"

namespace llmint8::comm {

std::vector<std::string> SharedGpuNcclEnv(int rank) {
  std::vector<std::string> env = {absl::StrCat("NCCL_HOSTID=llmint8-rank-", rank)};
  if (::getenv("NCCL_SOCKET_IFNAME") == nullptr) env.push_back("NCCL_SOCKET_IFNAME=lo");
  if (::getenv("NCCL_IB_DISABLE") == nullptr) env.push_back("NCCL_IB_DISABLE=1");
  // Sockets even where the image has a network plugin (libnccl-net.so) NCCL_IB_DISABLE misses.
  if (::getenv("NCCL_NET") == nullptr) env.push_back("NCCL_NET=Socket");
  return env;
}

std::vector<std::string> WithSharedGpuNcclEnv(std::vector<std::string> environment, int rank) {
  const std::vector<std::string> ours = SharedGpuNcclEnv(rank);
  std::erase_if(environment, [&ours](const std::string& e) {
    const size_t eq = e.find('=');
    if (eq == std::string::npos) return false;  // not an entry: left as it is
    const std::string_view name = std::string_view(e).substr(0, eq + 1);  // "NAME="
    return std::any_of(ours.begin(), ours.end(),
                       [name](const std::string& o) { return o.starts_with(name); });
  });
  environment.insert(environment.end(), ours.begin(), ours.end());
  return environment;
}

void ApplySharedGpuNcclEnv(int rank) {
  for (const std::string& e : SharedGpuNcclEnv(rank)) {
    const size_t eq = e.find('=');
    ::setenv(e.substr(0, eq).c_str(), e.substr(eq + 1).c_str(), 1);
  }
}

}  // namespace llmint8::comm
