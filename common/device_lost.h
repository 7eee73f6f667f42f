// A GPU whose CUDA context is lost: after a device-side fault (an illegal address, a launch
// failure, an uncorrectable ECC error...) every later CUDA call of the process fails with
// the same error, and only a new process gets a working context. Such errors carry a payload
// that says so, set where CUDA errors become Status (kernels/cuda/cuda_status.h) and read by
// the worker, which then stops serving so that its supervisor (`llmint8 serve`, Kubernetes)
// starts a fresh one (worker/worker_service.h).
//
//   if (IsDeviceLost(status)) ...
#ifndef LLMINT8_COMMON_DEVICE_LOST_H_
#define LLMINT8_COMMON_DEVICE_LOST_H_

#include "absl/status/status.h"
#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace llmint8 {

inline constexpr absl::string_view kDeviceLostPayload = "type.llmint8/device-lost";

// INTERNAL with the device-lost payload; the message says the process must restart.
inline absl::Status DeviceLostError(absl::string_view message) {
  absl::Status status = absl::InternalError(
      absl::StrCat(message, "; this process's GPU context is lost: restart the process"));
  status.SetPayload(kDeviceLostPayload, absl::Cord("1"));
  return status;
}

inline bool IsDeviceLost(const absl::Status& status) {
  return !status.ok() && status.GetPayload(kDeviceLostPayload).has_value();
}

}  // namespace llmint8

#endif  // LLMINT8_COMMON_DEVICE_LOST_H_
