// A cuBLASLt handle, its workspace and a cache of matmul plans (descriptors + chosen algorithm),
// owned together. The GEMM ops in this directory (Int8GemmCuda, LinearF16Cuda, Int8LinearCuda)
// run through Matmul(); other code only creates the object and passes it along.
//
// Thread-compatible: one CublasLt per stream at a time (the workspace and the plan cache are not
// shared safely between concurrent calls). Plans are keyed by (type, m, n, k, bias, pointer
// alignments); the first call of a shape runs cuBLASLt's heuristic (tens of microseconds of host
// time), later calls reuse the plan, or the refusal when cuBLASLt had no algorithm. At most
// 4096 plans are kept (host memory only); past that the cache starts again empty.
#ifndef LLMINT8_KERNELS_CUDA_CUBLASLT_H_
#define LLMINT8_KERNELS_CUDA_CUBLASLT_H_

#include <cstddef>
#include <cstdint>
#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/cuda/cuda_types.h"

namespace llmint8::gpu {

enum class MatmulType {
  kInt8Int32,   // A, B int8; C int32; int32 accumulation (IMMA). No bias.
  kF16F32Acc,   // A, B, C fp16; fp32 accumulation; optional fp16 bias.
};

// C[m, n] = A[m, k] * B[n, k]^T (+ bias[n]); all row-major, densely packed.
// A is the activations, B the weight of an nn.Linear.
struct MatmulArgs {
  MatmulType type = MatmulType::kF16F32Acc;
  const void* a = nullptr;
  const void* b = nullptr;
  void* c = nullptr;
  const void* bias = nullptr;  // kF16F32Acc only; nullptr = no bias
  int64_t m = 0;
  int64_t n = 0;
  int64_t k = 0;
};

// Whether a Matmul error leaves the product to another kernel (a caller's automatic path):
// no algorithm for the shape, or none found for want of memory now.
inline bool CublasLtMayFallBack(const absl::Status& matmul) {
  return matmul.code() == absl::StatusCode::kUnimplemented ||
         matmul.code() == absl::StatusCode::kResourceExhausted;
}

class CublasLt {
 public:
  static constexpr size_t kDefaultWorkspaceBytes = size_t{32} << 20;

  static absl::StatusOr<CublasLt> Create(size_t workspace_bytes = kDefaultWorkspaceBytes);
  CublasLt();
  CublasLt(CublasLt&&) noexcept;
  CublasLt& operator=(CublasLt&&) noexcept;
  CublasLt(const CublasLt&) = delete;
  CublasLt& operator=(const CublasLt&) = delete;
  ~CublasLt();

  cublasLtHandle_t handle() const;
  size_t workspace_bytes() const;

  // Enqueues the matmul on `stream`. Errors: null pointers, non-positive sizes, a bias with
  // kInt8Int32 (InvalidArgument); no cuBLASLt algorithm for the shape (Unimplemented: for int8,
  // cuBLASLt needs k % 4 == 0 and n % 4 == 0 and 4-byte aligned pointers; remembered for the
  // shape); the algorithm search or the matmul failing for want of memory
  // (ResourceExhausted: the search is asked again next call). Whatever the matmul may have
  // written of its output then, a caller's fallback writes all of it again.
  absl::Status Matmul(const MatmulArgs& args, cudaStream_t stream);

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace llmint8::gpu

#endif  // LLMINT8_KERNELS_CUDA_CUBLASLT_H_
