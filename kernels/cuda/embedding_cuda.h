// Embedding lookups on the GPU (fp16 tables and output): the CUDA twins of kernels/embedding.h.
//
// Token embedding, vocab-parallel: this rank holds rows [row_begin, row_begin + rows) of the
// table; an id outside that slice gives a zero row, and the all-reduce over the ranks sums the
// full lookup. EmbeddingLookupCuda overwrites out; EmbeddingAccumulateCuda adds to it (fp32 add,
// one rounding).
//
// Learned positions (OPT): AddPositionEmbeddingCuda adds row positions[i] + kOptPositionOffset
// of the replicated position table to out row i. A batch of sequences passes, per token row,
// its position in its own sequence (past + j for the j-th new token of a sequence with `past`
// cached positions), uploaded beside the ids. Under tensor parallelism it runs after the token
// all-reduce (and after project_in when the model has one); at TP = 1 it may follow the lookup
// directly.
//
// The ids and positions live in device memory and are NOT validated here (that would need a
// device-to-host sync): the caller validates them on the host before the upload (token ids in
// [0, vocab), positions + 2 < max_position_embeddings + 2). Defined behaviour regardless: a
// negative id or an out-of-table position contributes a zero row, never a wild read.
//
// Shapes: ids/positions [m] int32; table [rows, dim] fp16 row-major; out [m, dim] fp16; all
// device memory. m == 0 is a no-op. Errors (InvalidArgument): m < 0, dim <= 0, rows < 0,
// row_begin < 0, null pointers (table may be null only when rows == 0: a rank with no vocab
// rows gets zeros). Asynchronous on `stream`; no allocation.
#ifndef LLMINT8_KERNELS_CUDA_EMBEDDING_CUDA_H_
#define LLMINT8_KERNELS_CUDA_EMBEDDING_CUDA_H_

#include <cstdint>

#include "absl/status/status.h"
#include "common/half.h"
#include "kernels/cuda/cuda_types.h"

namespace llmint8::kernels {

// OPT's learned position table starts at row 2 (HF OPTLearnedPositionalEmbedding).
inline constexpr int64_t kOptPositionOffset = 2;

absl::Status EmbeddingLookupCuda(const int32_t* ids, int64_t m, const Half* table,
                                 int64_t row_begin, int64_t rows, int64_t dim, Half* out,
                                 cudaStream_t stream);

absl::Status EmbeddingAccumulateCuda(const int32_t* ids, int64_t m, const Half* table,
                                     int64_t row_begin, int64_t rows, int64_t dim, Half* out,
                                     cudaStream_t stream);

// out[i, :] += table[positions[i] + kOptPositionOffset, :]; table has `rows` rows (OPT:
// max_position_embeddings + 2).
absl::Status AddPositionEmbeddingCuda(const int32_t* positions, int64_t m, const Half* table,
                                      int64_t rows, int64_t dim, Half* out, cudaStream_t stream);

}  // namespace llmint8::kernels

#endif  // LLMINT8_KERNELS_CUDA_EMBEDDING_CUDA_H_
