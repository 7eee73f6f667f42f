// CPU micro-benchmarks of the linear layer variants: fp16 weights (LinearF16), LLM.int8()
// (Int8Linear, threshold 6 with 8 outlier columns) and the bare int8 GEMM (Int8Gemm).
// Shapes are (tokens m, outputs n, inputs k); items/s counts multiply-adds.
//
//   llmint8_int8_linear_benchmark --benchmark_filter=BM_Int8Linear
#include <cstdint>
#include <vector>

#include "benchmark/benchmark.h"
#include "kernels/int8_gemm.h"
#include "kernels/int8_linear.h"
#include "kernels/int8_test_util.h"
#include "kernels/linear.h"
#include "kernels/quantize_weight.h"

namespace llmint8::kernels {
namespace {

using ::llmint8::kernels::testing::RandomInt8;
using ::llmint8::kernels::testing::RandomNormal;
using ::llmint8::kernels::testing::ToHalf;

void SetCounters(benchmark::State& state, int64_t m, int64_t n, int64_t k, int64_t weight_bytes) {
  state.SetItemsProcessed(state.iterations() * m * n * k);
  state.SetBytesProcessed(state.iterations() * weight_bytes);
  state.counters["GFLOP/s"] = benchmark::Counter(static_cast<double>(2 * m * n * k),
                                                 benchmark::Counter::kIsIterationInvariantRate,
                                                 benchmark::Counter::kIs1000);
}

void BM_LinearF16(benchmark::State& state) {
  const int64_t m = state.range(0), n = state.range(1), k = state.range(2);
  const std::vector<float> x = RandomNormal(m * k, 1);
  const std::vector<Half> wt = ToHalf(RandomNormal(k * n, 2, 0.02f));  // W^T, random as W
  const std::vector<float> bias = RandomNormal(n, 3);
  std::vector<float> y(m * n);
  for (auto _ : state) {
    if (!LinearF16(x, m, wt, n, k, bias, y).ok()) state.SkipWithError("LinearF16 failed");
    benchmark::DoNotOptimize(y.data());
  }
  SetCounters(state, m, n, k, n * k * 2);
}

void BM_Int8Linear(benchmark::State& state) {
  const int64_t m = state.range(0), n = state.range(1), k = state.range(2);
  std::vector<float> x = RandomNormal(m * k, 1);
  for (int64_t c = 0; c < 8; ++c) {  // 8 outlier feature columns, as in OPT models
    for (int64_t i = 0; i < m; ++i) x[i * k + c * (k / 8)] *= 30.0f;
  }
  const std::vector<float> w = RandomNormal(n * k, 2, 0.02f);
  std::vector<int8_t> q(n * k);
  std::vector<float> absmax(n);
  if (!QuantizeWeight(w, n, k, q, absmax).ok()) state.SkipWithError("QuantizeWeight failed");
  const std::vector<float> bias = RandomNormal(n, 3);
  std::vector<float> y(m * n);
  Int8LinearScratch scratch;
  const Int8WeightView view{q, absmax, n, k};
  for (auto _ : state) {
    if (!Int8Linear(x, m, view, bias, kDefaultOutlierThreshold, y, &scratch).ok()) {
      state.SkipWithError("Int8Linear failed");
    }
    benchmark::DoNotOptimize(y.data());
  }
  SetCounters(state, m, n, k, n * k);
}

void BM_Int8Gemm(benchmark::State& state) {
  const int64_t m = state.range(0), n = state.range(1), k = state.range(2);
  const std::vector<int8_t> a = RandomInt8(m * k, 1);
  const std::vector<int8_t> b = RandomInt8(n * k, 2);
  std::vector<int32_t> c(m * n);
  for (auto _ : state) {
    if (!Int8Gemm(a, b, m, n, k, c).ok()) state.SkipWithError("Int8Gemm failed");
    benchmark::DoNotOptimize(c.data());
  }
  SetCounters(state, m, n, k, n * k);
}

// Decode (1, 17 tokens) and prefill (512) shapes of an OPT-1.3B-like layer (d = 2048) and an
// OPT-6.7B FC1 (4096 -> 16384).
void Shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"m", "n", "k"});
  for (int64_t m : {1, 17, 512}) {
    b->Args({m, 2048, 2048});
    b->Args({m, 16384, 4096});
  }
  b->Unit(benchmark::kMillisecond)->UseRealTime();
}

// Decode batches around the switch from the streaming kernel to the packed one (kLargeM in
// int8_gemm.cc): the bundled model's QKV (768 x 256) and FC2 (256 x 1024) at TP 1, and a
// 2048 x 2048 layer.
void DecodeBatchShapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"m", "n", "k"});
  for (int64_t m : {4, 6, 8, 12, 16, 24, 32}) {
    b->Args({m, 768, 256});
    b->Args({m, 256, 1024});
    b->Args({m, 2048, 2048});
  }
  b->Unit(benchmark::kMicrosecond)->UseRealTime();
}

// The bundled model's LM head at TP 2 (25136 vocabulary rows of 256) over decode batches:
// where the tiles widen the weights in registers (4 rows) or once into L1 (more).
void LmHeadShapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"m", "n", "k"});
  for (int64_t m : {1, 8, 16, 32, 64, 128}) b->Args({m, 25136, 256});
  b->Unit(benchmark::kMillisecond)->UseRealTime();
}

// The bundled model's layers at TP 1 over prefill chunks (--prefill_chunk 512): QKV (768 x 256),
// FC1 (1024 x 256), FC2 (256 x 1024).
void BundledPrefillShapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"m", "n", "k"});
  for (int64_t m : {32, 128, 512}) {
    b->Args({m, 768, 256});
    b->Args({m, 1024, 256});
    b->Args({m, 256, 1024});
  }
  b->Unit(benchmark::kMicrosecond)->UseRealTime();
}

BENCHMARK(BM_LinearF16)->Apply(Shapes);
BENCHMARK(BM_LinearF16)->Apply(LmHeadShapes);
BENCHMARK(BM_LinearF16)->Apply(BundledPrefillShapes);
BENCHMARK(BM_Int8Linear)->Apply(Shapes);
BENCHMARK(BM_Int8Gemm)->Apply(Shapes);
BENCHMARK(BM_Int8Gemm)->Apply(DecodeBatchShapes);

}  // namespace
}  // namespace llmint8::kernels

BENCHMARK_MAIN();
