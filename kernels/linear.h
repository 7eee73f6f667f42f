// The 16-bit linear baseline (CPU): Y = X W^T + b with W stored as fp16 (2 bytes/param, the
// memory an fp16 deployment pays) and computed in fp32. Also an fp32-weight variant used by
// the golden tests and for small fp32 matrices.
//
// Shapes: x [m, k]; the weight held transposed, wt = W^T [k, n] row-major (TransposeWeight
// makes it from W [n, k], the checkpoint's layout); bias [n] or empty; y [m, n].
//
// On CPUs with AVX2, FMA and F16C (all x86 since 2013) every output is the same arithmetic,
// whatever m is and whatever the other rows hold: acc = 0; acc = fma(x[i][j], wt[j][c], acc)
// for j = 0 .. k-1 in order; y[i][c] = acc + bias[c] (LinearRowsAreBatchInvariant). A token's
// logits do not depend on its batch mates, a prefill chunk's length or a prefix-cache hit, so
// equal seeds sample equal tokens; AVX2 and AVX-512 machines give the same bits. The kernel
// (linear.cc) keeps tiles of y in registers, the weight's fp16 widened in registers (decode) or
// once per block into L1 (prefill); no horizontal sums. Without AVX2, oneDNN's sgemm, which
// picks its summation order by m.
// Errors (InvalidArgument): m, n or k <= 0, or a size that does not match. Thread-safe.
#ifndef LLMINT8_KERNELS_LINEAR_H_
#define LLMINT8_KERNELS_LINEAR_H_

#include <cstdint>
#include <span>

#include "absl/status/status.h"
#include "common/half.h"

namespace llmint8::kernels {

absl::Status LinearF16(std::span<const float> x, int64_t m, std::span<const Half> wt, int64_t n,
                       int64_t k, std::span<const float> bias, std::span<float> y);
absl::Status LinearF32(std::span<const float> x, int64_t m, std::span<const float> wt, int64_t n,
                       int64_t k, std::span<const float> bias, std::span<float> y);

// wt [k, n] = W^T of w [n, k]. InvalidArgument when a size is not n * k.
absl::Status TransposeWeight(std::span<const Half> w, int64_t n, int64_t k, std::span<Half> wt);
absl::Status TransposeWeight(std::span<const float> w, int64_t n, int64_t k, std::span<float> wt);
// The same for `rows` rows of W, w [rows, k], into columns [c0, c0 + rows) of wt [k, n] (a
// matrix loaded a block of rows at a time). InvalidArgument when they do not fit.
absl::Status TransposeWeightRows(std::span<const Half> w, int64_t rows, int64_t k, int64_t c0,
                                 int64_t n, std::span<Half> wt);
absl::Status TransposeWeightRows(std::span<const float> w, int64_t rows, int64_t k, int64_t c0,
                                 int64_t n, std::span<float> wt);

// Whether this machine's LinearF16 / LinearF32 give each row of x the same bits in any batch
// (the order above); false where they take oneDNN's sgemm.
bool LinearRowsAreBatchInvariant();

}  // namespace llmint8::kernels

#endif  // LLMINT8_KERNELS_LINEAR_H_
