// Which CUDA runtime errors leave the process's CUDA context unusable: after a device-side
// fault (an illegal address, a launch failure, an uncorrectable ECC error...) every later
// CUDA call fails alike and cudaGetLastError cannot clear it (common/device_lost.h says what
// llmint8 does then). For CUDA translation units only (kernels/cuda/, the NCCL backend of
// comm/): it includes the CUDA runtime's header.
#ifndef LLMINT8_COMMON_CUDA_STICKY_ERROR_H_
#define LLMINT8_COMMON_CUDA_STICKY_ERROR_H_

#include <cuda_runtime_api.h>

namespace llmint8 {

inline bool IsStickyCudaError(cudaError_t error) {
  switch (error) {
    case cudaErrorIllegalAddress:
    case cudaErrorLaunchFailure:
    case cudaErrorLaunchTimeout:
    case cudaErrorHardwareStackError:
    case cudaErrorIllegalInstruction:
    case cudaErrorMisalignedAddress:
    case cudaErrorInvalidAddressSpace:
    case cudaErrorInvalidPc:
    case cudaErrorAssert:
    case cudaErrorECCUncorrectable:
    case cudaErrorNvlinkUncorrectable:
    case cudaErrorContextIsDestroyed:
      return true;
    default:
      return false;
  }
}

}  // namespace llmint8

#endif  // LLMINT8_COMMON_CUDA_STICKY_ERROR_H_
