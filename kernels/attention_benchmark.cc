// CPU micro-benchmarks of CausalAttention: a prefill of `tokens` tokens (every query row over
// the keys before it) and one decode row over a context of `tokens`, OPT-125m's 12 heads of 64.
// items/s counts multiply-adds (q.k and p.v).
//
//   llmint8_attention_benchmark
#include <cstdint>
#include <vector>

#include "benchmark/benchmark.h"
#include "kernels/attention.h"
#include "kernels/int8_test_util.h"

namespace llmint8::kernels {
namespace {

using ::llmint8::kernels::testing::RandomNormal;

constexpr int64_t kHeads = 12, kHeadDim = 64, kWidth = kHeads * kHeadDim;

void Run(benchmark::State& state, int64_t num_new, int64_t context) {
  const std::vector<float> k = RandomNormal(context * kWidth, 1);
  const std::vector<float> v = RandomNormal(context * kWidth, 2);
  const std::vector<float> q = RandomNormal(num_new * kWidth, 3);
  std::vector<float> out(num_new * kWidth);
  const AttentionShape shape{kHeads, kHeadDim, kWidth, kWidth, kWidth, 0.125f};
  const AttentionSequence seq{0, num_new, context, k, v};
  std::vector<float> scratch(AttentionScratchFloats(shape, context));
  for (auto _ : state) {
    if (!CausalAttention(q, shape, {&seq, 1}, out, scratch).ok()) {
      state.SkipWithError("CausalAttention failed");
      break;
    }
    benchmark::DoNotOptimize(out.data());
  }
  // Query i of the new rows sees context - num_new + i + 1 keys.
  int64_t keys = 0;
  for (int64_t i = 0; i < num_new; ++i) keys += context - num_new + i + 1;
  state.SetItemsProcessed(state.iterations() * 2 * keys * kWidth);
}

void BM_AttentionPrefill(benchmark::State& state) { Run(state, state.range(0), state.range(0)); }
void BM_AttentionDecode(benchmark::State& state) { Run(state, 1, state.range(0)); }

// Wall time: the kernel runs on several OpenMP threads for steps of 2^18 multiply-adds and more.
BENCHMARK(BM_AttentionPrefill)->Arg(200)->Arg(1500)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_AttentionDecode)->Arg(256)->Arg(2048)->Unit(benchmark::kMicrosecond)->UseRealTime();

}  // namespace
}  // namespace llmint8::kernels

BENCHMARK_MAIN();
