#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "bench/kernel_bench.h"

namespace llmint8::bench {

std::string FormatTable(const std::vector<BenchRow>& rows) {
  std::string out =
      "| K x N | M | fp16 ms | LLM.int8() ms | int8 t=0 ms | speedup | speedup t=0 | "
      "int8 GB/s | int8 TOP/s | outlier cols | rel err int8 | rel err t=0 | rel err fp16 | "
      "weight MB int8 / fp16 |\n"
      "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n";
  for (const BenchRow& r : rows) {
    const double k = static_cast<double>(r.k), n = static_cast<double>(r.n),
                 m = static_cast<double>(r.m);
    const double int8_weight_bytes = n * k + 4.0 * n;  // int8 rows + fp32 row scales
    const double fp16_weight_bytes = 2.0 * n * k;
    // Bytes the LLM.int8() layer must move at least: weight, activations in, outputs out.
    const double bytes = int8_weight_bytes + 2.0 * m * k + 2.0 * m * n;
    const double gbs = bytes / (r.int8_ms * 1e-3) / 1e9;
    const double tops = 2.0 * m * n * k / (r.int8_ms * 1e-3) / 1e12;
    absl::StrAppend(
        &out,
        absl::StrFormat("| %dx%d | %d | %.3f | %.3f | %.3f | %.2fx | %.2fx | %.0f | %.1f | %s | "
                        "%.2e | %.2e | %.2e | %.1f / %.1f |\n",
                        r.k, r.n, r.m, r.fp16_ms, r.int8_ms, r.int8_t0_ms,
                        r.fp16_ms / r.int8_ms, r.fp16_ms / r.int8_t0_ms, gbs, tops,
                        r.outlier_cols >= 0 ? absl::StrCat(r.outlier_cols) : std::string("?"),
                        r.rel_err_int8, r.rel_err_t0, r.rel_err_fp16, int8_weight_bytes / 1e6,
                        fp16_weight_bytes / 1e6));
  }
  return out;
}

}  // namespace llmint8::bench
