// CPU backend of the kernel benchmark: kernels/linear.h LinearF16 against kernels/int8_linear.h
// Int8Linear (oneDNN GEMMs on the OpenMP pool), wall-clock timing.
#include <chrono>
#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "bench/kernel_bench.h"
#include "common/status_macros.h"
#include "kernels/int8_linear.h"
#include "kernels/linear.h"
#include "kernels/quantize_activation.h"
#include "kernels/quantize_weight.h"

namespace llmint8::bench {
namespace {

template <typename Fn>
absl::StatusOr<double> TimeMs(const BenchCase& c, Fn&& fn) {
  for (int i = 0; i < c.warmup; ++i) RETURN_IF_ERROR(fn());
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < c.iters; ++i) RETURN_IF_ERROR(fn());
  const std::chrono::duration<double, std::milli> elapsed =
      std::chrono::steady_clock::now() - start;
  return elapsed.count() / c.iters;
}

}  // namespace

absl::StatusOr<std::vector<BenchRow>> RunCpuBench(const BenchCase& c) {
  int64_t max_m = 1;
  for (int64_t m : c.ms) max_m = std::max(max_m, m);
  const BenchData data = MakeBenchData(max_m, c.k, c.n, c.outlier_frac, c.seed);
  std::vector<int8_t> wq(c.n * c.k);
  std::vector<float> sw(c.n);
  RETURN_IF_ERROR(kernels::QuantizeWeight(std::span<const Half>(data.w), c.n, c.k, wq, sw));
  const kernels::Int8WeightView view{wq, sw, c.n, c.k};
  std::vector<Half> wt(c.n * c.k);  // the fp16 linear's layout, W^T
  RETURN_IF_ERROR(kernels::TransposeWeight(data.w, c.n, c.k, wt));
  std::vector<float> bias(c.n);
  for (int64_t r = 0; r < c.n; ++r) bias[r] = HalfToFloat(data.bias[r]);
  std::vector<float> x_all(max_m * c.k);
  for (size_t i = 0; i < x_all.size(); ++i) x_all[i] = HalfToFloat(data.x[i]);

  std::vector<BenchRow> rows;
  kernels::Int8LinearScratch scratch;
  for (int64_t m : c.ms) {
    const std::span<const float> x = std::span<const float>(x_all).first(m * c.k);
    std::vector<float> y_fp16(m * c.n), y_int8(m * c.n), y_t0(m * c.n);
    BenchRow row{.k = c.k, .n = c.n, .m = m};
    ASSIGN_OR_RETURN(row.fp16_ms, TimeMs(c, [&] {
                       return kernels::LinearF16(x, m, wt, c.n, c.k, bias, y_fp16);
                     }));
    ASSIGN_OR_RETURN(row.int8_ms, TimeMs(c, [&] {
                       return kernels::Int8Linear(x, m, view, bias, c.threshold, y_int8,
                                                  &scratch);
                     }));
    row.outlier_cols = static_cast<int64_t>(scratch.act.outlier_cols.size());
    ASSIGN_OR_RETURN(row.int8_t0_ms, TimeMs(c, [&] {
                       return kernels::Int8Linear(x, m, view, bias, 0.0f, y_t0, &scratch);
                     }));
    row.rel_err_fp16 = SampledRelativeError(data, m, y_fp16);
    row.rel_err_int8 = SampledRelativeError(data, m, y_int8);
    row.rel_err_t0 = SampledRelativeError(data, m, y_t0);
    rows.push_back(row);
  }
  return rows;
}

}  // namespace llmint8::bench
