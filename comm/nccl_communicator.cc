#include "comm/nccl_communicator.h"

#include <cuda_runtime.h>
#include <nccl.h>

#include <cstring>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/cuda_sticky_error.h"
#include "common/device_lost.h"
#include "common/status_macros.h"

namespace llmint8::comm {
namespace {

std::string Where(int rank, int size) { return absl::StrCat("nccl rank ", rank, "/", size); }

ncclDataType_t ToNccl(DataType type) {
  switch (type) {
    case DataType::kFloat32:
      return ncclFloat32;
    case DataType::kFloat16:
      return ncclFloat16;
    case DataType::kUint8:
      return ncclUint8;
  }
  return ncclUint8;
}

absl::Status CudaError(const std::string& where, const char* what, cudaError_t err) {
  // Handled here: cleared from the thread's last error, which the model's next kernel launch
  // check reads (kernels/cuda/cuda_status.h).
  (void)cudaGetLastError();
  const std::string message = absl::StrCat(where, ": ", what, ": CUDA error ",
                                           cudaGetErrorName(err), ": ", cudaGetErrorString(err));
  return IsStickyCudaError(err) ? DeviceLostError(message) : absl::InternalError(message);
}

absl::Status NcclError(const std::string& where, const char* what, ncclResult_t r,
                       ncclComm_t comm) {
  const absl::StatusCode code =
      (r == ncclRemoteError || r == ncclSystemError)      ? absl::StatusCode::kUnavailable
      : r == ncclInvalidArgument || r == ncclInvalidUsage ? absl::StatusCode::kInvalidArgument
                                                          : absl::StatusCode::kInternal;
  // ncclGetLastError takes a null communicator too (init failures): the thread's last error.
  std::string detail;
  const char* last = ncclGetLastError(comm);
  if (last != nullptr && last[0] != '\0') detail = absl::StrCat(" (", last, ")");
  return absl::Status(code, absl::StrCat(where, ": ", what, ": ", ncclGetErrorString(r), detail));
}

// Owns an ncclComm_t, aborted when dropped (below).
class NcclCommHandle {
 public:
  NcclCommHandle() = default;
  NcclCommHandle(const NcclCommHandle&) = delete;
  NcclCommHandle& operator=(const NcclCommHandle&) = delete;
  // A communicator goes when its group is dissolved: a new LoadShard re-forms the group (often
  // because a peer was lost), a load failed, or the process ends. No collective is in flight
  // then (the worker runs one step at a time and waits for it), and the peers may be gone, so
  // ncclCommFinalize, which synchronizes with them, would wait for ranks that never come:
  // abort, which frees this rank's resources without them.
  ~NcclCommHandle() { Abort(); }

  ncclComm_t get() const { return comm_; }
  ncclComm_t* out() { return &comm_; }

  // Never blocks on peers; safe after a failure.
  void Abort() {
    if (comm_ != nullptr) ncclCommAbort(comm_);
    comm_ = nullptr;
  }

 private:
  ncclComm_t comm_ = nullptr;
};

struct DeviceFree {
  void operator()(void* p) const {
    if (cudaFree(p) != cudaSuccess) (void)cudaGetLastError();  // at teardown: nothing to act on
  }
};

class NcclCommunicator : public Communicator {
 public:
  explicit NcclCommunicator(const CommOptions& options)
      : rank_(options.rank),
        size_(options.world_size),
        device_(options.cuda_device),
        stream_(static_cast<cudaStream_t>(options.cuda_stream)),
        timeout_(options.timeout),
        where_(Where(rank_, size_)) {}

  ~NcclCommunicator() override {
    cudaSetDevice(device_);
    comm_.Abort();  // before the clear below, so no error it leaves stays on this thread
    if (event_ != nullptr) cudaEventDestroy(event_);
    (void)cudaGetLastError();  // nothing to act on at teardown; leave no error behind
  }

  absl::Status Init(Rendezvous* rendezvous, const std::string& key_prefix) {
    if (cudaError_t e = cudaSetDevice(device_); e != cudaSuccess) {
      return CudaError(where_, absl::StrCat("cudaSetDevice(", device_, ")").c_str(), e);
    }
    if (cudaError_t e = cudaEventCreateWithFlags(&event_, cudaEventDisableTiming);
        e != cudaSuccess) {
      return CudaError(where_, "cudaEventCreate", e);
    }
    ncclUniqueId id;
    const std::string key = key_prefix + "nccl/unique_id";
    if (rank_ == 0) {
      if (ncclResult_t r = ncclGetUniqueId(&id); r != ncclSuccess) {
        return NcclError(where_, "ncclGetUniqueId", r, nullptr);
      }
      if (size_ > 1) {
        absl::Status s = rendezvous->Set(key, std::string_view(id.internal, sizeof(id.internal)));
        if (!s.ok())
          return absl::Status(s.code(),
                              absl::StrCat(where_, ": publishing the unique id: ", s.message()));
      }
    } else {
      absl::StatusOr<std::string> value = rendezvous->Get(key, timeout_);
      if (!value.ok()) {
        return absl::Status(
            value.status().code(),
            absl::StrCat(where_, ": waiting for rank 0's unique id: ", value.status().message()));
      }
      if (value->size() != sizeof(id.internal)) {
        return absl::InvalidArgumentError(absl::StrCat(where_, ": the unique id under '", key,
                                                       "' has ", value->size(), " bytes, not ",
                                                       sizeof(id.internal)));
      }
      std::memcpy(id.internal, value->data(), sizeof(id.internal));
    }
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;
    const absl::Time deadline = absl::Now() + timeout_;
    ncclResult_t r = ncclCommInitRankConfig(comm_.out(), size_, id, rank_, &config);
    if (r != ncclSuccess && r != ncclInProgress) {
      comm_.Abort();
      return NcclError(where_, "ncclCommInitRankConfig", r, nullptr);
    }
    return WaitForComm("forming the group", deadline);
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  bool on_device() const override { return true; }
  std::string backend() const override { return "nccl"; }

  absl::Status Barrier() override {
    // An all-reduce of one float in a small device scratch buffer.
    RETURN_IF_ERROR(Usable("Barrier"));
    if (barrier_scratch_ == nullptr) {
      // On this communicator's device, whichever the calling thread has current; zeroed, so
      // that the all-reduce reads nothing uninitialized.
      if (cudaError_t e = cudaSetDevice(device_); e != cudaSuccess) {
        return CudaError(where_, "cudaSetDevice", e);
      }
      void* p = nullptr;
      if (cudaError_t e = cudaMalloc(&p, sizeof(float)); e != cudaSuccess) {
        return CudaError(where_, "cudaMalloc for Barrier", e);
      }
      if (cudaError_t e = cudaMemset(p, 0, sizeof(float)); e != cudaSuccess) {
        cudaFree(p);
        return CudaError(where_, "cudaMemset for Barrier", e);
      }
      barrier_scratch_.reset(p);
    }
    return Collective("Barrier", [&] {
      return ncclAllReduce(barrier_scratch_.get(), barrier_scratch_.get(), 1, ncclFloat32, ncclSum,
                           comm_.get(), stream_);
    });
  }

  void Abort(const absl::Status& why) override {
    if (!broken_.ok()) return;  // aborted when it broke
    broken_ =
        absl::AbortedError(absl::StrCat(where_, ": this rank left the group: ", why.ToString()));
    if (cudaSetDevice(device_) != cudaSuccess) (void)cudaGetLastError();
    comm_.Abort();
    (void)cudaGetLastError();  // ncclCommAbort's, if any: not the next launch check's
  }

 protected:
  absl::Status AllReduceSumImpl(void* data, size_t count, DataType type) override {
    RETURN_IF_ERROR(Usable("AllReduceSum"));
    if (count == 0) return absl::OkStatus();
    return Collective("AllReduceSum", [&] {
      return ncclAllReduce(data, data, count, ToNccl(type), ncclSum, comm_.get(), stream_);
    });
  }
  absl::Status AllGatherImpl(const void* in, void* out, size_t count, DataType type) override {
    RETURN_IF_ERROR(Usable("AllGather"));
    if (count == 0) return absl::OkStatus();
    return Collective("AllGather", [&] {
      return ncclAllGather(in, out, count, ToNccl(type), comm_.get(), stream_);
    });
  }
  absl::Status BroadcastImpl(void* data, size_t bytes, int root) override {
    RETURN_IF_ERROR(Usable("Broadcast"));
    if (bytes == 0) return absl::OkStatus();
    return Collective("Broadcast", [&] {
      return ncclBroadcast(data, data, bytes, ncclUint8, root, comm_.get(), stream_);
    });
  }

 private:
  absl::Status Usable(const char* what) const {
    if (broken_.ok()) return absl::OkStatus();
    return absl::FailedPreconditionError(
        absl::StrCat(where_, ": ", what,
                     " on a broken group (form a new group); it broke with: ", broken_.message()));
  }

  // An NCCL call that failed breaks the group. Its InvalidArgument (NCCL's invalid usage) is
  // this process's bug, not the client's input: reported as Internal so callers do not take
  // it for a bad request and keep using the group.
  absl::Status Broken(absl::Status status) {
    if (status.code() == absl::StatusCode::kInvalidArgument) {
      status = absl::InternalError(status.message());
    }
    // An NCCL failure may come of a device fault (ncclUnhandledCudaError, a kernel that
    // faulted before the collective): any CUDA call then reports it.
    if (const cudaError_t probe = cudaStreamQuery(stream_);
        !IsDeviceLost(status) && IsStickyCudaError(probe)) {
      status = DeviceLostError(absl::StrCat(status.message(), " (", cudaGetErrorName(probe), ")"));
    }
    (void)cudaGetLastError();
    broken_ = status;
    comm_.Abort();
    (void)cudaGetLastError();  // ncclCommAbort's, if any: not the next launch check's
    return status;
  }

  // Polls the communicator until its pending (non-blocking) call is done.
  absl::Status WaitForComm(const char* what, absl::Time deadline) {
    for (;;) {
      ncclResult_t state = ncclSuccess;
      ncclResult_t r = ncclCommGetAsyncError(comm_.get(), &state);
      if (r != ncclSuccess) return Broken(NcclError(where_, what, r, comm_.get()));
      if (state == ncclSuccess) return absl::OkStatus();
      if (state != ncclInProgress) return Broken(NcclError(where_, what, state, comm_.get()));
      if (absl::Now() > deadline) {
        return Broken(absl::DeadlineExceededError(
            absl::StrCat(where_, ": ", what, " did not finish within ",
                         absl::FormatDuration(timeout_), " (a peer is gone or stalled)")));
      }
      std::this_thread::yield();
    }
  }

  // Enqueues `launch` on the stream and waits for it to complete, watching for async errors.
  template <typename Launch>
  absl::Status Collective(const char* what, Launch&& launch) {
    if (cudaError_t e = cudaSetDevice(device_); e != cudaSuccess) {
      return CudaError(where_, "cudaSetDevice", e);
    }
    const absl::Time deadline = absl::Now() + timeout_;
    ncclResult_t r = launch();
    if (r != ncclSuccess && r != ncclInProgress) {
      return Broken(NcclError(where_, what, r, comm_.get()));
    }
    RETURN_IF_ERROR(WaitForComm(what, deadline));  // the enqueue itself (non-blocking comm)
    if (cudaError_t e = cudaEventRecord(event_, stream_); e != cudaSuccess) {
      return Broken(CudaError(where_, "cudaEventRecord", e));
    }
    for (;;) {
      const cudaError_t e = cudaEventQuery(event_);
      if (e == cudaSuccess) return absl::OkStatus();
      if (e != cudaErrorNotReady) return Broken(CudaError(where_, what, e));
      // Not ready sets the thread's last error too: left there, the model's next kernel launch
      // check (cudaGetLastError) would report it as a failed launch after every collective.
      (void)cudaGetLastError();
      RETURN_IF_ERROR(WaitForCommOnce(what, deadline));
      std::this_thread::yield();
    }
  }

  // One poll of the async error state while a kernel runs.
  absl::Status WaitForCommOnce(const char* what, absl::Time deadline) {
    ncclResult_t state = ncclSuccess;
    ncclResult_t r = ncclCommGetAsyncError(comm_.get(), &state);
    if (r != ncclSuccess) return Broken(NcclError(where_, what, r, comm_.get()));
    if (state != ncclSuccess && state != ncclInProgress) {
      return Broken(NcclError(where_, what, state, comm_.get()));
    }
    if (absl::Now() > deadline) {
      return Broken(absl::DeadlineExceededError(
          absl::StrCat(where_, ": ", what, " did not complete within ",
                       absl::FormatDuration(timeout_), " (a peer is gone or stalled)")));
    }
    return absl::OkStatus();
  }

  const int rank_;
  const int size_;
  const int device_;
  cudaStream_t stream_;
  const absl::Duration timeout_;
  const std::string where_;
  NcclCommHandle comm_;
  cudaEvent_t event_ = nullptr;
  std::unique_ptr<void, DeviceFree> barrier_scratch_;  // one float, allocated on first use
  absl::Status broken_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Communicator>> CreateNcclCommunicator(const CommOptions& options) {
  if (absl::Status s = ValidateCommOptions(options); !s.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(Where(options.rank, options.world_size), ": ", s.message()));
  }
  auto comm = std::make_unique<NcclCommunicator>(options);
  RETURN_IF_ERROR(comm->Init(options.rendezvous, options.key_prefix));
  return std::unique_ptr<Communicator>(std::move(comm));
}

bool NcclBackendBuilt() { return true; }

}  // namespace llmint8::comm
