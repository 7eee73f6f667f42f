// Linked instead of cuda_backend.cc when the project is built without CUDA.
#include "bench/kernel_bench.h"

namespace llmint8::bench {

absl::StatusOr<std::vector<BenchRow>> RunCudaBench(const BenchCase&) {
  return absl::UnimplementedError(
      "this build has no CUDA backend (configure on a machine with the CUDA toolkit, "
      "LLMINT8_CUDA=AUTO or ON), use --backend=cpu");
}

}  // namespace llmint8::bench
