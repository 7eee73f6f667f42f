// The environment NCCL needs when several ranks of one communicator share a GPU (more ranks than
// devices on a host, as on the one-GPU test machine): NCCL refuses two ranks on one device
// ("duplicate GPU") unless each rank's process has its own NCCL_HOSTID, which makes NCCL treat
// the ranks as separate hosts talking over sockets (correct, at socket bandwidth).
#ifndef LLMINT8_COMM_SHARED_GPU_ENV_H_
#define LLMINT8_COMM_SHARED_GPU_ENV_H_

#include <string>
#include <vector>

namespace llmint8::comm {

// "NAME=value" entries for rank `rank`: NCCL_HOSTID=llmint8-rank-<rank>, and, unless the
// environment already sets them, NCCL_SOCKET_IFNAME=lo, NCCL_IB_DISABLE=1 and NCCL_NET=Socket
// (the ranks are on this host: loopback sockets, even where a network plugin is installed).
std::vector<std::string> SharedGpuNcclEnv(int rank);

// `environment` ("NAME=value" entries, e.g. a copy of environ) with SharedGpuNcclEnv(rank) in
// it: an inherited NCCL_HOSTID is replaced (getenv reads the first of a name, so an appended
// one would lose and every rank would share the inherited id: "duplicate GPU").
std::vector<std::string> WithSharedGpuNcclEnv(std::vector<std::string> environment, int rank);

// setenv of every entry of SharedGpuNcclEnv(rank). Only where no other thread runs (e.g. right
// after fork, before NCCL or CUDA start): setenv is not thread-safe.
void ApplySharedGpuNcclEnv(int rank);

}  // namespace llmint8::comm

#endif  // LLMINT8_COMM_SHARED_GPU_ENV_H_
