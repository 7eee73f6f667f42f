#include "kernels/int8_linear.h"

#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "common/grow_to.h"
#include "common/status_macros.h"
#include "kernels/int8_gemm.h"

namespace llmint8::kernels {
namespace {

constexpr int64_t kMaxK = int64_t{1} << 17;  // as Int8Gemm
constexpr float kInv127Squared = 1.0f / (127.0f * 127.0f);

absl::Status CheckShapes(std::span<const float> x, int64_t m, const Int8WeightView& w,
                         std::span<const float> bias, float threshold, std::span<const float> y) {
  const int64_t n = w.n, k = w.k;
  if (m <= 0 || n <= 0 || k <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Int8Linear: m, n, k must be positive, got m=", m, " n=", n, " k=", k));
  }
  if (k > kMaxK) {
    return absl::InvalidArgumentError(
        absl::StrCat("Int8Linear: k=", k, " exceeds ", kMaxK, "; split the layer along K"));
  }
  if (!(threshold >= 0.0f)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Int8Linear: outlier threshold must be >= 0 (0 disables decomposition), got ", threshold));
  }
  int64_t mk = 0, nk = 0, mn = 0;
  if (__builtin_mul_overflow(m, k, &mk) || __builtin_mul_overflow(n, k, &nk) ||
      __builtin_mul_overflow(m, n, &mn)) {
    return absl::InvalidArgumentError("Int8Linear: shape products overflow int64");
  }
  if (x.size() != static_cast<size_t>(mk) || w.q.size() != static_cast<size_t>(nk) ||
      w.absmax.size() != static_cast<size_t>(n) || y.size() != static_cast<size_t>(mn) ||
      (!bias.empty() && bias.size() != static_cast<size_t>(n))) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Int8Linear: m=", m, " n=", n, " k=", k, " needs x of m*k, weight of n*k, absmax of n, ",
        "bias of n or none, y of m*n; got ", x.size(), ", ", w.q.size(), ", ", w.absmax.size(),
        ", ", bias.size(), ", ", y.size()));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status Int8LinearReference(std::span<const float> x, int64_t m, const Int8WeightView& w,
                                 std::span<const float> bias, float threshold, std::span<float> y) {
  RETURN_IF_ERROR(CheckShapes(x, m, w, bias, threshold, y));
  const int64_t n = w.n, k = w.k;
  // Outlier values (t > 0): !(|x| < t), NaN and Inf included; each token row on its own.
  const auto outlier = [threshold](float v) {
    return threshold > 0.0f && !(std::fabs(v) < threshold);
  };
  std::vector<int8_t> xq(k);
  std::vector<int64_t> outlier_cols;  // of this row
  for (int64_t i = 0; i < m; ++i) {
    const float* xrow = x.data() + i * k;
    // Row scale over the non-outlier values; NaN if any of them is not finite (t == 0 only).
    float amax = 0.0f;
    bool finite = true;
    outlier_cols.clear();
    for (int64_t j = 0; j < k; ++j) {
      if (outlier(xrow[j])) {
        outlier_cols.push_back(j);
        continue;
      }
      finite &= std::isfinite(xrow[j]);
      amax = std::max(amax, std::fabs(xrow[j]));
    }
    if (!finite) amax = std::numeric_limits<float>::quiet_NaN();
    const bool quantize = amax > 0.0f && std::isfinite(amax);
    const float scale = quantize ? 127.0f / amax : 0.0f;
    for (int64_t j = 0; j < k; ++j) {
      xq[j] = 0;
      if (!quantize || outlier(xrow[j])) continue;
      xq[j] = std::isfinite(scale) ? QuantizeToInt8(xrow[j], scale)
                                   : QuantizeToInt8(xrow[j] / amax, 127.0f);
    }
    for (int64_t r = 0; r < n; ++r) {
      const int8_t* wrow = w.q.data() + r * k;
      int32_t acc = 0;
      for (int64_t j = 0; j < k; ++j) acc += int32_t{xq[j]} * int32_t{wrow[j]};
      double out = static_cast<double>(acc) * double{amax} * double{w.absmax[r]} / (127.0 * 127.0);
      const double wscale = double{w.absmax[r]} / 127.0;
      for (int64_t j : outlier_cols) out += double{xrow[j]} * (wscale * wrow[j]);
      if (!bias.empty()) out += bias[r];
      y[i * n + r] = static_cast<float>(out);
    }
  }
  return absl::OkStatus();
}

absl::Status Int8Linear(std::span<const float> x, int64_t m, const Int8WeightView& w,
                        std::span<const float> bias, float threshold, std::span<float> y,
                        Int8LinearScratch* scratch) {
  if (scratch == nullptr) return absl::InvalidArgumentError("Int8Linear: scratch is null");
  RETURN_IF_ERROR(CheckShapes(x, m, w, bias, threshold, y));
  const int64_t n = w.n, k = w.k;
  QuantizedActivation& act = scratch->act;
  RETURN_IF_ERROR(QuantizeActivation(x, m, k, threshold, &act));
  GrowTo(scratch->acc, m * n);
  RETURN_IF_ERROR(Int8Gemm(act.q, w.q, m, n, k, scratch->acc));

  // Dequantized weight columns of the few outliers, transposed to [|O|, n] so the outlier
  // product below is a contiguous axpy per (token, outlier).
  const int64_t n_out = static_cast<int64_t>(act.outlier_cols.size());
  GrowTo(scratch->outlier_w, n_out * n);
  float* ow = scratch->outlier_w.data();
  // One strided read per (row, outlier): latency-bound on large weights, so on every core.
#pragma omp parallel for schedule(static) if (n * n_out >= (int64_t{1} << 14))
  for (int64_t r = 0; r < n; ++r) {
    const float wscale = w.absmax[r] / 127.0f;
    const int8_t* wrow = w.q.data() + r * k;
    for (int64_t c = 0; c < n_out; ++c) ow[c * n + r] = wscale * wrow[act.outlier_cols[c]];
  }

  // Fused epilogue, one token row at a time: scales, bias, outlier product.
  const int32_t* acc = scratch->acc.data();
  const float* sw = w.absmax.data();
  const float* b = bias.empty() ? nullptr : bias.data();
  const float* xo = act.outliers.data();
  const float* sx = act.absmax.data();
  float* out = y.data();
#pragma omp parallel for schedule(static) if (m * n >= (int64_t{1} << 16))
  for (int64_t i = 0; i < m; ++i) {
    const float row_scale = sx[i] * kInv127Squared;
    const int32_t* arow = acc + i * n;
    float* yrow = out + i * n;
    if (b != nullptr) {
      for (int64_t r = 0; r < n; ++r)
        yrow[r] = static_cast<float>(arow[r]) * row_scale * sw[r] + b[r];
    } else {
      for (int64_t r = 0; r < n; ++r) yrow[r] = static_cast<float>(arow[r]) * row_scale * sw[r];
    }
    for (int64_t c = 0; c < n_out; ++c) {
      const float v = xo[i * n_out + c];
      // O is every row's outlier columns; this token's own are few, the rest hold exact
      // zeros, whose products would add nothing (the reference adds only the token's own).
      if (v == 0.0f) continue;
      const float* owc = ow + c * n;
      for (int64_t r = 0; r < n; ++r) yrow[r] += v * owc[r];
    }
  }
  return absl::OkStatus();
}

}  // namespace llmint8::kernels
