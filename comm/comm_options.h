// What it takes to form one rank's Communicator, for every backend.
#ifndef LLMINT8_COMM_COMM_OPTIONS_H_
#define LLMINT8_COMM_COMM_OPTIONS_H_

#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "comm/rendezvous.h"

namespace llmint8::comm {

struct CommOptions {
  int rank = 0;        // 0 <= rank < world_size
  int world_size = 1;  // ranks in the group

  // Where the ranks meet. Used only while the communicator is being created (so it must
  // outlive MakeCommunicator, not the communicator). Required when world_size > 1.
  Rendezvous* rendezvous = nullptr;
  // Namespace of this group's keys in the rendezvous, e.g. "model/opt-66b/epoch/3/". A group
  // re-formed after a failure must use a fresh prefix: stale keys would pass for live peers.
  std::string key_prefix;

  // Upper bound on group formation and on each collective. A peer that never shows up or dies
  // turns into DeadlineExceeded / Unavailable after at most about this long.
  absl::Duration timeout = absl::Seconds(60);

  // Gloo (TCP): the address this rank listens on and advertises to its peers ("127.0.0.1" for
  // one host; the pod IP or hostname across hosts). When `gloo_interface` is set (e.g. "eth0")
  // it is used instead of the hostname.
  std::string gloo_hostname = "127.0.0.1";
  std::string gloo_interface;

  // NCCL: the CUDA device of this rank and the stream (a cudaStream_t, kept opaque so this
  // header needs no CUDA) that collectives run on; nullptr means the legacy default stream.
  int cuda_device = 0;
  void* cuda_stream = nullptr;
};

// InvalidArgument when rank/world_size/timeout/rendezvous are inconsistent.
absl::Status ValidateCommOptions(const CommOptions& options);

}  // namespace llmint8::comm

#endif  // LLMINT8_COMM_COMM_OPTIONS_H_
