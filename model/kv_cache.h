// The KV cache of one shard: per sequence and per decoder layer, the keys and values of every
// cached position for this rank's local heads (fp32 on the CPU).
//
// Layout of one sequence: one buffer [layers][2 (k, v)][capacity][width], width = local_heads *
// head_dim, so row t of a layer's K block is position t of all local heads (the layout
// kernels::CausalAttention reads). Capacity grows geometrically (doubling, rounded up to
// kGranule positions, capped at max_context), so appending decode tokens reallocates
// O(log n) times; bytes() counts the reserved capacity, which is what memory limits bound.
// Growing holds no second copy: a sequence's buffer is an anonymous mapping whose pages
// mremap moves to the larger one (no copy, no old + new at once), then each layer's rows move
// up to their new offsets in place. Rows past a sequence's length hold no defined values.
//
// Usage per step: GrowthBytes() to check a limit, Reserve() (may create the sequence), write the
// new rows through Keys()/Values(), then SetLength() once the step succeeded.
// Thread-compatible. Spans stay valid until the next Reserve() or Release() of that sequence.
#ifndef LLMINT8_MODEL_KV_CACHE_H_
#define LLMINT8_MODEL_KV_CACHE_H_

#include <cstdint>
#include <memory>
#include <span>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "model/kv_granule.h"

namespace llmint8::model {

class KvCache {
 public:
  static constexpr int64_t kGranule = kKvGranule;

  KvCache(int64_t num_layers, int64_t width, int64_t max_context);

  bool Contains(uint64_t seq_id) const { return seqs_.contains(seq_id); }
  int64_t Length(uint64_t seq_id) const;    // cached positions; 0 when unknown
  int64_t Capacity(uint64_t seq_id) const;  // reserved positions; 0 when unknown
  int64_t num_sequences() const { return static_cast<int64_t>(seqs_.size()); }

  // Bytes Reserve(seq_id, length) would add to bytes(). Requires length <= max_context.
  int64_t GrowthBytes(uint64_t seq_id, int64_t length) const;
  // Makes room for `length` positions (creating an empty sequence when unknown); keeps the
  // cached rows. Requires length <= max_context (checked by the caller).
  void Reserve(uint64_t seq_id, int64_t length);
  // [capacity, width] rows of layer `layer`; the sequence must exist.
  std::span<float> Keys(uint64_t seq_id, int64_t layer);
  std::span<float> Values(uint64_t seq_id, int64_t layer);
  void SetLength(uint64_t seq_id, int64_t length);
  // Copies the first `length` cached positions of every layer of `from` into `to`, whose
  // capacity holds them (Reserve first); `to`'s length is for the caller to set.
  void CopyPrefix(uint64_t from, uint64_t to, int64_t length);

  // NotFound when the sequence has no cache.
  absl::Status Release(uint64_t seq_id);

  int64_t bytes() const { return bytes_; }
  int64_t per_position_bytes() const { return per_position_bytes_; }
  int64_t max_context() const { return max_context_; }

 private:
  // An anonymous private mapping (zero pages until written), unmapped when destroyed.
  class Mapping {
   public:
    Mapping() = default;
    ~Mapping();
    Mapping(const Mapping&) = delete;
    Mapping& operator=(const Mapping&) = delete;
    float* data() const { return static_cast<float*>(data_); }
    // Grows to at least `bytes`, keeping the contents (the pages move, mremap); throws
    // std::bad_alloc, the mapping unchanged, when the system refuses.
    void Grow(size_t bytes);

   private:
    void* data_ = nullptr;
    size_t bytes_ = 0;  // a multiple of the page size
  };
  struct Sequence {
    int64_t length = 0;
    int64_t capacity = 0;
    Mapping data;  // [layers][2][capacity][width]
  };
  int64_t CapacityFor(int64_t old_capacity, int64_t length) const;
  int64_t BytesFor(int64_t capacity) const { return capacity * per_position_bytes_; }
  Sequence& Get(uint64_t seq_id);
  // The first `length` positions of every layer's k and v, between buffers of two capacities.
  void CopyPositions(const float* src, int64_t src_capacity, float* dst, int64_t dst_capacity,
                     int64_t length) const;

  int64_t num_layers_;
  int64_t width_;
  int64_t max_context_;
  int64_t per_position_bytes_;
  int64_t bytes_ = 0;
  absl::flat_hash_map<uint64_t, std::unique_ptr<Sequence>> seqs_;
};

}  // namespace llmint8::model

#endif  // LLMINT8_MODEL_KV_CACHE_H_
