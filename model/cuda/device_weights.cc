#include "model/cuda/device_weights.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace llmint8::model::cuda {
namespace {

template <typename T>
absl::StatusOr<gpu::DeviceBuffer<T>> Upload(std::span<const T> host, cudaStream_t stream) {
  ASSIGN_OR_RETURN(auto buf, gpu::DeviceBuffer<T>::Allocate(host.size()));
  if (!host.empty()) RETURN_IF_ERROR(buf.CopyFromHost(host, stream));
  return buf;
}

int64_t Bytes(const gpu::DeviceBuffer<Half>& b) { return static_cast<int64_t>(b.bytes()); }

}  // namespace

void DeviceLinear::AddBytes(MemoryStats* s) const {
  s->fp16_weights += Bytes(w) + Bytes(bias);
  s->int8_weights += static_cast<int64_t>(q.bytes());
  s->scales += static_cast<int64_t>(absmax.bytes());
}

void DeviceNorm::AddBytes(MemoryStats* s) const {
  s->fp16_weights += Bytes(gain) + Bytes(shift);
}

void DeviceLayer::AddBytes(MemoryStats* s) const {
  attn_norm.AddBytes(s);
  ffn_norm.AddBytes(s);
  qkv.AddBytes(s);
  out_proj.AddBytes(s);
  fc1.AddBytes(s);
  fc2.AddBytes(s);
  s->fp16_weights += Bytes(out_bias) + Bytes(fc2_bias);
}

void DeviceShardWeights::AddBytes(MemoryStats* s) const {
  embed.AddBytes(s);
  positions.AddBytes(s);
  project_in.AddBytes(s);
  project_out.AddBytes(s);
  final_norm.AddBytes(s);
  for (const DeviceLayer& l : layers) l.AddBytes(s);
}

absl::StatusOr<gpu::DeviceBuffer<Half>> UploadHalf(std::span<const float> host,
                                                   cudaStream_t stream) {
  std::vector<Half> h(host.size());
  for (size_t i = 0; i < host.size(); ++i) h[i] = FloatToHalf(host[i]);
  // CUDA documents the staging of a pageable source before return for cudaMemcpy only: `h`
  // stays until the copy is done.
  ASSIGN_OR_RETURN(gpu::DeviceBuffer<Half> d, Upload<Half>(h, stream));
  RETURN_IF_ERROR(gpu::internal::SynchronizeStream(stream));
  return d;
}

absl::StatusOr<DeviceLinear> UploadLinear(const WeightMatrix& host, cudaStream_t stream) {
  DeviceLinear d;
  if (host.empty()) return d;
  if (host.transposed()) {  // cuBLASLt is given W row-major (Layout::kRowMajor)
    return absl::InternalError("UploadLinear: a weight laid out for the CPU linear (W^T)");
  }
  d.precision = host.precision();
  d.n = host.n();
  d.k = host.k();
  switch (host.precision()) {
    case Precision::kF16: {
      ASSIGN_OR_RETURN(d.w, Upload<Half>(host.f16(), stream));
      break;
    }
    case Precision::kInt8: {
      ASSIGN_OR_RETURN(d.q, Upload<int8_t>(host.q(), stream));
      ASSIGN_OR_RETURN(d.absmax, Upload<float>(host.absmax(), stream));
      break;
    }
    case Precision::kF32:
      return absl::InvalidArgumentError(
          "the CUDA backend holds weights in fp16 or int8; use precision f16 or int8");
  }
  ASSIGN_OR_RETURN(d.bias, UploadHalf(host.bias(), stream));
  return d;
}

absl::StatusOr<DeviceNorm> UploadNorm(const NormWeights& host, cudaStream_t stream) {
  DeviceNorm d;
  ASSIGN_OR_RETURN(d.gain, UploadHalf(host.gain, stream));
  ASSIGN_OR_RETURN(d.shift, UploadHalf(host.shift, stream));
  return d;
}

absl::StatusOr<DeviceLayer> UploadLayer(const LayerWeights& host, cudaStream_t stream) {
  DeviceLayer d;
  ASSIGN_OR_RETURN(d.attn_norm, UploadNorm(host.attn_norm, stream));
  ASSIGN_OR_RETURN(d.qkv, UploadLinear(host.qkv, stream));
  ASSIGN_OR_RETURN(d.out_proj, UploadLinear(host.out_proj, stream));
  ASSIGN_OR_RETURN(d.out_bias, UploadHalf(host.out_bias, stream));
  ASSIGN_OR_RETURN(d.ffn_norm, UploadNorm(host.ffn_norm, stream));
  ASSIGN_OR_RETURN(d.fc1, UploadLinear(host.fc1, stream));
  ASSIGN_OR_RETURN(d.fc2, UploadLinear(host.fc2, stream));
  ASSIGN_OR_RETURN(d.fc2_bias, UploadHalf(host.fc2_bias, stream));
  RETURN_IF_ERROR(gpu::internal::SynchronizeStream(stream));
  return d;
}

absl::Status UploadShared(const ShardWeights& host, DeviceShardWeights* out,
                          cudaStream_t stream) {
  ASSIGN_OR_RETURN(out->embed, UploadLinear(host.embed, stream));
  out->vocab_rows = host.vocab_rows;
  out->rows_per_rank = host.rows_per_rank;
  ASSIGN_OR_RETURN(out->positions, UploadLinear(host.positions, stream));
  ASSIGN_OR_RETURN(out->project_in, UploadLinear(host.project_in, stream));
  ASSIGN_OR_RETURN(out->project_out, UploadLinear(host.project_out, stream));
  out->has_final_norm = host.has_final_norm;
  ASSIGN_OR_RETURN(out->final_norm, UploadNorm(host.final_norm, stream));
  return gpu::internal::SynchronizeStream(stream);
}

MemoryStats DeviceLayerBytes(const OptConfig& c, int64_t lw, int64_t lf, Precision precision) {
  MemoryStats s;
  const int64_t h = c.hidden_size;
  const int64_t params = 3 * lw * h + h * lw + lf * h + h * lf;
  const int64_t rows = 3 * lw + h + lf + h;
  if (precision == Precision::kInt8) {
    s.int8_weights = params;
    s.scales = rows * 4;
  } else {
    s.fp16_weights = params * 2;
  }
  const int64_t biases = c.enable_bias ? rows : 0;
  const int64_t norms = c.layer_norm_elementwise_affine ? 4 * h : 0;
  s.fp16_weights += (biases + norms) * 2;
  return s;
}

}  // namespace llmint8::model::cuda
