// Where the ranks of a local tensor-parallel group run on this machine's GPUs (serve, eval).
//
// Rank r runs on device r % devices. With more ranks than GPUs, ranks share a device: NCCL
// refuses two ranks of one communicator on one GPU ("duplicate GPU") unless each rank's process
// has its own NCCL_HOSTID, which makes NCCL treat the ranks as separate hosts talking over
// sockets (correct, at socket bandwidth; how a one-GPU machine runs TP 2 and 4).
#ifndef LLMINT8_TOOLS_GPU_PLACEMENT_H_
#define LLMINT8_TOOLS_GPU_PLACEMENT_H_

#include <string>
#include <vector>

namespace llmint8::tools {

struct GpuPlacement {
  int cuda_device = 0;
  bool shares_gpu = false;  // more ranks than devices
};

// devices >= 1, 0 <= rank < tp.
GpuPlacement PlaceRank(int rank, int tp, int devices);

// "NAME=value" environment entries rank `rank`'s process needs when ranks share a GPU:
// NCCL_HOSTID, and NCCL_SOCKET_IFNAME=lo unless the environment already names an interface.
std::vector<std::string> SharedGpuEnv(int rank);

}  // namespace llmint8::tools

#endif  // LLMINT8_TOOLS_GPU_PLACEMENT_H_
