// CPU micro-benchmarks of the per-row ops of a step: greedy Argmax over a vocabulary row
// (OPT's 50,272 ids), LayerNorm and ReLU over a 200-token prefill's rows (1024 wide).
// items/s counts the values read.
//
//   llmint8_row_ops_benchmark
#include <cstdint>
#include <vector>

#include "benchmark/benchmark.h"
#include "kernels/activation.h"
#include "kernels/int8_test_util.h"
#include "kernels/layer_norm.h"
#include "kernels/sampling.h"

namespace llmint8::kernels {
namespace {

using ::llmint8::kernels::testing::RandomNormal;

void BM_Argmax(benchmark::State& state) {
  const std::vector<float> logits = RandomNormal(state.range(0), 1, 3.0f);
  for (auto _ : state) {
    absl::StatusOr<int32_t> id = Argmax(logits);
    if (!id.ok()) {
      state.SkipWithError("Argmax failed");
      break;
    }
    benchmark::DoNotOptimize(*id);
  }
  state.SetItemsProcessed(state.iterations() * state.range(0));
}

void BM_LayerNorm(benchmark::State& state) {
  const int64_t m = state.range(0), n = state.range(1);
  const std::vector<float> x = RandomNormal(m * n, 2);
  const std::vector<float> gamma(n, 1.0f), beta(n, 0.0f);
  std::vector<float> y(m * n);
  for (auto _ : state) {
    if (!LayerNorm(x, m, n, gamma, beta, 1e-5f, y).ok()) {
      state.SkipWithError("LayerNorm failed");
      break;
    }
    benchmark::DoNotOptimize(y.data());
  }
  state.SetItemsProcessed(state.iterations() * m * n);
}

void BM_Relu(benchmark::State& state) {
  const std::vector<float> x = RandomNormal(state.range(0) * state.range(1), 3);
  std::vector<float> y = x;
  for (auto _ : state) {
    y = x;  // fresh signs each time (the branchy loop mispredicted on them)
    ReluInPlace(y);
    benchmark::DoNotOptimize(y.data());
  }
  state.SetItemsProcessed(state.iterations() * state.range(0) * state.range(1));
}

BENCHMARK(BM_Argmax)->Arg(50272)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_LayerNorm)->Args({200, 1024})->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_Relu)->Args({200, 1024})->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace llmint8::kernels

BENCHMARK_MAIN();
