// Causal multi-head attention over a paged KV cache on the GPU, for a batch of sequences of
// different lengths (prefill of many tokens and decode of one in the same call): the CUDA twin
// of kernels/attention.h CausalAttention (fp16 q/k/v/out in memory, fp32 math).
//
//   q' = q * scale;  s[t] = q' . k[t] for t <= the query's position;  out = softmax(s) . v
//
// Rows. The batch's new tokens are rows 0 .. num_rows-1 of q and out, sequence by sequence in
// the order given (sequence i owns num_new[i] rows after those of sequences 0..i-1). Its new
// tokens are its LAST num_new cached positions: row j of the sequence sits at position
// context - num_new + j and attends to positions 0 .. context - num_new + j.
// Head h of a row uses Halfs [h * head_dim, (h + 1) * head_dim) of it; q_stride / out_stride
// (AttentionShape, in Halfs) let q be the first column block of the fused QKV output.
//
// KV cache layout (paged). One pool of fixed-size pages per decoder layer, the same page ids for
// K and V: position t of a sequence lives in page pages[t / page_size], slot t % page_size, at
//   k + page * page_stride + slot * kv_stride + h * head_dim   (v likewise)
// page_stride (>= page_size * kv_stride) lets a pool interleave layers or K and V, e.g. one
// allocation [pages][layers][2][page_size][kv_stride] with page_stride = layers*2*page_size*
// kv_stride. A per-sequence contiguous cache is the special case page_size >= max context with
// one page per sequence. Pages written by AppendKvCuda must not be shared between sequences.
//
// Per step: AttentionBatchCuda::Set (validates the batch on the host and uploads its small
// description once), then per layer AppendKvCuda (new keys/values into the cache) and
// CausalAttentionCuda. No call synchronizes the host.
//
// Kernel: one block per (query row, head), 8 warps; warp w takes keys w, w+8, ... with an fp32
// online softmax (running max, sum and weighted V per lane), then the warps' partial results
// are merged in shared memory. head_dim <= 256.
#ifndef LLMINT8_KERNELS_CUDA_ATTENTION_CUDA_H_
#define LLMINT8_KERNELS_CUDA_ATTENTION_CUDA_H_

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/half.h"
#include "kernels/attention.h"
#include "kernels/cuda/cuda_types.h"
#include "kernels/cuda/device.h"

namespace llmint8::kernels {

inline constexpr int64_t kMaxAttentionHeadDimCuda = 256;

// One sequence of a step, described on the host.
struct AttentionSequenceCuda {
  int64_t num_new = 0;  // >= 1
  int64_t context = 0;  // >= num_new: cached positions including the new ones
  // Page ids in position order; the first ceil(context / page_size) are used.
  std::span<const int32_t> pages;
};

// The device copy of a step's batch description (per sequence: first row, num_new, context,
// offset of its pages in the page table; and the page table), reused by every layer.
// Move-only; thread-compatible.
class AttentionBatchCuda {
 public:
  // Capacity: up to `max_sequences` sequences and `max_page_entries` page-table entries
  // (the sum over sequences of ceil(context / page_size)) per Set.
  static absl::StatusOr<AttentionBatchCuda> Create(int64_t max_sequences,
                                                   int64_t max_page_entries);

  // Validates and uploads (asynchronously on `stream`; the host spans may be reused as soon as
  // Set returns: the data is staged in a host vector owned here). `num_pages` is the size of
  // the page pool: every used page id must be in [0, num_pages). Errors (InvalidArgument, the
  // previous batch is kept): over capacity, page_size < 1, num_new < 1, context < num_new,
  // too few pages, a page id out of range, num_rows or a context >= 2^31.
  // The staging vector is overwritten by the next Set: call it again only after the stream has
  // passed this Set's copy (any synchronization of the stream between steps suffices).
  absl::Status Set(std::span<const AttentionSequenceCuda> seqs, int64_t page_size,
                   int64_t num_pages, cudaStream_t stream);

  int64_t num_sequences() const { return num_sequences_; }
  int64_t num_rows() const { return num_rows_; }
  int64_t max_context() const { return max_context_; }
  int64_t page_size() const { return page_size_; }
  int64_t num_pages() const { return num_pages_; }
  // Device arrays read by the kernels of attention_cuda.cu.
  const int32_t* sequence_table() const { return sequences_.data(); }  // [num_sequences][4]
  const int32_t* page_table() const { return pages_.data(); }

 private:
  int64_t max_sequences_ = 0;
  int64_t max_page_entries_ = 0;
  int64_t num_sequences_ = 0;
  int64_t num_rows_ = 0;
  int64_t max_context_ = 0;
  int64_t page_size_ = 1;
  int64_t num_pages_ = 0;
  gpu::DeviceBuffer<int32_t> sequences_;
  gpu::DeviceBuffer<int32_t> pages_;
  std::vector<int32_t> staging_;  // sequence table then page table
};

// One layer's paged K and V (device memory, non-owning; see the layout above).
struct PagedKvCudaView {
  Half* k = nullptr;
  Half* v = nullptr;
  int64_t page_stride = 0;  // Halfs between pages; >= page_size * shape.kv_stride
};

// Copies row r of k_new / v_new (r in [0, num_rows), new_stride Halfs apart, num_heads *
// head_dim Halfs each) to its position in the cache. With a fused QKV output [rows, 3 * width]:
// k_new = qkv + width, v_new = qkv + 2 * width, new_stride = 3 * width.
absl::Status AppendKvCuda(const Half* k_new, const Half* v_new, int64_t new_stride,
                          const AttentionShape& shape, const AttentionBatchCuda& batch,
                          const PagedKvCudaView& kv, cudaStream_t stream);

// out [num_rows rows, out_stride] fp16. The new tokens' keys and values must already be in the
// cache (AppendKvCuda on the same stream). Errors (InvalidArgument): bad shape (heads < 1 or
// >= 65536, head_dim < 1 or > 256, a stride below num_heads * head_dim, page_stride below
// page_size * kv_stride, scale not finite), null pointers.
absl::Status CausalAttentionCuda(const Half* q, const AttentionShape& shape,
                                 const AttentionBatchCuda& batch, const PagedKvCudaView& kv,
                                 Half* out, cudaStream_t stream);

}  // namespace llmint8::kernels

#endif  // LLMINT8_KERNELS_CUDA_ATTENTION_CUDA_H_
