// MakeCudaShardBackend in a build without the CUDA toolkit (LLMINT8_HAVE_CUDA off).
#include "model/shard_backend.h"

namespace llmint8::model {

absl::StatusOr<std::unique_ptr<ShardBackend>> MakeCudaShardBackend(
    const OptConfig&, const CheckpointSource&, const ShardPlan&, comm::Communicator*,
    const ShardOptions&, int64_t, const LoadProgressFn&) {
  return absl::UnimplementedError(
      "ShardOptions::device is cuda but this build has no CUDA support (configure with the CUDA "
      "toolkit installed, -DLLMINT8_CUDA=ON); use device cpu");
}

absl::StatusOr<int64_t> CudaFreeMemoryBytes(int) {
  return absl::UnimplementedError("this build has no CUDA support: no device memory to report");
}

absl::StatusOr<std::string> CudaDeviceUuid(int) {
  return absl::UnimplementedError("this build has no CUDA support: no device to name");
}

absl::StatusOr<int> CudaDeviceCount() {
  return absl::UnimplementedError(
      "this build has no CUDA support (configure with the CUDA "
      "toolkit installed, -DLLMINT8_CUDA=ON); use --device=cpu");
}

}  // namespace llmint8::model
