// Collectives over NCCL on device memory (GPU workers).
//
// Group formation: rank 0 creates the ncclUniqueId and publishes it through the Rendezvous
// (key "<key_prefix>nccl/unique_id"); the other ranks wait for it up to `options.timeout`.
// The communicator is non-blocking (ncclConfig_t.blocking = 0): init and every collective are
// polled against the timeout with ncclCommGetAsyncError, and on timeout or error the
// communicator is aborted (ncclCommAbort), so a dead peer yields a Status instead of a hang.
// Each collective runs on `options.cuda_stream` (ordered after earlier work there) and the
// call returns when it has completed on that stream.
//
// Several ranks may share one GPU when each process sets a distinct NCCL_HOSTID before
// creating its communicator (NCCL then treats them as different hosts and uses its network
// transport, e.g. sockets on NCCL_SOCKET_IFNAME=lo).
//
// Built only with CUDA (library llmint8_comm_nccl); without it the function returns
// Unimplemented.
#ifndef LLMINT8_COMM_NCCL_COMMUNICATOR_H_
#define LLMINT8_COMM_NCCL_COMMUNICATOR_H_

#include <memory>

#include "absl/status/statusor.h"
#include "comm/comm_options.h"
#include "comm/communicator.h"

namespace llmint8::comm {

// Uses rank, world_size, rendezvous, key_prefix, timeout, cuda_device, cuda_stream.
absl::StatusOr<std::unique_ptr<Communicator>> CreateNcclCommunicator(const CommOptions& options);

// Whether this build has the NCCL backend.
bool NcclBackendBuilt();

}  // namespace llmint8::comm

#endif  // LLMINT8_COMM_NCCL_COMMUNICATOR_H_
