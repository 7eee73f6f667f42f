// The 16-bit linear baseline (CPU): Y = X W^T + b with W stored as fp16 (2 bytes/param, the
// memory an fp16 deployment pays) and computed in fp32. Also an fp32-weight variant used by
// the golden tests and for small fp32 matrices.
//
// Shapes: x [m, k], w [n, k] row-major, bias [n] or empty, y [m, n]. fp32 accumulation.
//
// On CPUs with AVX2, FMA and F16C (all x86 since 2013) each output row is computed by the same
// arithmetic whatever m is and whatever the other rows hold (LinearRowsAreBatchInvariant): a
// token's logits do not depend on its batch mates, a prefill chunk's length or a prefix-cache
// hit, so equal seeds sample equal tokens. The kernel (linear.cc) reads fp16 weights once per
// 128 rows of x and widens them in registers (2 bytes/param of memory traffic); AVX-512 machines
// use 16-wide tiles, others 8-wide (a machine always the same). Without AVX2, oneDNN's sgemm,
// which picks its summation order by m.
// Errors (InvalidArgument): m, n or k <= 0, or a size that does not match. Thread-safe.
#ifndef LLMINT8_KERNELS_LINEAR_H_
#define LLMINT8_KERNELS_LINEAR_H_

#include <cstdint>
#include <span>

#include "absl/status/status.h"
#include "common/half.h"

namespace llmint8::kernels {

absl::Status LinearF16(std::span<const float> x, int64_t m, std::span<const Half> w, int64_t n,
                       int64_t k, std::span<const float> bias, std::span<float> y);
absl::Status LinearF32(std::span<const float> x, int64_t m, std::span<const float> w, int64_t n,
                       int64_t k, std::span<const float> bias, std::span<float> y);

// Whether this machine's LinearF16 / LinearF32 give each row of x the same bits in any batch.
bool LinearRowsAreBatchInvariant();

}  // namespace llmint8::kernels

#endif  // LLMINT8_KERNELS_LINEAR_H_
