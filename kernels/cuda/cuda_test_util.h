// Helpers for the GPU tests of this directory (test code only): skipping without a device, and
// synchronous host <-> device copies that turn failures into test failures.
#ifndef LLMINT8_KERNELS_CUDA_CUDA_TEST_UTIL_H_
#define LLMINT8_KERNELS_CUDA_CUDA_TEST_UTIL_H_

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cuda/device.h"

namespace llmint8::gpu::testing {

// Empty when a CUDA device is usable, else the reason (cudaGetDeviceCount's error or 0).
std::string NoDeviceReason();

#define LLMINT8_SKIP_WITHOUT_CUDA_DEVICE()                                     \
  do {                                                                        \
    const std::string llmint8_reason_ = ::llmint8::gpu::testing::NoDeviceReason(); \
    if (!llmint8_reason_.empty()) GTEST_SKIP() << "no CUDA device: " << llmint8_reason_; \
  } while (0)

// Device buffer holding a copy of `host` (synchronized). Fails the test (and returns an empty
// buffer) on error.
template <typename T>
DeviceBuffer<T> Upload(std::span<const T> host, const Stream& stream) {
  auto buf = DeviceBuffer<T>::Allocate(host.size());
  EXPECT_TRUE(buf.ok()) << buf.status();
  if (!buf.ok()) return {};
  const absl::Status copied = buf->CopyFromHost(host, stream.get());
  EXPECT_TRUE(copied.ok()) << copied;
  const absl::Status synced = stream.Synchronize();
  EXPECT_TRUE(synced.ok()) << synced;
  return std::move(*buf);
}

template <typename T>
DeviceBuffer<T> Upload(const std::vector<T>& host, const Stream& stream) {
  return Upload(std::span<const T>(host), stream);
}

// The first `count` elements of `buf`, after synchronizing `stream`.
template <typename T>
std::vector<T> Download(const DeviceBuffer<T>& buf, size_t count, const Stream& stream) {
  std::vector<T> host(count);
  const absl::Status copied = buf.CopyToHost(std::span<T>(host), stream.get());
  EXPECT_TRUE(copied.ok()) << copied;
  const absl::Status synced = stream.Synchronize();
  EXPECT_TRUE(synced.ok()) << synced;
  return host;
}

}  // namespace llmint8::gpu::testing

#endif  // LLMINT8_KERNELS_CUDA_CUDA_TEST_UTIL_H_
