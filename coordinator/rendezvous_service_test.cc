// The coordinator's Rendezvous service: only the forming group's keys, bounded keys and values.
#include "coordinator/rendezvous_service.h"

#include <string>

#include "gtest/gtest.h"

namespace llmint8::coordinator {
namespace {

grpc::Status Set(RendezvousService& r, const std::string& key, const std::string& value) {
  v1::SetRequest req;
  req.set_key(key);
  req.set_value(value);
  v1::SetResponse resp;
  return r.Set(nullptr, &req, &resp);
}

grpc::Status Add(RendezvousService& r, const std::string& key, int64_t delta, int64_t* value) {
  v1::AddRequest req;
  req.set_key(key);
  req.set_delta(delta);
  v1::AddResponse resp;
  const grpc::Status s = r.Add(nullptr, &req, &resp);
  *value = resp.value();
  return s;
}

TEST(RendezvousServiceTest, OnlyTheFormingGroupsKeysAreServed) {
  RendezvousService r;
  EXPECT_EQ(Set(r, "g1/a", "x").error_code(), grpc::StatusCode::FAILED_PRECONDITION)
      << "no group forms yet";
  r.KeepOnlyPrefixed("g1/");
  EXPECT_TRUE(Set(r, "g1/a", "x").ok());
  int64_t v = 0;
  EXPECT_TRUE(Add(r, "g1/n", 2, &v).ok());
  EXPECT_EQ(v, 2);
  r.KeepOnlyPrefixed("g2/");
  // The older group's keys are gone and not taken again.
  EXPECT_EQ(Set(r, "g1/a", "y").error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(Add(r, "g1/n", 1, &v).error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_TRUE(Add(r, "g2/n", 1, &v).ok());
  EXPECT_EQ(v, 1);
  EXPECT_EQ(Set(r, "", "x").error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST(RendezvousServiceTest, KeysAndValuesAreBounded) {
  RendezvousService r;
  r.KeepOnlyPrefixed("g/");
  const std::string long_key = "g/" + std::string(RendezvousService::kMaxKeyBytes, 'k');
  const grpc::Status key = Set(r, long_key, "x");
  EXPECT_EQ(key.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(key.error_message().find("at most 1024"), std::string::npos) << key.error_message();
  EXPECT_TRUE(Set(r, "g/" + std::string(RendezvousService::kMaxKeyBytes - 2, 'k'), "x").ok());
  const grpc::Status value = Set(r, "g/v", std::string(RendezvousService::kMaxValueBytes + 1, 'v'));
  EXPECT_EQ(value.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_TRUE(Set(r, "g/v", std::string(RendezvousService::kMaxValueBytes, 'v')).ok());
}

}  // namespace
}  // namespace llmint8::coordinator
