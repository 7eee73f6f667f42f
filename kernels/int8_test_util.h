// Shared helpers for the int8 op tests and benchmarks: seeded inputs, an fp64 reference matmul,
// error norms. Header-only, test code only.
#ifndef LLMINT8_KERNELS_INT8_TEST_UTIL_H_
#define LLMINT8_KERNELS_INT8_TEST_UTIL_H_

#include <cmath>
#include <cstdint>
#include <random>
#include <span>
#include <vector>

#include "common/half.h"

namespace llmint8::kernels::testing {

inline std::vector<float> RandomNormal(int64_t size, uint32_t seed, float stddev = 1.0f) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.0f, stddev);
  std::vector<float> v(size);
  for (float& x : v) x = dist(gen);
  return v;
}

// Uniform in [-127, 127].
inline std::vector<int8_t> RandomInt8(int64_t size, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_int_distribution<int> dist(-127, 127);
  std::vector<int8_t> v(size);
  for (int8_t& x : v) x = static_cast<int8_t>(dist(gen));
  return v;
}

inline std::vector<Half> ToHalf(std::span<const float> v) {
  std::vector<Half> h(v.size());
  for (size_t i = 0; i < v.size(); ++i) h[i] = FloatToHalf(v[i]);
  return h;
}

inline std::vector<float> ToFloat(std::span<const Half> h) {
  std::vector<float> v(h.size());
  for (size_t i = 0; i < h.size(); ++i) v[i] = HalfToFloat(h[i]);
  return v;
}

// y[i, r] = sum_j x[i, j] * w[r, j] (+ bias[r]) in fp64; x [m, k], w [n, k].
inline std::vector<double> MatMulNTDouble(std::span<const float> x, std::span<const float> w,
                                          std::span<const float> bias, int64_t m, int64_t n,
                                          int64_t k) {
  std::vector<double> y(m * n);
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t r = 0; r < n; ++r) {
      double acc = bias.empty() ? 0.0 : bias[r];
      for (int64_t j = 0; j < k; ++j) acc += double{x[i * k + j]} * double{w[r * k + j]};
      y[i * n + r] = acc;
    }
  }
  return y;
}

// sum_j |x[i, j] * w[r, j]| (+ |bias[r]|): the magnitude that bounds the rounding error of a
// float dot product (error <= k * eps * this, and in practice ~sqrt(k) * eps * this).
inline std::vector<double> AbsMatMulNTDouble(std::span<const float> x, std::span<const float> w,
                                             std::span<const float> bias, int64_t m, int64_t n,
                                             int64_t k) {
  std::vector<double> y(m * n);
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t r = 0; r < n; ++r) {
      double acc = bias.empty() ? 0.0 : std::fabs(bias[r]);
      for (int64_t j = 0; j < k; ++j) acc += std::fabs(double{x[i * k + j]} * double{w[r * k + j]});
      y[i * n + r] = acc;
    }
  }
  return y;
}

// ||got - want||_F / ||want||_F.
template <typename T>
double RelativeFrobeniusError(std::span<const T> got, std::span<const double> want) {
  double num = 0.0, den = 0.0;
  for (size_t i = 0; i < want.size(); ++i) {
    const double d = static_cast<double>(got[i]) - want[i];
    num += d * d;
    den += want[i] * want[i];
  }
  return std::sqrt(num / den);
}

}  // namespace llmint8::kernels::testing

#endif  // LLMINT8_KERNELS_INT8_TEST_UTIL_H_
