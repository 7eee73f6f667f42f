// The 16-bit linear baseline (CPU): Y = X W^T + b with W stored as fp16 (2 bytes/param, the
// memory an fp16 deployment pays) and computed in fp32. Also an fp32-weight variant used by
// the golden tests and for small fp32 matrices.
//
// Shapes: x [m, k], w [n, k] row-major, bias [n] or empty, y [m, n].
// Both use oneDNN's sgemm (fp32 accumulation, multithreaded). LinearF16 widens the weight to
// fp32 in blocks of rows (about 4 MiB of fp32 each, in a per-thread buffer kept across calls),
// with F16C where the CPU has it, so a huge matrix is never converted whole; for m <= 8 (decode)
// on CPUs with AVX2, FMA and F16C it instead reads each fp16 row once and dots it with every
// row of x in registers (fp32 FMA), half the memory traffic of the fp32 copy.
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

}  // namespace llmint8::kernels

#endif  // LLMINT8_KERNELS_LINEAR_H_
