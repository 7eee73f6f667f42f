#include "kernels/attention.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "kernels/softmax.h"

namespace llmint8::kernels {
namespace {

absl::Status CheckSequence(const AttentionShape& s, const AttentionSequence& seq, size_t i,
                           size_t q_size, size_t out_size, size_t scratch_size) {
  const int64_t width = s.num_heads * s.head_dim;
  if (seq.num_new < 1 || seq.context < seq.num_new || seq.q_row < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("CausalAttention: sequence ", i, " has num_new=", seq.num_new,
                     " context=", seq.context, " q_row=", seq.q_row));
  }
  const int64_t last_row = seq.q_row + seq.num_new - 1;
  const size_t kv_need = static_cast<size_t>((seq.context - 1) * s.kv_stride + width);
  if (static_cast<size_t>(last_row * s.q_stride + width) > q_size ||
      static_cast<size_t>(last_row * s.out_stride + width) > out_size ||
      seq.k.size() < kv_need || seq.v.size() < kv_need) {
    return absl::InvalidArgumentError(absl::StrCat(
        "CausalAttention: sequence ", i, " (rows ", seq.q_row, "+", seq.num_new, ", context ",
        seq.context, ") overruns q (", q_size, "), out (", out_size, ") or k/v (", seq.k.size(),
        "/", seq.v.size(), ", need ", kv_need, ")"));
  }
  if (static_cast<int64_t>(scratch_size) < AttentionScratchFloats(s, seq.context)) {
    return absl::InvalidArgumentError(absl::StrCat("CausalAttention: scratch has ", scratch_size,
                                                   " floats, need ",
                                                   AttentionScratchFloats(s, seq.context)));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status CausalAttention(std::span<const float> q, const AttentionShape& s,
                             std::span<const AttentionSequence> seqs, std::span<float> out,
                             std::span<float> scratch) {
  const int64_t width = s.num_heads * s.head_dim;
  if (s.num_heads <= 0 || s.head_dim <= 0 || s.q_stride < width || s.kv_stride < width ||
      s.out_stride < width) {
    return absl::InvalidArgumentError(absl::StrCat(
        "CausalAttention: bad shape heads=", s.num_heads, " head_dim=", s.head_dim,
        " strides q/kv/out=", s.q_stride, "/", s.kv_stride, "/", s.out_stride));
  }
  for (size_t i = 0; i < seqs.size(); ++i) {
    absl::Status st = CheckSequence(s, seqs[i], i, q.size(), out.size(), scratch.size());
    if (!st.ok()) return st;
  }
  const int64_t d = s.head_dim;
  float* qs = scratch.data();           // [head_dim]: scaled query of one head
  float* scores = scratch.data() + d;   // [context]
  for (const AttentionSequence& seq : seqs) {
    const int64_t first_pos = seq.context - seq.num_new;
    for (int64_t i = 0; i < seq.num_new; ++i) {
      const int64_t row = seq.q_row + i;
      const int64_t n_keys = first_pos + i + 1;
      for (int64_t h = 0; h < s.num_heads; ++h) {
        const float* qh = q.data() + row * s.q_stride + h * d;
        for (int64_t j = 0; j < d; ++j) qs[j] = qh[j] * s.scale;
        const float* kh = seq.k.data() + h * d;
        for (int64_t t = 0; t < n_keys; ++t) {
          const float* kt = kh + t * s.kv_stride;
          float acc = 0.0f;
          for (int64_t j = 0; j < d; ++j) acc += qs[j] * kt[j];
          scores[t] = acc;
        }
        SoftmaxRowInPlace(std::span<float>(scores, n_keys));
        float* oh = out.data() + row * s.out_stride + h * d;
        std::fill(oh, oh + d, 0.0f);
        const float* vh = seq.v.data() + h * d;
        for (int64_t t = 0; t < n_keys; ++t) {
          const float p = scores[t];
          const float* vt = vh + t * s.kv_stride;
          for (int64_t j = 0; j < d; ++j) oh[j] += p * vt[j];
        }
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace llmint8::kernels
