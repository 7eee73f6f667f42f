// The device queries of kernels/cuda/device.h that the service reads: free memory (what a
// worker reports) and the UUID (which GPU a worker's memory is: worker/usable_memory.h); and
// which CUDA errors say the context is lost (kernels/cuda/cuda_status.h).
#include <string>

#include "common/device_lost.h"
#include "gtest/gtest.h"
#include "kernels/cuda/cuda_status.h"
#include "kernels/cuda/cuda_test_util.h"
#include "kernels/cuda/device.h"

namespace llmint8::gpu {
namespace {

class DeviceTest : public ::testing::Test {
 protected:
  void SetUp() override { LLMINT8_SKIP_WITHOUT_CUDA_DEVICE(); }
};

TEST_F(DeviceTest, UuidIsNvidiaSmisFormAndTheSameEachTime) {
  const absl::StatusOr<std::string> uuid = DeviceUuid(0);
  ASSERT_TRUE(uuid.ok()) << uuid.status();
  ASSERT_EQ(uuid->size(), 4u + 36u) << *uuid;
  EXPECT_EQ(uuid->substr(0, 4), "GPU-");
  for (size_t i = 4; i < uuid->size(); ++i) {
    const char c = (*uuid)[i];
    if (i == 12 || i == 17 || i == 22 || i == 27) {
      EXPECT_EQ(c, '-') << *uuid;
    } else {
      EXPECT_TRUE((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')) << *uuid;
    }
  }
  EXPECT_EQ(*DeviceUuid(0), *uuid);
  EXPECT_NE(*uuid, "GPU-00000000-0000-0000-0000-000000000000");
}

TEST_F(DeviceTest, ADeviceThatIsNotThereIsAnError) {
  const absl::StatusOr<int> count = DeviceCount();
  ASSERT_TRUE(count.ok()) << count.status();
  EXPECT_FALSE(DeviceUuid(*count).ok());
  EXPECT_FALSE(FreeMemoryBytes(*count).ok());
  const absl::StatusOr<int64_t> free_bytes = FreeMemoryBytes(0);
  ASSERT_TRUE(free_bytes.ok()) << free_bytes.status();
  EXPECT_GT(*free_bytes, int64_t{1} << 30) << "a GPU for this project has more than 1 GiB free";
}

// No device needed: the mapping of error codes only.
TEST(CudaStatusTest, AFaultOnTheDeviceIsDeviceLostAndOtherErrorsAreNot) {
  for (const cudaError_t sticky : {cudaErrorIllegalAddress, cudaErrorLaunchFailure,
                                   cudaErrorMisalignedAddress, cudaErrorECCUncorrectable}) {
    const absl::Status s = CudaErrorToStatus(sticky, "kernel", "file.cu", 1);
    EXPECT_EQ(s.code(), absl::StatusCode::kInternal) << s;
    EXPECT_TRUE(IsDeviceLost(s)) << s;
    EXPECT_NE(s.message().find("restart the process"), std::string::npos) << s;
  }
  for (const cudaError_t recoverable :
       {cudaErrorMemoryAllocation, cudaErrorInvalidValue, cudaErrorNoDevice}) {
    EXPECT_FALSE(IsDeviceLost(CudaErrorToStatus(recoverable, "call", "file.cc", 1)));
  }
  EXPECT_FALSE(IsDeviceLost(absl::OkStatus()));
  EXPECT_FALSE(IsDeviceLost(absl::InternalError("a bug")));
}

}  // namespace
}  // namespace llmint8::gpu
