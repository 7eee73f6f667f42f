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

// Growing moves each layer's K and V rows to their offsets at the new capacity in place: every
// cached row survives many growths in a row, also a full cache of 64 grown to the 100 of
// max_context (block 1's new place then overlaps its old one).
TEST(KvCacheTest, GrowingInPlaceKeepsEveryRowOfEveryLayer) {
  const int64_t layers = 3, width = 5, max_context = 100;
  KvCache kv(layers, width, max_context);
  const auto value = [](int64_t layer, int64_t kv_index, int64_t i) {
    return static_cast<float>(1000 * (2 * layer + kv_index) + i);
  };
  int64_t length = 0;
  for (const int64_t grow_to : {1, 17, 33, 96, 99, 100}) {
    kv.Reserve(4, grow_to);
    ASSERT_GE(kv.Capacity(4), grow_to);
    for (int64_t l = 0; l < layers; ++l) {
      for (int64_t i = 0; i < length * width; ++i) {
        ASSERT_EQ(kv.Keys(4, l)[i], value(l, 0, i)) << "layer " << l << " at " << grow_to;
        ASSERT_EQ(kv.Values(4, l)[i], value(l, 1, i)) << "layer " << l << " at " << grow_to;
      }
      for (int64_t i = length * width; i < kv.Capacity(4) * width; ++i) {  // fill to capacity
        kv.Keys(4, l)[i] = value(l, 0, i);
        kv.Values(4, l)[i] = value(l, 1, i);
      }
    }
    length = kv.Capacity(4);
    kv.SetLength(4, length);
  }
  EXPECT_EQ(kv.Capacity(4), 100);
  EXPECT_EQ(kv.bytes(), 100 * layers * 2 * width * 4);
}

// CopyPrefix copies the first rows of every layer's K and V between sequences of different
// capacities, and nothing past them.
TEST(KvCacheTest, CopyPrefixCopiesTheFirstRowsOfEveryLayer) {
  const int64_t layers = 3, width = 2;
  KvCache kv(layers, width, 100);
  kv.Reserve(1, 40);  // capacity 48
  for (int64_t l = 0; l < layers; ++l) {
    for (int64_t i = 0; i < 40 * width; ++i) {
      kv.Keys(1, l)[i] = static_cast<float>(1000 * l + i);
      kv.Values(1, l)[i] = static_cast<float>(-1000 * l - i);
    }
  }
  kv.SetLength(1, 40);
  kv.Reserve(2, 20);  // capacity 32
  for (int64_t l = 0; l < layers; ++l) {
    for (float& x : kv.Keys(2, l)) x = 0.5f;
  }
  kv.CopyPrefix(1, 2, 17);
  ASSERT_EQ(kv.Capacity(2), 32);
  for (int64_t l = 0; l < layers; ++l) {
    for (int64_t i = 0; i < 17 * width; ++i) {
      EXPECT_EQ(kv.Keys(2, l)[i], static_cast<float>(1000 * l + i)) << l << ", " << i;
      EXPECT_EQ(kv.Values(2, l)[i], static_cast<float>(-1000 * l - i)) << l << ", " << i;
    }
    EXPECT_EQ(kv.Keys(2, l)[17 * width], 0.5f) << "row 17 of layer " << l << " was copied";
  }
  EXPECT_EQ(kv.Length(2), 0);  // the caller sets it
}

}  // namespace
}  // namespace llmint8::model
