#include "worker/coordinator_lease.h"

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace llmint8::worker {
namespace {

constexpr int64_t kA = int64_t{7} << 32;  // coordinator instances (high 32 bits)
constexpr int64_t kB = int64_t{9} << 32;
const absl::Time kT0 = absl::FromUnixSeconds(1000);
const absl::Duration kLease = absl::Seconds(3);

TEST(CoordinatorLeaseTest, InstanceIsTheHighBits) {
  EXPECT_EQ(CoordinatorInstance(kA + 5), kA);
  EXPECT_EQ(CoordinatorInstance(kA), kA);
  EXPECT_EQ(CoordinatorInstance(0), 0);
}

TEST(CoordinatorLeaseTest, AFreeWorkerGoesToAnyone) {
  CoordinatorLease lease;
  EXPECT_TRUE(lease.CheckTake(kA + 1, kT0).ok());
  EXPECT_FALSE(lease.HeldByAnother(kB + 1, kT0));
}

TEST(CoordinatorLeaseTest, AnotherCoordinatorWaitsUntilTheLeaseLapses) {
  CoordinatorLease lease;
  lease.Grant(kA + 1, kLease, kT0);
  const absl::Status refused = lease.CheckTake(kB + 1, kT0 + kLease - absl::Nanoseconds(1));
  EXPECT_EQ(refused.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(refused.message().find(absl::StrCat("group epoch ", kA + 1)), std::string::npos)
      << refused;
  EXPECT_TRUE(lease.HeldByAnother(kB + 1, kT0));
  EXPECT_FALSE(lease.Gone(kT0 + kLease - absl::Nanoseconds(1)));
  EXPECT_TRUE(lease.Gone(kT0 + kLease));
  EXPECT_TRUE(lease.CheckTake(kB + 1, kT0 + kLease).ok());
  EXPECT_FALSE(lease.HeldByAnother(kB + 1, kT0 + kLease));
}

TEST(CoordinatorLeaseTest, TheSameCoordinatorReformsAtAnyTime) {
  CoordinatorLease lease;
  lease.Grant(kA + 1, kLease, kT0);
  EXPECT_TRUE(lease.CheckTake(kA + 2, kT0).ok());
  EXPECT_FALSE(lease.HeldByAnother(kA, kT0));  // its probe before it formed a second group
}

TEST(CoordinatorLeaseTest, ContactsOfTheHeldGroupRenewIt) {
  CoordinatorLease lease;
  lease.Grant(kA + 1, kLease, kT0);
  lease.Renew(kA + 1, kT0 + absl::Seconds(2));
  EXPECT_TRUE(lease.HeldByAnother(kB + 1, kT0 + absl::Seconds(4)));
  EXPECT_FALSE(lease.HeldByAnother(kB + 1, kT0 + absl::Seconds(5)));
  // A stale contact (an older group of the same coordinator, or a late clock) renews nothing.
  lease.Renew(kA + 2, kT0 + absl::Seconds(10));
  lease.Renew(kA + 1, kT0);
  EXPECT_FALSE(lease.HeldByAnother(kB + 1, kT0 + absl::Seconds(5)));
}

TEST(CoordinatorLeaseTest, EndLetsGoAtOnceButOnlyFromTheHolder) {
  CoordinatorLease lease;
  lease.Grant(kA + 1, kLease, kT0);
  lease.End(kB + 1);
  EXPECT_TRUE(lease.HeldByAnother(kB + 1, kT0));
  lease.End(kA + 1);
  EXPECT_FALSE(lease.HeldByAnother(kB + 1, kT0));
  EXPECT_TRUE(lease.Gone(kT0));
  lease.Renew(kA + 1, kT0 + absl::Seconds(1));  // a probe that was under way
  EXPECT_FALSE(lease.HeldByAnother(kB + 1, kT0 + absl::Seconds(1)));
  EXPECT_TRUE(lease.Gone(kT0 + absl::Seconds(1)));
}

TEST(CoordinatorLeaseTest, AZeroLeaseKeepsNothingAndClearFreesTheWorker) {
  CoordinatorLease lease;
  lease.Grant(kA + 1, absl::ZeroDuration(), kT0);  // a coordinator that asks for no lease
  EXPECT_FALSE(lease.HeldByAnother(kB + 1, kT0));
  EXPECT_FALSE(lease.Gone(kT0 + absl::Hours(1))) << "silence says nothing without a lease";
  lease.Grant(kA + 1, kLease, kT0);
  lease.Clear();
  EXPECT_FALSE(lease.HeldByAnother(kB + 1, kT0));
  EXPECT_FALSE(lease.Gone(kT0));
}

}  // namespace
}  // namespace llmint8::worker
