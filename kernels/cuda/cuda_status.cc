#include "kernels/cuda/cuda_status.h"

#include "absl/strings/str_cat.h"
#include "common/cuda_sticky_error.h"
#include "common/device_lost.h"

namespace llmint8::gpu {

absl::Status CudaErrorToStatus(cudaError_t error, const char* expr, const char* file, int line) {
  if (error == cudaSuccess) return absl::OkStatus();
  (void)cudaGetLastError();  // reported here: not again by the next launch check (see header)
  const std::string msg = absl::StrCat(cudaGetErrorName(error), " (", cudaGetErrorString(error),
                                       ") in ", expr, " at ", file, ":", line);
  if (IsStickyCudaError(error)) return DeviceLostError(msg);
  switch (error) {
    case cudaErrorMemoryAllocation:
      return absl::ResourceExhaustedError(msg);
    case cudaErrorNoDevice:
    case cudaErrorInsufficientDriver:
    case cudaErrorDevicesUnavailable:
      return absl::UnavailableError(msg);
    // cudaErrorInvalidValue included: our own checks catch bad input before any CUDA call, so
    // an invalid value here is a bug, and the worker must not read it as the client's input
    // error (which keeps the group: worker_service.cc IsInputError).
    default:
      return absl::InternalError(msg);
  }
}

absl::Status CublasErrorToStatus(cublasStatus_t status, const char* expr, const char* file,
                                 int line) {
  if (status == CUBLAS_STATUS_SUCCESS) return absl::OkStatus();
  // A CUDA call inside cuBLAS that failed (its cudaMalloc, say) may have set the thread's
  // last error: handled here, not the next launch check's, and named.
  const cudaError_t cuda = cudaGetLastError();
  const std::string cause =
      cuda == cudaSuccess ? "" : absl::StrCat(" (CUDA: ", cudaGetErrorName(cuda), ")");
  if (IsStickyCudaError(cuda)) return CudaErrorToStatus(cuda, expr, file, line);  // device lost
  const std::string msg = absl::StrCat(
      "cuBLAS status ", static_cast<int>(status), " (", cublasLtGetStatusName(status), ": ",
      cublasLtGetStatusString(status), ") in ", expr, " at ", file, ":", line, cause);
  switch (status) {
    case CUBLAS_STATUS_ALLOC_FAILED:
      return absl::ResourceExhaustedError(msg);
    case CUBLAS_STATUS_NOT_SUPPORTED:
    case CUBLAS_STATUS_ARCH_MISMATCH:
      return absl::UnimplementedError(msg);
    case CUBLAS_STATUS_NOT_INITIALIZED:
      return absl::UnavailableError(msg);
    // CUBLAS_STATUS_INVALID_VALUE included, as cudaErrorInvalidValue above: a bug, not input.
    default:
      return absl::InternalError(msg);
  }
}

void IgnoreCudaError(cudaError_t error) {
  if (error != cudaSuccess) (void)cudaGetLastError();
}

absl::Status LastLaunchStatus(const char* kernel, const char* file, int line) {
  const cudaError_t error = cudaGetLastError();
  if (error == cudaSuccess) return absl::OkStatus();
  return CudaErrorToStatus(error, kernel, file, line);
}

}  // namespace llmint8::gpu
