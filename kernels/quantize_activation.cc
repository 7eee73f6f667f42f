#include "kernels/quantize_activation.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"

namespace llmint8::kernels {
namespace {

// Whether x is quantized in int8 (|x| < t) rather than carried in the fp outlier product.
// False for |x| >= t and for NaN and +-Inf alike. With t == 0 nothing is an outlier.
bool IsInlier(float x, float threshold) { return threshold == 0.0f || std::fabs(x) < threshold; }

}  // namespace

absl::Status QuantizeActivation(std::span<const float> x, int64_t m, int64_t k, float threshold,
                                QuantizedActivation* out) {
  if (out == nullptr) return absl::InvalidArgumentError("QuantizeActivation: out is null");
  if (m <= 0 || k <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("activation shape must be positive, got [", m, ", ", k, "]"));
  }
  if (!(threshold >= 0.0f)) {  // also rejects NaN
    return absl::InvalidArgumentError(absl::StrCat(
        "outlier threshold must be >= 0 (0 disables decomposition), got ", threshold));
  }
  int64_t mk = 0;
  if (__builtin_mul_overflow(m, k, &mk) || x.size() != static_cast<size_t>(mk)) {
    return absl::InvalidArgumentError(absl::StrCat("activation [", m, ", ", k, "] needs m*k values, got ",
                                                   x.size()));
  }
  out->m = m;
  out->k = k;
  out->q.resize(mk);
  out->absmax.resize(m);
  out->outlier_cols.clear();

  // Pass 1 (t > 0): the outlier columns, those holding any outlier value.
  if (threshold > 0.0f) {
    std::vector<uint8_t> is_outlier(k, 0);
    for (int64_t i = 0; i < m; ++i) {
      const float* row = x.data() + i * k;
      for (int64_t j = 0; j < k; ++j) is_outlier[j] |= !IsInlier(row[j], threshold);
    }
    for (int64_t j = 0; j < k; ++j) {
      if (is_outlier[j]) out->outlier_cols.push_back(static_cast<int32_t>(j));
    }
  }
  const auto& cols = out->outlier_cols;
  const int64_t n_out = static_cast<int64_t>(cols.size());
  out->outliers.resize(m * n_out);

  // Pass 2, per row: absmax over the row's own non-outlier values, then quantize. With t > 0
  // the outlier test is per element, so a row never depends on the others: rows spread over
  // the OpenMP threads of a large step, each computed as alone.
#pragma omp parallel for schedule(static) if (mk >= (int64_t{1} << 16))
  for (int64_t i = 0; i < m; ++i) {
    const float* row = x.data() + i * k;
    int8_t* qrow = out->q.data() + i * k;
    float amax = 0.0f;
    bool finite = true;  // stays true with t > 0: values that are not outliers are finite
    for (int64_t j = 0; j < k; ++j) {
      if (!IsInlier(row[j], threshold)) continue;
      finite &= std::isfinite(row[j]);
      amax = std::max(amax, std::fabs(row[j]));
    }
    // std::max drops NaN when it is the second argument: a non-finite row is marked directly.
    if (!finite) amax = std::numeric_limits<float>::quiet_NaN();
    out->absmax[i] = amax;
    for (int64_t c = 0; c < n_out; ++c) {
      const float v = row[cols[c]];
      out->outliers[i * n_out + c] = IsInlier(v, threshold) ? 0.0f : v;
    }
    if (!(amax > 0.0f) || !std::isfinite(amax)) {  // zero row, or NaN row with t == 0
      std::fill(qrow, qrow + k, int8_t{0});
      continue;
    }
    // Outlier values (which may be NaN or Inf) are never converted: 0 in q.
    const float scale = 127.0f / amax;
    if (std::isfinite(scale)) {
      for (int64_t j = 0; j < k; ++j) {
        qrow[j] = IsInlier(row[j], threshold) ? QuantizeToInt8(row[j], scale) : int8_t{0};
      }
    } else {  // subnormal absmax: 127 / absmax overflows
      for (int64_t j = 0; j < k; ++j) {
        qrow[j] = IsInlier(row[j], threshold) ? QuantizeToInt8(row[j] / amax, 127.0f) : int8_t{0};
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace llmint8::kernels
