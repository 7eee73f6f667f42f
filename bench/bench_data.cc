#include <algorithm>
#include <cmath>
#include <cstdint>
#include <span>
#include <vector>

#include "bench/kernel_bench.h"

namespace llmint8::bench {
namespace {

// splitmix64: fast, seedable, good enough for benchmark data (1e9 values in seconds).
class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}
  uint64_t Next() {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  // Uniform in [lo, hi).
  float Uniform(float lo, float hi) {
    return lo + (hi - lo) * static_cast<float>(Next() >> 40) * (1.0f / 16777216.0f);
  }

 private:
  uint64_t state_;
};

}  // namespace

BenchData MakeBenchData(int64_t max_m, int64_t k, int64_t n, double outlier_frac, uint64_t seed) {
  BenchData d;
  d.m = max_m;
  d.k = k;
  d.n = n;
  Rng rng(seed);
  d.w.resize(n * k);
  for (Half& v : d.w) v = FloatToHalf(rng.Uniform(-0.05f, 0.05f));
  d.bias.resize(n);
  for (Half& v : d.bias) v = FloatToHalf(rng.Uniform(-0.5f, 0.5f));
  d.x.resize(max_m * k);
  for (Half& v : d.x) v = FloatToHalf(rng.Uniform(-2.0f, 2.0f));
  if (outlier_frac > 0.0) {
    const int64_t count =
        std::clamp<int64_t>(static_cast<int64_t>(std::llround(outlier_frac * k)), 1, k);
    for (int64_t c = 0; c < count; ++c) {
      const int64_t col = static_cast<int64_t>(rng.Next() % static_cast<uint64_t>(k));
      for (int64_t i = 0; i < max_m; ++i) {
        const float mag = rng.Uniform(8.0f, 40.0f);
        d.x[i * k + col] = FloatToHalf((rng.Next() & 1) ? mag : -mag);
      }
    }
  }
  return d;
}

double SampledRelativeError(const BenchData& d, int64_t m, const std::vector<float>& y) {
  const int64_t rows = std::min<int64_t>(m, 4);
  const int64_t cols = std::min<int64_t>(d.n, 256);
  double err2 = 0.0, ref2 = 0.0;
  for (int64_t a = 0; a < rows; ++a) {
    const int64_t i = a * m / rows;
    for (int64_t b = 0; b < cols; ++b) {
      const int64_t r = b * d.n / cols;
      double ref = HalfToFloat(d.bias[r]);
      for (int64_t j = 0; j < d.k; ++j) {
        ref += double{HalfToFloat(d.x[i * d.k + j])} * HalfToFloat(d.w[r * d.k + j]);
      }
      const double diff = double{y[i * d.n + r]} - ref;
      err2 += diff * diff;
      ref2 += ref * ref;
    }
  }
  return ref2 > 0.0 ? std::sqrt(err2 / ref2) : std::sqrt(err2);
}

}  // namespace llmint8::bench
