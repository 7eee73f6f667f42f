// The KV cache of one shard on a CUDA device (internal to the CUDA backend): one pool of
// fixed-size pages in fp16, shared by all sequences, in the layout kernels/cuda/attention_cuda.h
// reads:
//   pool [num_pages][num_layers][2 (k, v)][kPageSize][width],   width = local_heads * head_dim
// so layer l's view is k = pool + l * 2 * kPageSize * width, v = k + kPageSize * width, with
// page_stride = num_layers * 2 * kPageSize * width. A sequence holds ceil(length / kPageSize)
// pages (its page list, in position order); Release returns them to the free list.
//
// The pool grows (GrowPool: a new allocation, one device copy of the old pages, which are a
// prefix of the new pool, then the old one is freed) and never shrinks: bytes() is what was
// cudaMalloc'ed for it. Page ids stay valid across growth.
//
// Usage per step: PagesNeeded() for every sequence, GrowPool() when free_pages() is short,
// Reserve() (creates unknown sequences), CopyPrefix() for a new sequence that starts from
// another's cached positions (queued on the step's stream, before the forward), run the step,
// then SetLength(), or on failure Release() the sequences the step created and Trim() the
// others.
// Thread-compatible.
#ifndef LLMINT8_MODEL_CUDA_PAGED_KV_CACHE_H_
#define LLMINT8_MODEL_CUDA_PAGED_KV_CACHE_H_

#include <cstdint>
#include <span>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "common/half.h"
#include "kernels/cuda/attention_cuda.h"
#include "kernels/cuda/cuda_types.h"
#include "kernels/cuda/device.h"
#include "model/kv_granule.h"

namespace llmint8::model::cuda {

class PagedKvCache {
 public:
  static constexpr int64_t kPageSize = kKvGranule;

  PagedKvCache(int64_t num_layers, int64_t width);

  bool Contains(uint64_t seq_id) const { return seqs_.contains(seq_id); }
  int64_t Length(uint64_t seq_id) const;  // cached positions; 0 when unknown
  int64_t num_sequences() const { return static_cast<int64_t>(seqs_.size()); }

  static int64_t PagesFor(int64_t length) { return (length + kPageSize - 1) / kPageSize; }
  // Pages Reserve(seq_id, length) would take from the free list.
  int64_t PagesNeeded(uint64_t seq_id, int64_t length) const;
  int64_t free_pages() const { return static_cast<int64_t>(free_.size()); }
  int64_t num_pages() const { return num_pages_; }
  int64_t page_bytes() const { return page_elems_ * static_cast<int64_t>(sizeof(Half)); }
  int64_t bytes() const { return num_pages_ * page_bytes(); }

  // Grows the pool to `want_pages` pages, or to `min_pages` (<= want_pages) where that many do
  // not fit on the device (the old pool is held during the copy); no-op when it has them.
  // Keeps the cached pages; synchronizes `stream` before freeing the old pool. Errors: out of
  // device memory for min_pages too (the old pool is kept), a size >= 2^31 pages.
  absl::Status GrowPool(int64_t min_pages, int64_t want_pages, cudaStream_t stream);

  // Gives `seq_id` pages for `length` positions (creating it empty when unknown). Requires
  // PagesNeeded(seq_id, length) <= free_pages() (checked by the caller).
  void Reserve(uint64_t seq_id, int64_t length);
  // The page list of a known sequence (at least PagesFor(Length) entries).
  std::span<const int32_t> Pages(uint64_t seq_id) const;
  void SetLength(uint64_t seq_id, int64_t length);
  // Copies the pages holding the first `length` positions of `from` (all layers) over the
  // first pages of `to` (reserved for at least `length`), on `stream`; runs of consecutive
  // pages go in one copy. `to`'s length is for the caller to set.
  absl::Status CopyPrefix(uint64_t from, uint64_t to, int64_t length, cudaStream_t stream);
  // Returns the pages beyond PagesFor(Length(seq_id)) to the free list.
  void Trim(uint64_t seq_id);
  // NotFound when the sequence has no cache.
  absl::Status Release(uint64_t seq_id);

  // Layer `layer`'s K and V in the pool (valid until the next GrowPool).
  kernels::PagedKvCudaView Layer(int64_t layer) const;

 private:
  absl::Status GrowPoolTo(int64_t num_pages, cudaStream_t stream);
  struct Sequence {
    int64_t length = 0;
    std::vector<int32_t> pages;
  };

  int64_t num_layers_;
  int64_t width_;
  int64_t page_elems_;  // Halfs per page: num_layers * 2 * kPageSize * width
  int64_t num_pages_ = 0;
  gpu::DeviceBuffer<Half> pool_;
  std::vector<int32_t> free_;  // page ids, popped from the back (lowest ids first)
  absl::flat_hash_map<uint64_t, Sequence> seqs_;
};

}  // namespace llmint8::model::cuda

#endif  // LLMINT8_MODEL_CUDA_PAGED_KV_CACHE_H_
