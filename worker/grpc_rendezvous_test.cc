// GrpcRendezvous when the coordinator cannot be reached: the wait ends on a given-up load within
// a slice, and a timeout says why the coordinator was not reached.
#include "worker/grpc_rendezvous.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace llmint8::worker {
namespace {

using ::testing::HasSubstr;

// A loopback port nothing listens on (bound to find it, then closed).
int UnusedPort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  if (fd < 0 || bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    ADD_FAILURE() << "no loopback port";
  }
  close(fd);
  return ntohs(addr.sin_port);
}

TEST(GrpcRendezvousTest, AGivenUpLoadStopsWaitingForTheCoordinatorWithinASlice) {
  const absl::Time given_up_at = absl::Now() + absl::Milliseconds(300);
  GrpcRendezvous rendezvous(absl::StrCat("127.0.0.1:", UnusedPort()), nullptr,
                            [&] { return absl::Now() >= given_up_at; });
  for (int call = 0; call < 3; ++call) {
    const absl::Time start = absl::Now();
    const absl::Status status = call == 0   ? rendezvous.Set("k", "v")
                                : call == 1 ? rendezvous.Get("k", absl::Seconds(5)).status()
                                            : rendezvous.Add("k", 1).status();
    EXPECT_EQ(status.code(), absl::StatusCode::kCancelled) << status;
    // Not the 30 s of reaching the coordinator: a slice (1 s) after the load was given up.
    EXPECT_LT(absl::Now() - std::max(start, given_up_at), absl::Seconds(3)) << call;
  }
}

TEST(GrpcRendezvousTest, ACoordinatorNotReachedInTimeIsADeadlineSayingWhy) {
  const std::string address = absl::StrCat("127.0.0.1:", UnusedPort());
  GrpcRendezvous rendezvous(address, nullptr, nullptr, absl::Seconds(2));
  const absl::Status status = rendezvous.Set("k", "v");
  EXPECT_EQ(status.code(), absl::StatusCode::kDeadlineExceeded) << status;
  EXPECT_THAT(status.message(),
              HasSubstr(absl::StrCat("rendezvous Set at ", address,
                                     ": the coordinator was not reached in 2s (")));
  EXPECT_THAT(status.message(), HasSubstr("--tls_ca_file"));
}

}  // namespace
}  // namespace llmint8::worker
