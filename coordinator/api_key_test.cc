#include "coordinator/api_key.h"

#include "gtest/gtest.h"

namespace llmint8::coordinator {
namespace {

TEST(ApiKeyTest, NoKeyLetsEverythingThrough) {
  const ApiKey none("");
  EXPECT_FALSE(none.required());
  EXPECT_TRUE(none.Check("").ok());
  EXPECT_TRUE(none.Check("Bearer anything").ok());
}

TEST(ApiKeyTest, OnlyTheExactBearerKeyPasses) {
  const ApiKey key("s3cret-key");
  EXPECT_TRUE(key.required());
  EXPECT_TRUE(key.Check("Bearer s3cret-key").ok());
  EXPECT_TRUE(key.Check("bearer s3cret-key").ok());  // the scheme is case-insensitive
  EXPECT_TRUE(ApiKey("s3cret-key\n").Check("Bearer s3cret-key").ok());  // a file's newline
  EXPECT_FALSE(ApiKey(" \n").required());
  for (const char* bad : {"", "s3cret-key", "Bearer ", "Bearer s3cret-ke", "Bearer s3cret-keyy",
                          "Bearer S3cret-key", "Bearer  s3cret-key", "Basic s3cret-key"}) {
    const absl::Status s = key.Check(bad);
    EXPECT_EQ(s.code(), absl::StatusCode::kUnauthenticated) << "'" << bad << "'";
    EXPECT_FALSE(s.message().empty());
  }
}

}  // namespace
}  // namespace llmint8::coordinator
