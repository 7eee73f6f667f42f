// int8 x int8 -> int32 GEMM on the GPU: the CUDA twin of kernels/int8_gemm.h.
//   C[m, n] = sum_j A[m, j] * B[n, j]   (A activations [m, k], B weight [n, k], row-major)
// Integer math is exact: results equal Int8GemmReference bit for bit.
//
// Algorithms:
//   kCublasLt - cuBLASLt IMMA (tensor cores). Needs k % 4 == 0, n % 4 == 0 and 4-byte aligned
//               pointers, else InvalidArgument naming the constraint.
//   kGemv     - the small-M streaming kernels (int8_gemv.h): any shape, reads B once per 32 rows
//               of A (int8 mma.sync where k % 16 == 0, else dp4a); fast for m <= 32, slow
//               for large m.
//   kAuto     - kGemv for m <= 32 or shapes cuBLASLt cannot take, else kCublasLt; kGemv too
//               when cuBLASLt finds no algorithm for the shape (Unimplemented).
// Inputs are int8 in [-127, 127] (what the quantizers produce): with -128 the k <= 2^17 bound
// below no longer rules out int32 overflow.
// Errors: m, n or k <= 0, k > 2^17 (int32 could overflow), null pointers. Asynchronous on
// `stream`; `lt` must not be used concurrently.
#ifndef LLMINT8_KERNELS_CUDA_INT8_GEMM_CUDA_H_
#define LLMINT8_KERNELS_CUDA_INT8_GEMM_CUDA_H_

#include <cstdint>

#include "absl/status/status.h"
#include "kernels/cuda/cublaslt.h"
#include "kernels/cuda/cuda_types.h"

namespace llmint8::kernels {

enum class Int8GemmAlgo { kAuto, kCublasLt, kGemv };

// The largest m the small-M kernels (int8_gemv.h) take by default, here and in Int8LinearCuda:
// the tensor-core GEMV reads m / 8 KiB of activations from L1 per 2 KiB of weight, so it stays
// on the weight stream up to 32 rows (llmint8_kernel_bench --gemv_max_m compares it with
// cuBLASLt there).
inline constexpr int64_t kDefaultGemvMaxM = 32;

// True when cuBLASLt's IMMA path accepts the shape and pointers (see above).
bool CublasLtInt8Supported(int64_t n, int64_t k, const void* a, const void* b, const void* c);

absl::Status Int8GemmCuda(gpu::CublasLt* lt, const int8_t* a, const int8_t* b, int64_t m,
                          int64_t n, int64_t k, int32_t* c, Int8GemmAlgo algo,
                          cudaStream_t stream);

}  // namespace llmint8::kernels

#endif  // LLMINT8_KERNELS_CUDA_INT8_GEMM_CUDA_H_
