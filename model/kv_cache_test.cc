#include "model/kv_cache.h"

#include "gtest/gtest.h"

namespace llmint8::model {
namespace {

TEST(KvCacheTest, GrowsGeometricallyKeepsRowsAndCountsBytes) {
  const int64_t layers = 2, width = 3, max_context = 100;
  KvCache kv(layers, width, max_context);
  const int64_t per_pos = layers * 2 * width * 4;
  EXPECT_EQ(kv.GrowthBytes(7, 5), KvCache::kGranule * per_pos);
  kv.Reserve(7, 5);
  EXPECT_EQ(kv.Capacity(7), KvCache::kGranule);
  EXPECT_EQ(kv.bytes(), KvCache::kGranule * per_pos);
  for (int64_t l = 0; l < layers; ++l) {
    for (int64_t i = 0; i < 5 * width; ++i) {
      kv.Keys(7, l)[i] = static_cast<float>(100 * l + i);
      kv.Values(7, l)[i] = static_cast<float>(-100 * l - i);
    }
  }
  kv.SetLength(7, 5);
  EXPECT_EQ(kv.GrowthBytes(7, 16), 0);
  EXPECT_EQ(kv.GrowthBytes(7, 17), 16 * per_pos);  // doubles to 32
  kv.Reserve(7, 17);
  EXPECT_EQ(kv.Capacity(7), 32);
  for (int64_t l = 0; l < layers; ++l) {
    for (int64_t i = 0; i < 5 * width; ++i) {
      EXPECT_EQ(kv.Keys(7, l)[i], static_cast<float>(100 * l + i));
      EXPECT_EQ(kv.Values(7, l)[i], static_cast<float>(-100 * l - i));
    }
  }
  kv.Reserve(7, 99);  // capped at max_context
  EXPECT_EQ(kv.Capacity(7), 100);
  EXPECT_EQ(kv.Length(7), 5);
  EXPECT_EQ(kv.bytes(), 100 * per_pos);
  kv.Reserve(8, 1);
  EXPECT_EQ(kv.num_sequences(), 2);
  EXPECT_TRUE(kv.Release(7).ok());
  EXPECT_EQ(kv.bytes(), KvCache::kGranule * per_pos);
  EXPECT_EQ(kv.Release(7).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(kv.Length(7), 0);
}

}  // namespace
}  // namespace llmint8::model
