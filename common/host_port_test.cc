#include "common/host_port.h"

#include "gtest/gtest.h"

namespace llmint8 {
namespace {

TEST(HostPortTest, SplitsAtTheLastColon) {
  auto hp = ParseHostPort("0.0.0.0:9090", "--x");
  ASSERT_TRUE(hp.ok()) << hp.status();
  EXPECT_EQ(hp->host, "0.0.0.0");
  EXPECT_EQ(hp->port, 9090);
  hp = ParseHostPort("[::1]:0", "--x");
  ASSERT_TRUE(hp.ok());
  EXPECT_EQ(hp->host, "::1");
  EXPECT_EQ(hp->port, 0);
  EXPECT_EQ(ParseHostPort(":50051", "--x")->host, "");
}

TEST(HostPortTest, BadAddressesNameTheFlag) {
  for (const char* bad : {"9090", "localhost:", "host:port", "h:70000", "h:-1"}) {
    auto hp = ParseHostPort(bad, "--metrics_listen");
    EXPECT_EQ(hp.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(hp.status().message().find("--metrics_listen="), absl::string_view::npos) << bad;
  }
}

}  // namespace
}  // namespace llmint8
