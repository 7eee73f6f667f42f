#include "kernels/cuda/device.h"

#include <cuda_runtime_api.h>

#include "common/status_macros.h"
#include "kernels/cuda/cuda_status.h"

namespace llmint8::gpu {

absl::StatusOr<int> DeviceCount() {
  int count = 0;
  RETURN_IF_CUDA_ERROR(cudaGetDeviceCount(&count));
  return count;
}

absl::Status CheckDeviceAvailable() {
  absl::StatusOr<int> count = DeviceCount();
  if (!count.ok()) return count.status();
  if (*count == 0) return absl::UnavailableError("cudaGetDeviceCount returned 0 devices");
  return absl::OkStatus();
}

absl::Status SetDevice(int device) {
  RETURN_IF_CUDA_ERROR(cudaSetDevice(device));
  return absl::OkStatus();
}

absl::StatusOr<int64_t> FreeMemoryBytes(int device) {
  RETURN_IF_ERROR(SetDevice(device));
  size_t free_bytes = 0;
  size_t total_bytes = 0;
  RETURN_IF_CUDA_ERROR(cudaMemGetInfo(&free_bytes, &total_bytes));
  return static_cast<int64_t>(free_bytes);
}

absl::StatusOr<std::string> DeviceUuid(int device) {
  cudaDeviceProp prop{};
  RETURN_IF_CUDA_ERROR(cudaGetDeviceProperties(&prop, device));
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out = "GPU-";
  for (int i = 0; i < 16; ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) out.push_back('-');
    const auto byte = static_cast<unsigned char>(prop.uuid.bytes[i]);
    out.push_back(kHex[byte >> 4]);
    out.push_back(kHex[byte & 15]);
  }
  return out;
}

namespace internal {

absl::StatusOr<void*> Malloc(size_t bytes) {
  void* ptr = nullptr;
  RETURN_IF_CUDA_ERROR(cudaMalloc(&ptr, bytes));
  return ptr;
}

void Free(void* ptr) {
  if (ptr != nullptr) IgnoreCudaError(cudaFree(ptr));
}

absl::Status CopyHostToDevice(void* dst, const void* src, size_t bytes, cudaStream_t stream) {
  if (bytes == 0) return absl::OkStatus();
  RETURN_IF_CUDA_ERROR(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream));
  return absl::OkStatus();
}

absl::Status CopyDeviceToHost(void* dst, const void* src, size_t bytes, cudaStream_t stream) {
  if (bytes == 0) return absl::OkStatus();
  RETURN_IF_CUDA_ERROR(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream));
  return absl::OkStatus();
}

absl::Status CopyDeviceToDevice(void* dst, const void* src, size_t bytes, cudaStream_t stream) {
  if (bytes == 0) return absl::OkStatus();
  RETURN_IF_CUDA_ERROR(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream));
  return absl::OkStatus();
}

absl::Status MemsetAsync(void* dst, int value, size_t bytes, cudaStream_t stream) {
  if (bytes == 0) return absl::OkStatus();
  RETURN_IF_CUDA_ERROR(cudaMemsetAsync(dst, value, bytes, stream));
  return absl::OkStatus();
}

absl::Status SynchronizeStream(cudaStream_t stream) {
  RETURN_IF_CUDA_ERROR(cudaStreamSynchronize(stream));
  return absl::OkStatus();
}

}  // namespace internal

absl::StatusOr<Stream> Stream::Create() {
  Stream s;
  RETURN_IF_CUDA_ERROR(cudaStreamCreateWithFlags(&s.stream_, cudaStreamNonBlocking));
  return s;
}

Stream& Stream::operator=(Stream&& other) noexcept {
  if (this != &other) {
    if (stream_ != nullptr) IgnoreCudaError(cudaStreamDestroy(stream_));
    stream_ = std::exchange(other.stream_, nullptr);
  }
  return *this;
}

Stream::~Stream() {
  if (stream_ != nullptr) IgnoreCudaError(cudaStreamDestroy(stream_));
}

absl::StatusOr<Event> Event::Create() {
  Event e;
  RETURN_IF_CUDA_ERROR(cudaEventCreate(&e.event_));
  return e;
}

Event& Event::operator=(Event&& other) noexcept {
  if (this != &other) {
    if (event_ != nullptr) IgnoreCudaError(cudaEventDestroy(event_));
    event_ = std::exchange(other.event_, nullptr);
  }
  return *this;
}

Event::~Event() {
  if (event_ != nullptr) IgnoreCudaError(cudaEventDestroy(event_));
}

absl::Status Event::Record(cudaStream_t stream) {
  RETURN_IF_CUDA_ERROR(cudaEventRecord(event_, stream));
  return absl::OkStatus();
}

absl::Status Event::Synchronize() const {
  RETURN_IF_CUDA_ERROR(cudaEventSynchronize(event_));
  return absl::OkStatus();
}

absl::StatusOr<float> Event::ElapsedMs(const Event& start, const Event& end) {
  float ms = 0.0f;
  RETURN_IF_CUDA_ERROR(cudaEventElapsedTime(&ms, start.event_, end.event_));
  return ms;
}

}  // namespace llmint8::gpu
