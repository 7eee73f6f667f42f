#include "tools/gpu_placement.h"

#include <cstdlib>

#include "absl/strings/str_cat.h"

namespace llmint8::tools {

GpuPlacement PlaceRank(int rank, int tp, int devices) {
  return GpuPlacement{rank % devices, tp > devices};
}

std::vector<std::string> SharedGpuEnv(int rank) {
  std::vector<std::string> env = {absl::StrCat("NCCL_HOSTID=llmint8-rank-", rank)};
  if (std::getenv("NCCL_SOCKET_IFNAME") == nullptr) env.push_back("NCCL_SOCKET_IFNAME=lo");
  return env;
}

}  // namespace llmint8::tools
