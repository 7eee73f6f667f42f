// CUDA backend of the kernel benchmark: LinearF16Cuda (cuBLASLt fp16, fp32 accumulation)
// against Int8LinearCuda (quantize + outlier detection + int8 GEMM/GEMV + fused epilogue),
// timed with CUDA events over `iters` back-to-back launches on one stream.
#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "bench/kernel_bench.h"
#include "common/status_macros.h"
#include "kernels/cuda/cublaslt.h"
#include "kernels/cuda/device.h"
#include "kernels/cuda/int8_linear_cuda.h"
#include "kernels/cuda/linear_cuda.h"
#include "kernels/cuda/quantize_activation_cuda.h"
#include "kernels/cuda/quantize_weight_cuda.h"

namespace llmint8::bench {
namespace {

using gpu::DeviceBuffer;

template <typename Fn>
absl::StatusOr<double> TimeMs(const BenchCase& c, const gpu::Stream& stream, Fn&& fn) {
  for (int i = 0; i < c.warmup; ++i) RETURN_IF_ERROR(fn());
  ASSIGN_OR_RETURN(gpu::Event start, gpu::Event::Create());
  ASSIGN_OR_RETURN(gpu::Event stop, gpu::Event::Create());
  RETURN_IF_ERROR(start.Record(stream.get()));
  for (int i = 0; i < c.iters; ++i) RETURN_IF_ERROR(fn());
  RETURN_IF_ERROR(stop.Record(stream.get()));
  RETURN_IF_ERROR(stop.Synchronize());
  ASSIGN_OR_RETURN(float ms, gpu::Event::ElapsedMs(start, stop));
  return static_cast<double>(ms) / c.iters;
}

absl::StatusOr<std::vector<float>> DownloadAsFloat(const DeviceBuffer<Half>& buf, int64_t count,
                                                   const gpu::Stream& stream) {
  std::vector<Half> host(count);
  RETURN_IF_ERROR(buf.CopyToHost(std::span<Half>(host), stream.get()));
  RETURN_IF_ERROR(stream.Synchronize());
  std::vector<float> out(count);
  for (int64_t i = 0; i < count; ++i) out[i] = HalfToFloat(host[i]);
  return out;
}

template <typename T>
absl::StatusOr<DeviceBuffer<T>> UploadBuffer(std::span<const T> host, const gpu::Stream& stream) {
  ASSIGN_OR_RETURN(DeviceBuffer<T> buf, DeviceBuffer<T>::Allocate(host.size()));
  RETURN_IF_ERROR(buf.CopyFromHost(host, stream.get()));
  RETURN_IF_ERROR(stream.Synchronize());
  return buf;
}

}  // namespace

absl::StatusOr<std::vector<BenchRow>> RunCudaBench(const BenchCase& c) {
  RETURN_IF_ERROR(gpu::CheckDeviceAvailable());
  int64_t max_m = 1;
  for (int64_t m : c.ms) max_m = std::max(max_m, m);
  const BenchData data = MakeBenchData(max_m, c.k, c.n, c.outlier_frac, c.seed);

  ASSIGN_OR_RETURN(gpu::Stream stream, gpu::Stream::Create());
  ASSIGN_OR_RETURN(gpu::CublasLt lt, gpu::CublasLt::Create());
  ASSIGN_OR_RETURN(auto w, UploadBuffer<Half>(data.w, stream));
  ASSIGN_OR_RETURN(auto bias, UploadBuffer<Half>(data.bias, stream));
  ASSIGN_OR_RETURN(auto x, UploadBuffer<Half>(data.x, stream));
  ASSIGN_OR_RETURN(auto wq, DeviceBuffer<int8_t>::Allocate(c.n * c.k));
  ASSIGN_OR_RETURN(auto sw, DeviceBuffer<float>::Allocate(c.n));
  RETURN_IF_ERROR(
      kernels::QuantizeWeightCuda(w.data(), c.n, c.k, wq.data(), sw.data(), stream.get()));
  ASSIGN_OR_RETURN(auto y, DeviceBuffer<Half>::Allocate(max_m * c.n));
  ASSIGN_OR_RETURN(auto ws, kernels::Int8LinearCudaWorkspace::Create(
                                max_m, c.k, c.n, kernels::kDefaultMaxOutlierColumns,
                                /*gemm_min_m=*/c.gemv_max_m, c.gemm_chunk_n));
  const kernels::Int8WeightCudaView view{wq.data(), sw.data(), c.n, c.k};

  std::vector<BenchRow> rows;
  for (int64_t m : c.ms) {
    BenchRow row{.k = c.k, .n = c.n, .m = m};
    ASSIGN_OR_RETURN(row.fp16_ms, TimeMs(c, stream, [&] {
                       return kernels::LinearF16Cuda(&lt, x.data(), m, w.data(), c.n, c.k,
                                                     bias.data(), y.data(), stream.get());
                     }));
    ASSIGN_OR_RETURN(std::vector<float> y_fp16, DownloadAsFloat(y, m * c.n, stream));

    kernels::Int8LinearCudaOptions opt;
    opt.threshold = c.threshold;
    opt.gemv_max_m = c.gemv_max_m;
    ASSIGN_OR_RETURN(row.int8_ms, TimeMs(c, stream, [&] {
                       return kernels::Int8LinearCuda(&lt, x.data(), m, view, bias.data(), opt,
                                                      &ws, y.data(), stream.get());
                     }));
    ASSIGN_OR_RETURN(kernels::OutlierCounts counts,
                     kernels::ReadOutlierCounts(ws.act, stream.get()));
    row.outlier_cols = counts.found;
    ASSIGN_OR_RETURN(std::vector<float> y_int8, DownloadAsFloat(y, m * c.n, stream));

    opt.threshold = 0.0f;
    ASSIGN_OR_RETURN(row.int8_t0_ms, TimeMs(c, stream, [&] {
                       return kernels::Int8LinearCuda(&lt, x.data(), m, view, bias.data(), opt,
                                                      &ws, y.data(), stream.get());
                     }));
    ASSIGN_OR_RETURN(std::vector<float> y_t0, DownloadAsFloat(y, m * c.n, stream));

    row.rel_err_fp16 = SampledRelativeError(data, m, y_fp16);
    row.rel_err_int8 = SampledRelativeError(data, m, y_int8);
    row.rel_err_t0 = SampledRelativeError(data, m, y_t0);
    rows.push_back(row);
  }
  return rows;
}

}  // namespace llmint8::bench
