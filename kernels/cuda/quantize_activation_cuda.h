// LLM.int8() activation quantization with outlier detection on the GPU: the CUDA twin of
// kernels/quantize_activation.h, with fp16 input and no host synchronization.
//
// X is [m, k] row-major fp16 in device memory. With threshold t > 0:
//   outlier columns O = { j : max_i |X[i, j]| >= t, or X[., j] holds NaN/Inf }, ascending,
//                       of which the first `max_outliers` are kept (see "Cap" below)
//   absmax[i]  = max_{j not in O} |X[i, j]|           (NaN if a non-outlier value is NaN/Inf)
//   q[i, j]    = round_half_away(X[i, j] * (127 / absmax[i])) for j not in O, 0 for j in O
//   outliers[i * max_outliers + c] = X[i, O[c]]       (fp16, for c < |O|)
// t == 0 disables decomposition (|O| = 0). Values are bit-identical to the CPU reference when
// |O| <= max_outliers.
//
// Cap: the outlier count stays on the device (counts[0] = kept = min(found, max_outliers),
// counts[1] = found), so later kernels read it without a host round trip. Columns past the
// cap are quantized as ordinary columns (defined, but less accurate); ReadOutlierCounts tells.
//
// Cost: three launches when t > 0 (column detection reads X once, a one-block compaction of
// the column flags into the ascending list, then one block per row computing absmax, gathering
// the outlier values and writing q, which reads the row again, mostly from L2); one launch
// when t == 0. The column max must see every row before any row can be scaled, hence the
// second read of X.
//
// Thread-compatible: concurrent calls need distinct QuantizedActivationCuda objects.
#ifndef LLMINT8_KERNELS_CUDA_QUANTIZE_ACTIVATION_CUDA_H_
#define LLMINT8_KERNELS_CUDA_QUANTIZE_ACTIVATION_CUDA_H_

#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/half.h"
#include "kernels/cuda/cuda_types.h"
#include "kernels/cuda/device.h"

namespace llmint8::kernels {

inline constexpr int64_t kDefaultMaxOutlierColumns = 256;

// Device buffers for one activation shape [<= max_m, k]; reused across calls.
struct QuantizedActivationCuda {
  // Errors: max_m, k or max_outliers <= 0 (max_outliers is clamped to k); k >= 2^31;
  // out of device memory.
  static absl::StatusOr<QuantizedActivationCuda> Create(
      int64_t max_m, int64_t k, int64_t max_outliers = kDefaultMaxOutlierColumns);

  int64_t max_m = 0;
  int64_t k = 0;
  int64_t max_outliers = 0;
  int64_t m = 0;                          // rows of the last call
  gpu::DeviceBuffer<int8_t> q;            // max_m * k
  gpu::DeviceBuffer<float> absmax;        // max_m
  gpu::DeviceBuffer<int32_t> outlier_cols;  // max_outliers, ascending; first counts[0] valid
  gpu::DeviceBuffer<Half> outliers;       // max_m * max_outliers (row stride max_outliers)
  gpu::DeviceBuffer<int32_t> counts;      // [kept, found]
  gpu::DeviceBuffer<int32_t> col_slot;    // k: slot in outlier_cols, or -1
  gpu::DeviceBuffer<uint8_t> col_flags;   // k: 1 where the column max crosses the threshold
};

// Enqueues the quantization of X on `stream`. Errors (InvalidArgument): m <= 0 or m > out->max_m,
// k != out->k, t < 0 or NaN, x null.
absl::Status QuantizeActivationCuda(const Half* x, int64_t m, int64_t k, float threshold,
                                    QuantizedActivationCuda* out, cudaStream_t stream);

struct OutlierCounts {
  int32_t kept = 0;
  int32_t found = 0;
};
// Copies counts to the host; synchronizes `stream` (diagnostics and tests, not the hot path).
absl::StatusOr<OutlierCounts> ReadOutlierCounts(const QuantizedActivationCuda& act,
                                                cudaStream_t stream);

}  // namespace llmint8::kernels

#endif  // LLMINT8_KERNELS_CUDA_QUANTIZE_ACTIVATION_CUDA_H_
