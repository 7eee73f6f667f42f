#include "kernels/cuda/cuda_test_util.h"

namespace llmint8::gpu::testing {

std::string NoDeviceReason() {
  const absl::Status available = CheckDeviceAvailable();
  return available.ok() ? std::string() : available.ToString();
}

}  // namespace llmint8::gpu::testing
