// The coordinator's defaults that need no running server.
#include "coordinator/coordinator_server.h"

#include "gtest/gtest.h"

namespace llmint8::coordinator {
namespace {

// Workers of this host reach the rendezvous where it listens: loopback for every address,
// else that very address (serve --listen=192.0.2.2:50051 never formed its group while it sent
// the workers to 127.0.0.1).
TEST(CoordinatorServerTest, LocalRendezvousAddressIsWhereItListens) {
  EXPECT_EQ(LocalRendezvousAddress("0.0.0.0:50051", 50051), "127.0.0.1:50051");
  EXPECT_EQ(LocalRendezvousAddress("[::]:50051", 7), "127.0.0.1:7");
  EXPECT_EQ(LocalRendezvousAddress(":50051", 50051), "127.0.0.1:50051");
  EXPECT_EQ(LocalRendezvousAddress("127.0.0.1:0", 40000), "127.0.0.1:40000");
  EXPECT_EQ(LocalRendezvousAddress("192.0.2.2:50051", 50051), "192.0.2.2:50051");
  EXPECT_EQ(LocalRendezvousAddress("[::1]:50051", 50051), "[::1]:50051");
  EXPECT_EQ(LocalRendezvousAddress("localhost:0", 9), "localhost:9");
}

}  // namespace
}  // namespace llmint8::coordinator
