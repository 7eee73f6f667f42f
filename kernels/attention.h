// Causal multi-head attention over a KV cache for a batch of sequences of different lengths
// (CPU, fp32), as Hugging Face OPTAttention computes it:
//   q' = q * scale                       (scale = 1/sqrt(head_dim), applied to q as HF does)
//   s[t] = q' . k[t]   for cached positions t <= the query's own position (causal)
//   p = softmax(s) in fp32,  out = sum_t p[t] v[t]
//
// Layout. A sequence's new tokens are rows [q_row, q_row + num_new) of q and out, and are its
// LAST num_new positions: query i sits at position context - num_new + i and attends to
// positions 0 .. context - num_new + i. Head h of a row uses floats [h*head_dim, (h+1)*head_dim)
// of it. Row t of k / v holds position t of all heads (the KV cache layout, see
// model/kv_cache.h); the new tokens' keys and values must already be in the cache.
// Strides are in floats and allow q to be a column block of a fused QKV output.
//
// The (query row, head) pairs run in parallel on the OpenMP threads for large enough steps,
// each row's sums in an order that depends only on head_dim and on the CPU (with AVX2 + FMA:
// scores four keys at a time, eight lanes each, and the value sums 64 dimensions at a time in
// registers; else one element at a time), so on one machine a row's result does not depend on
// the batch it came in or the threads. `scratch` holds AttentionScratchFloats(...) floats for the
// calling thread; each other OpenMP thread keeps a buffer of its own, grown to the longest context
// seen. Thread-compatible.
#ifndef LLMINT8_KERNELS_ATTENTION_H_
#define LLMINT8_KERNELS_ATTENTION_H_

#include <cstdint>
#include <span>

#include "absl/status/status.h"

namespace llmint8::kernels {

struct AttentionShape {
  int64_t num_heads = 0;  // heads computed here (the local heads of a TP rank)
  int64_t head_dim = 0;
  int64_t q_stride = 0;    // >= num_heads * head_dim
  int64_t kv_stride = 0;   // >= num_heads * head_dim
  int64_t out_stride = 0;  // >= num_heads * head_dim
  float scale = 1.0f;
};

struct AttentionSequence {
  int64_t q_row = 0;
  int64_t num_new = 0;   // >= 1
  int64_t context = 0;   // >= num_new: positions in the cache including the new ones
  std::span<const float> k;  // >= (context - 1) * kv_stride + num_heads * head_dim floats
  std::span<const float> v;
};

// Floats of scratch needed for contexts up to `max_context`.
inline int64_t AttentionScratchFloats(const AttentionShape& shape, int64_t max_context) {
  return shape.head_dim + max_context;
}

absl::Status CausalAttention(std::span<const float> q, const AttentionShape& shape,
                             std::span<const AttentionSequence> seqs, std::span<float> out,
                             std::span<float> scratch);

}  // namespace llmint8::kernels

#endif  // LLMINT8_KERNELS_ATTENTION_H_
