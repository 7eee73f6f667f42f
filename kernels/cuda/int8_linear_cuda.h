// The LLM.int8() linear layer on the GPU: the CUDA twin of kernels/int8_linear.h, fp16 in/out.
//
//   Y[i, r] = fp16( C[i, r] * sx[i] * sw[r] / 127^2                     (C = int32 Xq Wq^T)
//                 + sum_{c in O} X[i, c] * (sw[r] / 127) * Wq[r, c]       (outlier product)
//                 + bias[r] )
// with Xq, sx, O from QuantizeActivationCuda (threshold t; 0 disables the decomposition).
//
// Paths (Int8LinearPath):
//   kGemv - m <= gemv_max_m (decode; 32 by default): the small-M kernel (int8_gemv.h: int8
//           mma.sync with 16-byte loads where k % 16 == 0, else dp4a) streams Wq once per 32
//           rows; scales, outlier product and bias are applied in registers (one launch after
//           quantization). Any k, n.
//   kGemm - per chunk of output columns, cuBLASLt int8 IMMA GEMM to an int32 scratch, then one
//           fused epilogue kernel (scales, outlier product over the few outlier columns, bias ->
//           fp16). The scratch (16 MiB by default) stays in L2 between the two; a call with m
//           rows uses chunks of scratch / m columns. Needs k % 4 == 0 and n % 4 == 0
//           (InvalidArgument otherwise).
//   kAuto - kGemv when m <= gemv_max_m or the shape is not IMMA-friendly, else kGemm (and kGemv
//           after all when cuBLASLt has no int8 algorithm for the shape).
// Nothing synchronizes the host: the outlier count stays on the device.
//
// Shapes: x [m, k] fp16, weight [n, k] int8 + absmax [n] fp32, bias [n] fp16 or null, y [m, n]
// fp16; all device memory. Errors (InvalidArgument): m <= 0 or m > workspace max_m, k/n not the
// workspace's, null pointers, threshold < 0 or NaN, k > 2^17.
// Thread-compatible: concurrent calls need distinct workspaces and CublasLt objects.
#ifndef LLMINT8_KERNELS_CUDA_INT8_LINEAR_CUDA_H_
#define LLMINT8_KERNELS_CUDA_INT8_LINEAR_CUDA_H_

#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/half.h"
#include "kernels/cuda/cublaslt.h"
#include "kernels/cuda/cuda_types.h"
#include "kernels/cuda/device.h"
#include "kernels/cuda/int8_gemm_cuda.h"  // kDefaultGemvMaxM
#include "kernels/cuda/quantize_activation_cuda.h"

namespace llmint8::kernels {

// A non-owning view of a quantized weight in device memory; the storage outlives the view.
struct Int8WeightCudaView {
  const int8_t* q = nullptr;      // [n, k] row-major
  const float* absmax = nullptr;  // [n]
  int64_t n = 0;
  int64_t k = 0;
};

enum class Int8LinearPath { kAuto, kGemv, kGemm };

struct Int8LinearCudaOptions {
  float threshold = 6.0f;
  Int8LinearPath path = Int8LinearPath::kAuto;
  int64_t gemv_max_m = kDefaultGemvMaxM;  // kAuto: the largest m for the small-M kernels
};

// Scratch for one layer shape, reused across calls: the quantized activation, the int32
// accumulators and the dequantized outlier weight columns of the kGemm path.
struct Int8LinearCudaWorkspace {
  // max_m: the most rows a call may pass. The int32 scratch (max_m * chunk_n * 4 bytes) and the
  // outlier weight columns (max_outliers * n * 4 bytes) are allocated only when
  // max_m > gemm_min_m, i.e. when the kGemm path can be taken. gemm_chunk_n: output columns
  // per GEMM chunk at max_m rows, rounded up to a multiple of 4 (calls with fewer rows widen
  // their chunks to fill the same scratch); 0 picks the most whose scratch fits 16 MiB (a
  // multiple of 256, at least 256).
  static absl::StatusOr<Int8LinearCudaWorkspace> Create(
      int64_t max_m, int64_t k, int64_t n, int64_t max_outliers = kDefaultMaxOutlierColumns,
      int64_t gemm_min_m = 0, int64_t gemm_chunk_n = 0);
  // Device bytes Create allocates for these arguments (memory planning without a device).
  static int64_t Bytes(int64_t max_m, int64_t k, int64_t n,
                       int64_t max_outliers = kDefaultMaxOutlierColumns, int64_t gemm_min_m = 0,
                       int64_t gemm_chunk_n = 0);

  int64_t max_m = 0;
  int64_t k = 0;
  int64_t n = 0;
  int64_t chunk_n = 0;  // output columns per GEMM chunk at max_m rows; 0 without kGemm
  QuantizedActivationCuda act;
  gpu::DeviceBuffer<int32_t> acc;           // max_m * chunk_n (kGemm only)
  gpu::DeviceBuffer<float> outlier_weight;  // max_outliers * n (kGemm only)
};

absl::Status Int8LinearCuda(gpu::CublasLt* lt, const Half* x, int64_t m,
                            const Int8WeightCudaView& w, const Half* bias,
                            const Int8LinearCudaOptions& options, Int8LinearCudaWorkspace* ws,
                            Half* y, cudaStream_t stream);

}  // namespace llmint8::kernels

#endif  // LLMINT8_KERNELS_CUDA_INT8_LINEAR_CUDA_H_
