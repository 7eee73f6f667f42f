// Multi-process tests of the NCCL backend. Every rank is a forked child that shares GPU 0 with
// the others: each sets its own NCCL_HOSTID, so NCCL treats the ranks as separate hosts and
// talks over sockets on loopback. The parent never touches CUDA (a CUDA context does not
// survive fork); a probe child counts the devices, and without one the tests skip.
#include "comm/nccl_communicator.h"

#include <cuda_runtime.h>
#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "comm/file_rendezvous.h"
#include "comm/fork_ranks.h"
#include "comm/make_communicator.h"
#include "comm/shared_gpu_env.h"
#include "comm/testing/temp_dir.h"
#include "common/status_macros.h"
#include "gtest/gtest.h"

namespace llmint8::comm {
namespace {

using testing::TempDir;

constexpr absl::Duration kHangLimit = absl::Seconds(120);

// OK when a CUDA device answers, asked in a child process so this process stays CUDA-free;
// else why not (the skip says it: no device, a driver that does not load, a child that hung).
absl::Status DeviceInChild() {
  return ValueInChild(
             []() -> absl::StatusOr<int64_t> {
               int n = 0;
               if (const cudaError_t e = cudaGetDeviceCount(&n); e != cudaSuccess) {
                 return absl::UnavailableError(
                     absl::StrCat("cudaGetDeviceCount: ", cudaGetErrorString(e)));
               }
               if (n == 0) return absl::UnavailableError("no CUDA device on this machine");
               return n;
             },
             absl::Seconds(60))
      .status();
}

#define SKIP_WITHOUT_NCCL_GPU()                                                \
  do {                                                                         \
    if (!NcclBackendBuilt()) GTEST_SKIP() << "built without the NCCL backend"; \
    if (const absl::Status device = DeviceInChild(); !device.ok()) {           \
      GTEST_SKIP() << device;                                                  \
    }                                                                          \
  } while (0)

CommOptions GroupOptions(int rank, int world, Rendezvous& rdzv, absl::Duration timeout,
                         cudaStream_t stream) {
  CommOptions options;
  options.rank = rank;
  options.world_size = world;
  options.rendezvous = &rdzv;
  options.key_prefix = "test/";
  options.timeout = timeout;
  options.cuda_device = 0;
  options.cuda_stream = stream;
  return options;
}

absl::Status Cuda(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(what, ": ", cudaGetErrorString(e)));
}

// Device buffer of T, freed on scope exit.
template <typename T>
class DeviceBuffer {
 public:
  explicit DeviceBuffer(size_t n) : n_(n) { cudaMalloc(&ptr_, n * sizeof(T)); }
  ~DeviceBuffer() { cudaFree(ptr_); }
  std::span<T> span() { return std::span<T>(static_cast<T*>(ptr_), n_); }
  absl::Status Upload(const std::vector<T>& v) {
    return Cuda(cudaMemcpy(ptr_, v.data(), n_ * sizeof(T), cudaMemcpyHostToDevice), "upload");
  }
  absl::StatusOr<std::vector<T>> Download() {
    std::vector<T> v(n_);
    RETURN_IF_ERROR(
        Cuda(cudaMemcpy(v.data(), ptr_, n_ * sizeof(T), cudaMemcpyDeviceToHost), "download"));
    return v;
  }

 private:
  void* ptr_ = nullptr;
  size_t n_;
};

absl::Status RunAllCollectives(int rank, int world, const std::string& dir) {
  ApplySharedGpuNcclEnv(rank);
  RETURN_IF_ERROR(Cuda(cudaSetDevice(0), "cudaSetDevice"));
  cudaStream_t stream;
  RETURN_IF_ERROR(Cuda(cudaStreamCreate(&stream), "cudaStreamCreate"));
  FileRendezvous rdzv(dir);
  ASSIGN_OR_RETURN(
      std::unique_ptr<Communicator> comm,
      MakeCommunicator("nccl", GroupOptions(rank, world, rdzv, absl::Seconds(60), stream)));
  if (!comm->on_device() || comm->backend() != "nccl") {
    return absl::InternalError("nccl communicator reports the wrong identity");
  }
  const int64_t rank_sum = static_cast<int64_t>(world) * (world + 1) / 2;

  constexpr size_t kCount = 100'003;
  std::vector<float> host(kCount);
  for (size_t i = 0; i < kCount; ++i) host[i] = static_cast<float>((rank + 1) * (i % 1000 + 1));
  DeviceBuffer<float> data(kCount);
  RETURN_IF_ERROR(data.Upload(host));
  RETURN_IF_ERROR(comm->AllReduceSum(data.span()));
  ASSIGN_OR_RETURN(std::vector<float> reduced, data.Download());
  for (size_t i = 0; i < kCount; ++i) {
    const float want = static_cast<float>(rank_sum * static_cast<int64_t>(i % 1000 + 1));
    if (reduced[i] != want) {
      return absl::InternalError(
          absl::StrCat("allreduce[", i, "] = ", reduced[i], ", want ", want));
    }
  }

  constexpr size_t kSlice = 513;
  std::vector<Half> slice(kSlice);
  for (size_t j = 0; j < kSlice; ++j) slice[j] = FloatToHalf(static_cast<float>(rank * 600 + j));
  DeviceBuffer<Half> in(kSlice), out(kSlice * world);
  RETURN_IF_ERROR(in.Upload(slice));
  RETURN_IF_ERROR(comm->AllGather(std::span<const Half>(in.span()), out.span()));
  ASSIGN_OR_RETURN(std::vector<Half> gathered, out.Download());
  for (size_t i = 0; i < gathered.size(); ++i) {
    // fp16 holds integers exactly only up to 2048: rank 3's values round (to even) as sent.
    const float want =
        HalfToFloat(FloatToHalf(static_cast<float>((i / kSlice) * 600 + i % kSlice)));
    if (HalfToFloat(gathered[i]) != want) {
      return absl::InternalError(
          absl::StrCat("allgather[", i, "] = ", HalfToFloat(gathered[i]), ", want ", want));
    }
  }

  const int root = world - 1;
  std::vector<uint8_t> bytes(777);
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = rank == root ? (i * 5 + 1) % 253 : 0xEE;
  DeviceBuffer<uint8_t> dbytes(bytes.size());
  RETURN_IF_ERROR(dbytes.Upload(bytes));
  RETURN_IF_ERROR(comm->Broadcast(dbytes.span(), root));
  ASSIGN_OR_RETURN(std::vector<uint8_t> got, dbytes.Download());
  for (size_t i = 0; i < got.size(); ++i) {
    if (got[i] != (i * 5 + 1) % 253) return absl::InternalError(absl::StrCat("broadcast[", i, "]"));
  }
  return comm->Barrier();
}

class NcclGroupTest : public ::testing::TestWithParam<int> {};

TEST_P(NcclGroupTest, AllCollectivesGiveExactResultsWithRanksSharingGpu0) {
  SKIP_WITHOUT_NCCL_GPU();
  const int world = GetParam();
  TempDir dir("nccl");
  std::vector<RankOutcome> outcomes = ForkRanks(
      world, [&](int rank) { return RunAllCollectives(rank, world, dir.path()); }, kHangLimit);
  for (const RankOutcome& o : outcomes) {
    EXPECT_TRUE(o.reported && o.status.ok() && o.exit_code == 0) << o.Describe();
  }
}

INSTANTIATE_TEST_SUITE_P(WorldSizes, NcclGroupTest, ::testing::Values(2, 4),
                         [](const auto& info) { return absl::StrCat("tp", info.param); });

TEST(NcclCommunicatorTest, MissingRankGivesDeadlineExceeded) {
  SKIP_WITHOUT_NCCL_GPU();
  TempDir dir("nccl");
  // Rank 0 is the one missing: rank 1 waits for the unique id that never comes.
  std::vector<RankOutcome> outcomes = ForkRanks(
      1,
      [&](int) -> absl::Status {
        ApplySharedGpuNcclEnv(1);
        FileRendezvous rdzv(dir.path());
        return MakeCommunicator("nccl", GroupOptions(1, 2, rdzv, absl::Seconds(2), nullptr))
            .status();
      },
      kHangLimit);
  ASSERT_TRUE(outcomes[0].reported) << outcomes[0].Describe();
  EXPECT_EQ(outcomes[0].status.code(), absl::StatusCode::kDeadlineExceeded)
      << outcomes[0].Describe();
  EXPECT_NE(outcomes[0].status.message().find("nccl rank 1/2"), std::string::npos)
      << outcomes[0].Describe();
}

TEST(NcclCommunicatorTest, RankDyingMidwayGivesSurvivorAnError) {
  SKIP_WITHOUT_NCCL_GPU();
  TempDir dir("nccl");
  std::vector<RankOutcome> outcomes = ForkRanks(
      2,
      [&](int rank) -> absl::Status {
        ApplySharedGpuNcclEnv(rank);
        RETURN_IF_ERROR(Cuda(cudaSetDevice(0), "cudaSetDevice"));
        FileRendezvous rdzv(dir.path());
        ASSIGN_OR_RETURN(
            std::unique_ptr<Communicator> comm,
            MakeCommunicator("nccl", GroupOptions(rank, 2, rdzv, absl::Seconds(10), nullptr)));
        DeviceBuffer<float> data(1024);
        RETURN_IF_ERROR(comm->AllReduceSum(data.span()));
        if (rank == 1) ::_exit(42);
        absl::Status s = comm->AllReduceSum(data.span());
        return s.ok() ? absl::InternalError("all-reduce succeeded without rank 1") : s;
      },
      kHangLimit);
  EXPECT_EQ(outcomes[1].exit_code, 42) << outcomes[1].Describe();
  ASSERT_TRUE(outcomes[0].reported) << outcomes[0].Describe();
  EXPECT_NE(outcomes[0].status.message().find("nccl rank 0/2"), std::string::npos)
      << outcomes[0].Describe();
  EXPECT_FALSE(outcomes[0].status.ok()) << outcomes[0].Describe();
}

}  // namespace
}  // namespace llmint8::comm
