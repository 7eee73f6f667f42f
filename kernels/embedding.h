// Embedding lookup for a slice of a table (CPU; fp32 output), as used by the vocab-parallel
// token embedding: this rank holds rows [row_begin, row_begin + rows) of the full table, ids it
// does not hold give zero rows, and an all-reduce over the ranks sums the full lookup.
// The same op with row_begin = 0 reads the replicated position table.
//
// Shapes: ids [m]; table [rows, dim] row-major (fp32 or fp16); out [m, dim].
// EmbeddingLookup overwrites out; EmbeddingAccumulate adds to it (positions onto tokens).
// EmbeddingLookupTransposed reads a table held transposed, [dim, rows] row-major: on CPU the
// tied token embedding is also the LM head, which the linear takes as W^T (kernels/linear.h).
// Errors: size mismatches; a negative id (out-of-slice ids are not errors). No allocation.
#ifndef LLMINT8_KERNELS_EMBEDDING_H_
#define LLMINT8_KERNELS_EMBEDDING_H_

#include <cstdint>
#include <span>

#include "absl/status/status.h"
#include "common/half.h"

namespace llmint8::kernels {

absl::Status EmbeddingLookup(std::span<const int32_t> ids, std::span<const float> table,
                             int64_t row_begin, int64_t rows, int64_t dim, std::span<float> out);
absl::Status EmbeddingLookup(std::span<const int32_t> ids, std::span<const Half> table,
                             int64_t row_begin, int64_t rows, int64_t dim, std::span<float> out);

absl::Status EmbeddingLookupTransposed(std::span<const int32_t> ids, std::span<const float> table_t,
                                       int64_t row_begin, int64_t rows, int64_t dim,
                                       std::span<float> out);
absl::Status EmbeddingLookupTransposed(std::span<const int32_t> ids, std::span<const Half> table_t,
                                       int64_t row_begin, int64_t rows, int64_t dim,
                                       std::span<float> out);

absl::Status EmbeddingAccumulate(std::span<const int32_t> ids, std::span<const float> table,
                                 int64_t row_begin, int64_t rows, int64_t dim,
                                 std::span<float> out);
absl::Status EmbeddingAccumulate(std::span<const int32_t> ids, std::span<const Half> table,
                                 int64_t row_begin, int64_t rows, int64_t dim,
                                 std::span<float> out);

}  // namespace llmint8::kernels

#endif  // LLMINT8_KERNELS_EMBEDDING_H_
