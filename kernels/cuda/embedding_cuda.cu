#include "kernels/cuda/embedding_cuda.h"

#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <climits>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "kernels/cuda/cuda_status.h"

namespace llmint8::kernels {
namespace {

constexpr int kThreads = 128;

// One block per output row. r = id - row_begin (row_begin may be negative: -2 reads OPT's
// position table at position + 2); rows outside [0, rows) read as zero.
__global__ void EmbeddingKernel(const int32_t* __restrict__ ids, const __half* __restrict__ table,
                                int64_t row_begin, int64_t rows, int64_t dim,
                                __half* __restrict__ out, bool accumulate) {
  const int64_t i = blockIdx.x;
  const int64_t r = static_cast<int64_t>(ids[i]) - row_begin;
  const bool hit = ids[i] >= 0 && r >= 0 && r < rows;
  const __half* t = hit ? table + r * dim : nullptr;
  __half* o = out + i * dim;
  for (int64_t j = threadIdx.x; j < dim; j += blockDim.x) {
    const float e = hit ? __half2float(t[j]) : 0.0f;
    o[j] = __float2half_rn(accumulate ? __fadd_rn(__half2float(o[j]), e) : e);
  }
}

absl::Status Embed(const char* op, const int32_t* ids, int64_t m, const Half* table,
                   int64_t row_begin, int64_t rows, int64_t dim, Half* out, bool accumulate,
                   cudaStream_t stream) {
  if (m < 0 || m > INT_MAX || dim <= 0 || rows < 0 || row_begin < -kOptPositionOffset) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": bad shape m=", m, " rows=", rows, " dim=", dim,
                     " row_begin=", row_begin, " (want 0 <= m < 2^31, rows >= 0, dim > 0)"));
  }
  if (ids == nullptr || out == nullptr || (table == nullptr && rows > 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": ids, out and (when rows > 0) table must be non-null"));
  }
  if (m == 0) return absl::OkStatus();
  EmbeddingKernel<<<static_cast<unsigned>(m), kThreads, 0, stream>>>(
      ids, reinterpret_cast<const __half*>(table), row_begin, rows, dim,
      reinterpret_cast<__half*>(out), accumulate);
  RETURN_IF_LAUNCH_ERROR("EmbeddingKernel");
  return absl::OkStatus();
}

absl::Status CheckRowBegin(const char* op, int64_t row_begin) {
  if (row_begin < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": row_begin must be >= 0, got ", row_begin));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status EmbeddingLookupCuda(const int32_t* ids, int64_t m, const Half* table,
                                 int64_t row_begin, int64_t rows, int64_t dim, Half* out,
                                 cudaStream_t stream) {
  RETURN_IF_ERROR(CheckRowBegin("EmbeddingLookupCuda", row_begin));
  return Embed("EmbeddingLookupCuda", ids, m, table, row_begin, rows, dim, out, false, stream);
}

absl::Status EmbeddingAccumulateCuda(const int32_t* ids, int64_t m, const Half* table,
                                     int64_t row_begin, int64_t rows, int64_t dim, Half* out,
                                     cudaStream_t stream) {
  RETURN_IF_ERROR(CheckRowBegin("EmbeddingAccumulateCuda", row_begin));
  return Embed("EmbeddingAccumulateCuda", ids, m, table, row_begin, rows, dim, out, true,
               stream);
}

absl::Status AddPositionEmbeddingCuda(const int32_t* positions, int64_t m, const Half* table,
                                      int64_t rows, int64_t dim, Half* out, cudaStream_t stream) {
  return Embed("AddPositionEmbeddingCuda", positions, m, table, -kOptPositionOffset, rows, dim,
               out, true, stream);
}

}  // namespace llmint8::kernels
