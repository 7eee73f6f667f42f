// The kernel benchmark's pieces: one case = one weight shape K x N and a list of token counts M;
// each backend times the fp16 linear, LLM.int8() (outlier threshold on) and int8 with threshold 0
// on the same data and reports one BenchRow per M.
#ifndef LLMINT8_BENCH_KERNEL_BENCH_H_
#define LLMINT8_BENCH_KERNEL_BENCH_H_

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/half.h"

namespace llmint8::bench {

struct BenchCase {
  int64_t k = 0;  // input features
  int64_t n = 0;  // output features
  std::vector<int64_t> ms;  // token counts
  int iters = 10;
  int warmup = 2;
  float threshold = 6.0f;
  double outlier_frac = 0.001;  // fraction of the K columns made outliers (at least one if > 0)
  uint64_t seed = 1;
  int64_t gemv_max_m = 32;  // CUDA: largest M on the small-M kernel (kDefaultGemvMaxM)
  int64_t gemm_chunk_n = 0;  // CUDA: output columns per int8 GEMM chunk (0: the default)
};

struct BenchRow {
  int64_t k = 0, n = 0, m = 0;
  double fp16_ms = 0, int8_ms = 0, int8_t0_ms = 0;
  int64_t outlier_cols = -1;  // columns the threshold selected (-1: unknown)
  double rel_err_int8 = 0, rel_err_t0 = 0, rel_err_fp16 = 0;
};

// Deterministic inputs shared by the backends.
struct BenchData {
  int64_t m = 0, k = 0, n = 0;
  std::vector<Half> x;     // [m, k]
  std::vector<Half> w;     // [n, k]
  std::vector<Half> bias;  // [n]
};
// Weight ~ U(-0.05, 0.05), bias ~ U(-0.5, 0.5); activations ~ U(-2, 2) except
// max(1, round(outlier_frac * k)) columns (when outlier_frac > 0) whose values are +-(8..40):
// the systematic outlier features LLM.int8() is built for.
BenchData MakeBenchData(int64_t max_m, int64_t k, int64_t n, double outlier_frac, uint64_t seed);

// ||y - ref|| / ||ref|| on a sample (up to 4 rows x 256 columns), ref in fp64 from the fp16
// x, w, bias. `y` is [m, n] as float.
double SampledRelativeError(const BenchData& data, int64_t m, const std::vector<float>& y);

absl::StatusOr<std::vector<BenchRow>> RunCpuBench(const BenchCase& c);
// Unimplemented when built without CUDA.
absl::StatusOr<std::vector<BenchRow>> RunCudaBench(const BenchCase& c);

// Markdown table of the rows (header included).
std::string FormatTable(const std::vector<BenchRow>& rows);

}  // namespace llmint8::bench

#endif  // LLMINT8_BENCH_KERNEL_BENCH_H_
