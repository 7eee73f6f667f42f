// CUDA runtime and cuBLAS(Lt) error codes -> absl::Status with the failing expression and
// file:line. For .cc/.cu files inside kernels/ and comm/ only: this header includes CUDA headers.
//
//   RETURN_IF_CUDA_ERROR(cudaMemcpyAsync(...));
//   RETURN_IF_CUBLAS_ERROR(cublasLtMatmul(...));
//   RETURN_IF_ERROR(LastLaunchStatus("QuantizeRows", __FILE__, __LINE__));   // after <<<...>>>
//
// Codes: out of memory -> RESOURCE_EXHAUSTED; no device / driver too old -> UNAVAILABLE;
// cuBLAS NOT_SUPPORTED -> UNIMPLEMENTED; anything else (an invalid value too, CUDA's or
// cuBLAS's: input is checked before any CUDA call, so it is a bug, not the client's) -> INTERNAL.
// A sticky error (common/cuda_sticky_error.h: the context is lost) is INTERNAL with the
// device-lost payload (common/device_lost.h).
//
// The runtime keeps one "last error" per host thread that every failing call sets
// (cudaErrorNotReady from a query too) and only cudaGetLastError resets, and the launch check reads
// it. So every CUDA failure that is handled (converted here, or ignored with IgnoreCudaError) is
// also cleared, or the next kernel launch would report it as its own.
#ifndef LLMINT8_KERNELS_CUDA_CUDA_STATUS_H_
#define LLMINT8_KERNELS_CUDA_CUDA_STATUS_H_

#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include "absl/status/status.h"

namespace llmint8::gpu {

absl::Status CudaErrorToStatus(cudaError_t error, const char* expr, const char* file, int line);
absl::Status CublasErrorToStatus(cublasStatus_t status, const char* expr, const char* file,
                                 int line);

// Status of the last kernel launch on this thread (cudaGetLastError), naming `kernel`.
absl::Status LastLaunchStatus(const char* kernel, const char* file, int line);

// For a failure nobody acts on (a free or destroy at exit): clears the thread's last error.
void IgnoreCudaError(cudaError_t error);

}  // namespace llmint8::gpu

#define RETURN_IF_CUDA_ERROR(expr)                                                      \
  do {                                                                                  \
    const cudaError_t llmint8_cuda_error_ = (expr);                                     \
    if (llmint8_cuda_error_ != cudaSuccess) {                                           \
      return ::llmint8::gpu::CudaErrorToStatus(llmint8_cuda_error_, #expr, __FILE__,    \
                                               __LINE__);                               \
    }                                                                                   \
  } while (0)

#define RETURN_IF_CUBLAS_ERROR(expr)                                                    \
  do {                                                                                  \
    const cublasStatus_t llmint8_cublas_status_ = (expr);                               \
    if (llmint8_cublas_status_ != CUBLAS_STATUS_SUCCESS) {                              \
      return ::llmint8::gpu::CublasErrorToStatus(llmint8_cublas_status_, #expr,         \
                                                 __FILE__, __LINE__);                   \
    }                                                                                   \
  } while (0)

#define RETURN_IF_LAUNCH_ERROR(kernel_name)                                             \
  do {                                                                                  \
    ::absl::Status llmint8_launch_status_ =                                             \
        ::llmint8::gpu::LastLaunchStatus(kernel_name, __FILE__, __LINE__);              \
    if (!llmint8_launch_status_.ok()) return llmint8_launch_status_;                    \
  } while (0)

#endif  // LLMINT8_KERNELS_CUDA_CUDA_STATUS_H_
