// llmint8_kernel_bench: fp16 linear vs LLM.int8() (with and without outlier decomposition) per
// weight shape and token count, printed as a markdown table. See bench/README.md.
#include <cstdint>
#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "bench/kernel_bench.h"

ABSL_FLAG(std::string, backend, "cpu", "cpu or cuda");
ABSL_FLAG(std::string, shapes, "",
          "KxN weight shapes, comma-separated (default: cuda 12288x36864,12288x49152,"
          "49152x12288,4096x4096; cpu 4096x4096,1024x4096)");
ABSL_FLAG(std::string, m, "",
          "token counts, comma-separated (default: cuda 1,8,32,128,512,2048; cpu 1,8,32,128)");
ABSL_FLAG(int, iters, 0, "timed iterations per measurement (default: cuda 50, cpu 3)");
ABSL_FLAG(int, warmup, -1, "untimed iterations first (default: cuda 5, cpu 1)");
ABSL_FLAG(double, threshold, 6.0, "LLM.int8() outlier threshold for the int8 column");
ABSL_FLAG(double, outlier_frac, 0.001, "fraction of activation columns made outliers");
ABSL_FLAG(int64_t, gemv_max_m, 32, "cuda: largest M that takes the small-M (GEMV) kernel");
ABSL_FLAG(int64_t, gemm_chunk_n, 0,
          "cuda: output columns per int8 GEMM chunk at the largest --m (0: as many as keep the "
          "int32 scratch within 16 MiB; >= N: one chunk, the scratch round-trips through "
          "device memory); smaller M widen the chunks to the same scratch");
ABSL_FLAG(uint64_t, seed, 1, "data seed");

namespace {

bool ParseList(absl::string_view text, std::vector<int64_t>* out) {
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipEmpty())) {
    int64_t v = 0;
    if (!absl::SimpleAtoi(part, &v) || v <= 0) return false;
    out->push_back(v);
  }
  return !out->empty();
}

bool ParseShapes(absl::string_view text, std::vector<std::pair<int64_t, int64_t>>* out) {
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipEmpty())) {
    const std::vector<absl::string_view> kn = absl::StrSplit(part, 'x');
    int64_t k = 0, n = 0;
    if (kn.size() != 2 || !absl::SimpleAtoi(kn[0], &k) || !absl::SimpleAtoi(kn[1], &n) ||
        k <= 0 || n <= 0) {
      return false;
    }
    out->emplace_back(k, n);
  }
  return !out->empty();
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const std::string backend = absl::GetFlag(FLAGS_backend);
  const bool cuda = backend == "cuda";
  if (!cuda && backend != "cpu") {
    std::cerr << "--backend must be cpu or cuda, got '" << backend << "'\n";
    return 2;
  }
  std::string shapes_text = absl::GetFlag(FLAGS_shapes);
  if (shapes_text.empty()) {
    shapes_text = cuda ? "12288x36864,12288x49152,49152x12288,4096x4096" : "4096x4096,1024x4096";
  }
  std::string m_text = absl::GetFlag(FLAGS_m);
  if (m_text.empty()) m_text = cuda ? "1,8,32,128,512,2048" : "1,8,32,128";
  std::vector<std::pair<int64_t, int64_t>> shapes;
  std::vector<int64_t> ms;
  if (!ParseShapes(shapes_text, &shapes)) {
    std::cerr << "--shapes must be KxN[,KxN...] with positive sizes, got '" << shapes_text << "'\n";
    return 2;
  }
  if (!ParseList(m_text, &ms)) {
    std::cerr << "--m must be a comma-separated list of positive integers, got '" << m_text
              << "'\n";
    return 2;
  }
  const double threshold = absl::GetFlag(FLAGS_threshold);
  if (!(threshold >= 0.0)) {
    std::cerr << "--threshold must be >= 0, got " << threshold << "\n";
    return 2;
  }

  std::vector<llmint8::bench::BenchRow> rows;
  for (const auto& [k, n] : shapes) {
    llmint8::bench::BenchCase c;
    c.k = k;
    c.n = n;
    c.ms = ms;
    c.iters = absl::GetFlag(FLAGS_iters) > 0 ? absl::GetFlag(FLAGS_iters) : (cuda ? 50 : 3);
    c.warmup = absl::GetFlag(FLAGS_warmup) >= 0 ? absl::GetFlag(FLAGS_warmup) : (cuda ? 5 : 1);
    c.threshold = static_cast<float>(threshold);
    c.outlier_frac = absl::GetFlag(FLAGS_outlier_frac);
    c.gemv_max_m = absl::GetFlag(FLAGS_gemv_max_m);
    c.gemm_chunk_n = absl::GetFlag(FLAGS_gemm_chunk_n);
    c.seed = absl::GetFlag(FLAGS_seed);
    auto result = cuda ? llmint8::bench::RunCudaBench(c) : llmint8::bench::RunCpuBench(c);
    if (!result.ok()) {
      std::cerr << "shape " << k << "x" << n << ": " << result.status() << "\n";
      return 1;
    }
    rows.insert(rows.end(), result->begin(), result->end());
    std::cerr << "done " << k << "x" << n << "\n";
  }
  std::cout << llmint8::bench::FormatTable(rows);
  return 0;
}
