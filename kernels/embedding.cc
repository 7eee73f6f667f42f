#include "kernels/embedding.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace llmint8::kernels {
namespace {

inline float ToFloat(float v) { return v; }
inline float ToFloat(Half v) { return HalfToFloat(v); }

template <typename T>
absl::Status Embed(std::span<const int32_t> ids, std::span<const T> table, int64_t row_begin,
                   int64_t rows, int64_t dim, std::span<float> out, bool accumulate,
                   bool transposed = false) {
  if (rows < 0 || dim <= 0 || row_begin < 0 ||
      table.size() != static_cast<size_t>(rows * dim) ||
      out.size() != ids.size() * static_cast<size_t>(dim)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Embedding: table has ", table.size(), " elements for rows=", rows, " dim=", dim,
        ", out has ", out.size(), " for ", ids.size(), " ids"));
  }
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("Embedding: id ", ids[i], " at position ", i, " is negative"));
    }
  }
  for (size_t i = 0; i < ids.size(); ++i) {
    float* o = out.data() + i * dim;
    const int64_t r = static_cast<int64_t>(ids[i]) - row_begin;
    if (r < 0 || r >= rows) {
      if (!accumulate) std::fill(o, o + dim, 0.0f);
      continue;
    }
    // Element (r, j) of the table: at r * dim + j, or j * rows + r when it is held transposed.
    const T* t = table.data() + (transposed ? r : r * dim);
    const int64_t step = transposed ? rows : 1;
    if (accumulate) {
      for (int64_t j = 0; j < dim; ++j) o[j] += ToFloat(t[j * step]);
    } else {
      for (int64_t j = 0; j < dim; ++j) o[j] = ToFloat(t[j * step]);
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status EmbeddingLookup(std::span<const int32_t> ids, std::span<const float> table,
                             int64_t row_begin, int64_t rows, int64_t dim, std::span<float> out) {
  return Embed(ids, table, row_begin, rows, dim, out, false);
}
absl::Status EmbeddingLookup(std::span<const int32_t> ids, std::span<const Half> table,
                             int64_t row_begin, int64_t rows, int64_t dim, std::span<float> out) {
  return Embed(ids, table, row_begin, rows, dim, out, false);
}
absl::Status EmbeddingLookupTransposed(std::span<const int32_t> ids, std::span<const float> table_t,
                                       int64_t row_begin, int64_t rows, int64_t dim,
                                       std::span<float> out) {
  return Embed(ids, table_t, row_begin, rows, dim, out, false, true);
}
absl::Status EmbeddingLookupTransposed(std::span<const int32_t> ids, std::span<const Half> table_t,
                                       int64_t row_begin, int64_t rows, int64_t dim,
                                       std::span<float> out) {
  return Embed(ids, table_t, row_begin, rows, dim, out, false, true);
}
absl::Status EmbeddingAccumulate(std::span<const int32_t> ids, std::span<const float> table,
                                 int64_t row_begin, int64_t rows, int64_t dim,
                                 std::span<float> out) {
  return Embed(ids, table, row_begin, rows, dim, out, true);
}
absl::Status EmbeddingAccumulate(std::span<const int32_t> ids, std::span<const Half> table,
                                 int64_t row_begin, int64_t rows, int64_t dim,
                                 std::span<float> out) {
  return Embed(ids, table, row_begin, rows, dim, out, true);
}

}  // namespace llmint8::kernels
