#include "kernels/quantize_weight.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "kernels/quantize_activation.h"

namespace llmint8::kernels {
namespace {

absl::Status CheckSizes(int64_t n, int64_t k, size_t w_size, size_t q_size, size_t absmax_size) {
  if (n <= 0 || k <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("weight shape must be positive, got [", n, ", ", k, "]"));
  }
  const size_t nk = static_cast<size_t>(n) * static_cast<size_t>(k);
  if (w_size != nk || q_size != nk || absmax_size != static_cast<size_t>(n)) {
    return absl::InvalidArgumentError(absl::StrCat("weight [", n, ", ", k, "] needs ", nk,
                                                   " values, ", nk, " int8 and ", n,
                                                   " scales; got ", w_size, ", ", q_size, ", ",
                                                   absmax_size));
  }
  return absl::OkStatus();
}

template <typename T>
float ToFloat(T v) {
  if constexpr (std::is_same_v<T, Half>) {
    return HalfToFloat(v);
  } else {
    return v;
  }
}

template <typename T>
absl::Status QuantizeRows(std::span<const T> w, int64_t n, int64_t k, std::span<int8_t> q,
                          std::span<float> absmax) {
  if (auto s = CheckSizes(n, k, w.size(), q.size(), absmax.size()); !s.ok()) return s;
  // Rows are independent: threads take blocks of them (a 66B-parameter shard is 65e9 weights).
  // A row with a non-finite value is left unquantized; the first such row is reported.
  int64_t bad_row = n;
#pragma omp parallel for schedule(static) reduction(min : bad_row) if (n * k >= (int64_t{1} << 20))
  for (int64_t r = 0; r < n; ++r) {
    const T* row = w.data() + r * k;
    float amax = 0.0f;
    bool finite = true;
    for (int64_t j = 0; j < k; ++j) {
      const float v = ToFloat(row[j]);
      finite &= std::isfinite(v);
      amax = std::max(amax, std::fabs(v));
    }
    if (!finite) {
      bad_row = std::min(bad_row, r);
      continue;
    }
    absmax[r] = amax;
    int8_t* qrow = q.data() + r * k;
    if (amax == 0.0f) {
      std::fill(qrow, qrow + k, int8_t{0});
      continue;
    }
    // Same fp32 element math as the activations (QuantizeToInt8), so CPU and CUDA agree.
    const float scale = 127.0f / amax;
    if (std::isfinite(scale)) {
      for (int64_t j = 0; j < k; ++j) qrow[j] = QuantizeToInt8(ToFloat(row[j]), scale);
    } else {  // subnormal absmax: 127 / absmax overflows
      for (int64_t j = 0; j < k; ++j) qrow[j] = QuantizeToInt8(ToFloat(row[j]) / amax, 127.0f);
    }
  }
  if (bad_row < n) {
    const T* row = w.data() + bad_row * k;
    int64_t j = 0;
    while (j < k && std::isfinite(ToFloat(row[j]))) ++j;
    return absl::InvalidArgumentError(absl::StrCat("weight row ", bad_row, " column ", j,
                                                   " is not finite (", ToFloat(row[j]), ")"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status QuantizeWeight(std::span<const float> w, int64_t n, int64_t k, std::span<int8_t> q,
                            std::span<float> absmax) {
  return QuantizeRows(w, n, k, q, absmax);
}

absl::Status QuantizeWeight(std::span<const Half> w, int64_t n, int64_t k, std::span<int8_t> q,
                            std::span<float> absmax) {
  return QuantizeRows(w, n, k, q, absmax);
}

absl::Status DequantizeWeight(std::span<const int8_t> q, std::span<const float> absmax, int64_t n,
                              int64_t k, std::span<float> w) {
  if (auto s = CheckSizes(n, k, w.size(), q.size(), absmax.size()); !s.ok()) return s;
  for (int64_t r = 0; r < n; ++r) {
    const float scale = absmax[r] / 127.0f;
    for (int64_t j = 0; j < k; ++j) w[r * k + j] = scale * static_cast<float>(q[r * k + j]);
  }
  return absl::OkStatus();
}

}  // namespace llmint8::kernels
