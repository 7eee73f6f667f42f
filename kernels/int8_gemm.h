// int8 x int8 -> int32 GEMM (CPU): C[m, n] = sum_j A[m, j] * B[n, j]  (B is [n, k], i.e. "NT").
//
// Two implementations with identical results (integer math is exact):
//   Int8GemmReference - plain loops, the ground truth for every other implementation;
//   Int8Gemm          - the fast path, multithreaded (OpenMP, oneDNN's pool): oneDNN's s8s8s32
//                       GEMM where the CPU has AVX512-VNNI (the only place it is exact: without
//                       VNNI it saturates int16 pair sums), else our AVX2 kernel, else loops.
//                       DNNL_MAX_CPU_ISA=AVX2 in the environment forces the AVX2 kernel.
// Shapes: a [m, k], b [n, k], c [m, n], all row-major. Thread-safe (no shared state).
// Errors: sizes that do not match m, n, k; m, n or k <= 0 (InvalidArgument); k must be <= 2^17
// (int32 cannot overflow below that: 127 * 127 * 2^17 < 2^31; inputs are int8 in [-127, 127],
// what the quantizers produce: -128 in both operands at k = 2^17 could reach 2^31);
// ResourceExhausted when the AVX2 kernel's packing buffers (about 2 m k bytes) cannot be had.
#ifndef LLMINT8_KERNELS_INT8_GEMM_H_
#define LLMINT8_KERNELS_INT8_GEMM_H_

#include <cstdint>
#include <span>

#include "absl/status/status.h"

namespace llmint8::kernels {

absl::Status Int8GemmReference(std::span<const int8_t> a, std::span<const int8_t> b, int64_t m,
                               int64_t n, int64_t k, std::span<int32_t> c);
absl::Status Int8Gemm(std::span<const int8_t> a, std::span<const int8_t> b, int64_t m, int64_t n,
                      int64_t k, std::span<int32_t> c);

}  // namespace llmint8::kernels

#endif  // LLMINT8_KERNELS_INT8_GEMM_H_
