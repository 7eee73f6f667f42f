// RAII owners for CUDA resources, usable from host code that must not include CUDA headers.
//
//   ASSIGN_OR_RETURN(gpu::Stream stream, gpu::Stream::Create());
//   ASSIGN_OR_RETURN(auto buf, gpu::DeviceBuffer<Half>::Allocate(m * k));
//   RETURN_IF_ERROR(buf.CopyFromHost(host_x, stream.get()));
//
// All types are move-only; destroying one frees its resource (errors on free are ignored: the
// context may already be gone at process exit). Every call that can fail returns a Status.
// Thread-compatible: an object may be used from one thread at a time.
#ifndef LLMINT8_KERNELS_CUDA_DEVICE_H_
#define LLMINT8_KERNELS_CUDA_DEVICE_H_

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "kernels/cuda/cuda_types.h"

namespace llmint8::gpu {

// Number of visible CUDA devices. An error (UNAVAILABLE) when the driver or runtime is unusable,
// e.g. on a machine without a GPU; tests skip on error or 0.
absl::StatusOr<int> DeviceCount();

// OK when at least one device is usable; otherwise the reason (for GTEST_SKIP messages).
absl::Status CheckDeviceAvailable();

// Makes `device` current for the calling thread.
absl::Status SetDevice(int device);

// Free bytes on `device` as cudaMemGetInfo reports them (what a new allocation can still get).
absl::StatusOr<int64_t> FreeMemoryBytes(int device);

// The device's UUID in nvidia-smi's form, "GPU-" then 32 hex digits in groups 8-4-4-4-12
// (cudaDeviceProp::uuid; a MIG instance has its own): the same physical device wherever it is
// seen from, so processes can tell whether they share one.
absl::StatusOr<std::string> DeviceUuid(int device);

namespace internal {
absl::StatusOr<void*> Malloc(size_t bytes);
void Free(void* ptr);
absl::Status CopyHostToDevice(void* dst, const void* src, size_t bytes, cudaStream_t stream);
absl::Status CopyDeviceToHost(void* dst, const void* src, size_t bytes, cudaStream_t stream);
absl::Status CopyDeviceToDevice(void* dst, const void* src, size_t bytes, cudaStream_t stream);
absl::Status MemsetAsync(void* dst, int value, size_t bytes, cudaStream_t stream);
absl::Status SynchronizeStream(cudaStream_t stream);
}  // namespace internal

// A stream created with cudaStreamNonBlocking.
class Stream {
 public:
  static absl::StatusOr<Stream> Create();
  Stream() = default;
  Stream(Stream&& other) noexcept : stream_(std::exchange(other.stream_, nullptr)) {}
  Stream& operator=(Stream&& other) noexcept;
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  ~Stream();

  cudaStream_t get() const { return stream_; }
  // Blocks until all work queued on the stream is done; reports asynchronous kernel faults.
  absl::Status Synchronize() const { return internal::SynchronizeStream(stream_); }

 private:
  cudaStream_t stream_ = nullptr;
};

// An event with timing enabled.
class Event {
 public:
  static absl::StatusOr<Event> Create();
  Event() = default;
  Event(Event&& other) noexcept : event_(std::exchange(other.event_, nullptr)) {}
  Event& operator=(Event&& other) noexcept;
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  ~Event();

  cudaEvent_t get() const { return event_; }
  absl::Status Record(cudaStream_t stream);
  absl::Status Synchronize() const;
  // Milliseconds between two recorded, completed events.
  static absl::StatusOr<float> ElapsedMs(const Event& start, const Event& end);

 private:
  cudaEvent_t event_ = nullptr;
};

// `count` elements of trivially copyable T in device memory (cudaMalloc: 256-byte aligned).
// Contents are uninitialized. Copies are asynchronous on `stream`: the host span must stay
// alive (and, for CopyToHost, unread) until the stream is synchronized.
template <typename T>
class DeviceBuffer {
 public:
  static absl::StatusOr<DeviceBuffer> Allocate(size_t count) {
    DeviceBuffer buf;
    if (count == 0) return buf;
    auto ptr = internal::Malloc(count * sizeof(T));
    if (!ptr.ok()) return ptr.status();
    buf.data_ = static_cast<T*>(*ptr);
    buf.size_ = count;
    return buf;
  }
  DeviceBuffer() = default;
  DeviceBuffer(DeviceBuffer&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept {
    if (this != &other) {
      internal::Free(data_);
      data_ = std::exchange(other.data_, nullptr);
      size_ = std::exchange(other.size_, 0);
    }
    return *this;
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() { internal::Free(data_); }

  T* data() const { return data_; }
  size_t size() const { return size_; }
  size_t bytes() const { return size_ * sizeof(T); }

  absl::Status CopyFromHost(std::span<const T> src, cudaStream_t stream) {
    if (src.size() > size_) {
      return absl::InvalidArgumentError(absl::StrCat("CopyFromHost: ", src.size(),
                                                     " elements do not fit a buffer of ", size_));
    }
    return internal::CopyHostToDevice(data_, src.data(), src.size_bytes(), stream);
  }
  absl::Status CopyToHost(std::span<T> dst, cudaStream_t stream) const {
    if (dst.size() > size_) {
      return absl::InvalidArgumentError(absl::StrCat("CopyToHost: ", dst.size(),
                                                     " elements requested from a buffer of ",
                                                     size_));
    }
    return internal::CopyDeviceToHost(dst.data(), data_, dst.size_bytes(), stream);
  }
  absl::Status SetZero(cudaStream_t stream) {
    return internal::MemsetAsync(data_, 0, bytes(), stream);
  }

 private:
  T* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace llmint8::gpu

#endif  // LLMINT8_KERNELS_CUDA_DEVICE_H_
