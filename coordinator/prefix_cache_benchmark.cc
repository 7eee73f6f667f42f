// CPU micro-benchmarks of the scheduler's prefix matching: SharedStart over two prompts that
// share a long system prompt (the scheduler compares each new prompt with every running one),
// and PrefixCache::Find over a full cache of such prompts. Items/s counts compared tokens.
//
//   llmint8_prefix_cache_benchmark
#include <cstdint>
#include <numeric>
#include <vector>

#include "benchmark/benchmark.h"
#include "coordinator/prefix_cache.h"

namespace llmint8::coordinator {
namespace {

// A prompt of `length` tokens whose first `shared` are the same for every `variant`.
std::vector<int32_t> Prompt(int64_t length, int64_t shared, int32_t variant) {
  std::vector<int32_t> p(static_cast<size_t>(length));
  std::iota(p.begin(), p.end(), 1000);
  for (int64_t i = shared; i < length; ++i) p[static_cast<size_t>(i)] += 100000 * variant;
  return p;
}

void BM_SharedStart(benchmark::State& state) {
  const int64_t length = state.range(0), shared = length - 48;
  const std::vector<int32_t> a = Prompt(length, shared, 1), b = Prompt(length, shared, 2);
  for (auto _ : state) {
    benchmark::DoNotOptimize(SharedStart(a, b, a.size() - 1));
  }
  state.SetItemsProcessed(state.iterations() * shared);
}
BENCHMARK(BM_SharedStart)->Arg(128)->Arg(2048);

void BM_Find(benchmark::State& state) {
  const int64_t entries = state.range(0), length = state.range(1), shared = length - 48;
  PrefixCache cache({.max_entries = static_cast<size_t>(entries), .min_prefix = 16});
  for (int32_t e = 0; e < entries; ++e) {
    cache.Park(static_cast<uint64_t>(e + 1), Prompt(length, shared, e + 1), false);
  }
  const std::vector<int32_t> prompt = Prompt(length, shared, 0);
  for (auto _ : state) benchmark::DoNotOptimize(cache.Find(prompt, false));
  state.SetItemsProcessed(state.iterations() * entries * shared);
}
BENCHMARK(BM_Find)->Args({256, 2048});

}  // namespace
}  // namespace llmint8::coordinator

BENCHMARK_MAIN();
