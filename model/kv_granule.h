// The granule of KV cache positions, one number for every layer that counts them: the CPU cache
// (model/kv_cache.h) rounds a sequence's capacity up to it, a CUDA cache page
// (model/cuda/paged_kv_cache.h) holds this many positions, and the coordinator's prefix cache
// (coordinator/prefix_cache.h) counts what a parked sequence holds in it.
#ifndef LLMINT8_MODEL_KV_GRANULE_H_
#define LLMINT8_MODEL_KV_GRANULE_H_

#include <cstdint>

namespace llmint8::model {

inline constexpr int64_t kKvGranule = 16;

}  // namespace llmint8::model

#endif  // LLMINT8_MODEL_KV_GRANULE_H_
