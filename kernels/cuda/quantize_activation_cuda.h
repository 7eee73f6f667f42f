// LLM.int8() activation quantization with outlier detection on the GPU: the CUDA twin of
// kernels/quantize_activation.h, with fp16 input and no host synchronization.
//
// X is [m, k] row-major fp16 in device memory. With threshold t > 0 a value is an outlier when
// !(|X[i, j]| < t) (|X| >= t, NaN, +-Inf), per token as on the CPU (a row never depends on
// the others; see kernels/quantize_activation.h):
//   outlier columns O = { j : X[., j] holds an outlier }, ascending, of which the first
//                       `max_outliers` are kept (see "Cap" below)
//   absmax[i]  = max |X[i, j]| over the row's values that are not outliers
//   q[i, j]    = round_half_away(X[i, j] * (127 / absmax[i])), 0 for an outlier value in a kept
//                column
//   outliers[i * max_outliers + c] = X[i, O[c]] if that value is an outlier, else 0
//                                    (fp16, for c < kept)
// t == 0 disables decomposition (|O| = 0). Values are bit-identical to the CPU reference when
// |O| <= max_outliers.
//
// Cap: the outlier count stays on the device (counts[0] = kept = min(found, max_outliers),
// counts[1] = found), so later kernels read it without a host round trip.
// Outliers in columns past the cap are quantized with the row's scale, which did not see them:
// clipped to +-127 (NaN to 0), 0 in a row whose absmax is 0 (defined, less accurate: such a
// product is ~|x| / absmax too small; and which columns are past the cap depends on the whole
// batch);
// ReadOutlierCounts tells when that happened.
//
// Cost, t > 0: one cooperative launch (plus memsets of absmax, and of the column flags when
// m > 64). Each block owns a run of units of 32 columns x 64 rows; one read of a unit flags its
// outlier columns and merges each row's max below t into absmax (atomicMax); a grid-wide
// barrier makes flags and absmax final (two when m > 64: flags, then the per-tile counts),
// then each block writes its units' q and outliers, a tile's slot in the ascending outlier list
// being the count of all earlier tiles. At decode sizes X is read from device memory once (the
// later touches of a unit hit L1 / L2); at prefill sizes the row chunks keep thousands of
// units in flight. t == 0: one launch, a block per row. Needs a device with cooperative launch
// (every GPU since Pascal).
// Co-residency: the grid can fill the GPU, and a cooperative grid starts only when all of it
// fits. Keep one stream per process (as the shard backend does, NCCL included): a kernel that
// spins on another stream of the same process (an NCCL collective waiting for a peer whose
// progress is ordered after this grid) could then never yield. Separate processes sharing a GPU
// without MPS are time-sliced context by context, which is safe.
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
  // out of device memory; a device without cooperative launch. Sizes the grid for the current
  // device: use the object on that device.
  static absl::StatusOr<QuantizedActivationCuda> Create(
      int64_t max_m, int64_t k, int64_t max_outliers = kDefaultMaxOutlierColumns);
  // Device bytes Create allocates for these arguments (memory planning without a device).
  static int64_t Bytes(int64_t max_m, int64_t k, int64_t max_outliers = kDefaultMaxOutlierColumns);

  int64_t max_m = 0;
  int64_t k = 0;
  int64_t max_outliers = 0;
  int64_t m = 0;                            // rows of the last call
  gpu::DeviceBuffer<int8_t> q;              // max_m * k
  gpu::DeviceBuffer<float> absmax;          // max_m
  gpu::DeviceBuffer<int32_t> outlier_cols;  // max_outliers, ascending; first counts[0] valid
  gpu::DeviceBuffer<Half> outliers;         // max_m * max_outliers (row stride max_outliers)
  gpu::DeviceBuffer<int32_t> counts;        // [kept, found]
  // Scratch of the fused kernel: the column flags and the outlier count of each 32-column tile.
  gpu::DeviceBuffer<uint8_t> col_flags;    // k
  gpu::DeviceBuffer<int32_t> tile_counts;  // num_tiles
  int64_t num_tiles = 0;
  int64_t grid = 0;  // most blocks of the cooperative launch (what the device holds at once)
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
