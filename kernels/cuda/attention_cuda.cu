#include "kernels/cuda/attention_cuda.h"

#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <climits>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "kernels/cuda/cuda_status.h"
#include "kernels/cuda/device_math.cuh"

namespace llmint8::kernels {
namespace {

using gpu::internal::kWarpSize;
using gpu::internal::WarpSum;

constexpr int kSequenceFields = 4;  // first_row, num_new, context, page_begin
constexpr int kAttentionWarps = 8;
constexpr int kAttentionThreads = kAttentionWarps * kWarpSize;
constexpr int kMaxHeadDim = static_cast<int>(kMaxAttentionHeadDimCuda);
constexpr int kDimsPerLane = kMaxHeadDim / kWarpSize;
constexpr int kAppendThreads = 128;

struct SequenceInfo {
  int first_row;
  int num_new;
  int context;
  int page_begin;
};

// The sequence owning `row`: the last one whose first_row <= row (first rows strictly increase,
// and Set() checked that the rows tile [0, num_rows)).
__device__ __forceinline__ SequenceInfo FindSequence(const int4* __restrict__ seqs,
                                                     int num_seqs, int row) {
  int lo = 0;
  int hi = num_seqs - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (seqs[mid].x <= row) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  const int4 s = seqs[lo];
  return {s.x, s.y, s.z, s.w};
}

// Offset in Halfs of position t, head 0, in the paged pool.
__device__ __forceinline__ int64_t KvOffset(const int32_t* __restrict__ page_table,
                                            const SequenceInfo& s, int64_t t, int64_t page_size,
                                            int64_t page_stride, int64_t kv_stride) {
  const int64_t page = page_table[s.page_begin + t / page_size];
  return page * page_stride + (t % page_size) * kv_stride;
}

// One block per new row (blockIdx.x); copies its K and V rows into the cache.
__global__ void AppendKvKernel(const __half* __restrict__ k_new, const __half* __restrict__ v_new,
                               int64_t new_stride, int64_t width, const int4* __restrict__ seqs,
                               int num_seqs, const int32_t* __restrict__ page_table,
                               int64_t page_size, int64_t page_stride, int64_t kv_stride,
                               __half* __restrict__ k, __half* __restrict__ v) {
  const int row = blockIdx.x;
  const SequenceInfo s = FindSequence(seqs, num_seqs, row);
  const int64_t pos = static_cast<int64_t>(s.context) - s.num_new + (row - s.first_row);
  const int64_t dst = KvOffset(page_table, s, pos, page_size, page_stride, kv_stride);
  const int64_t src = static_cast<int64_t>(row) * new_stride;
  for (int64_t c = threadIdx.x; c < width; c += blockDim.x) {
    k[dst + c] = k_new[src + c];
    v[dst + c] = v_new[src + c];
  }
}

// One block per (row = blockIdx.x, head = blockIdx.y), kAttentionWarps warps. Lane l of a warp
// owns dims l, l + 32, ... of the head (up to kDimsPerLane of them).
__global__ void __launch_bounds__(kAttentionThreads)
    CausalAttentionKernel(const __half* __restrict__ q, int64_t q_stride,
                          const __half* __restrict__ k, const __half* __restrict__ v,
                          int64_t kv_stride, const int4* __restrict__ seqs, int num_seqs,
                          const int32_t* __restrict__ page_table, int64_t page_size,
                          int64_t page_stride, int head_dim, float scale,
                          __half* __restrict__ out, int64_t out_stride) {
  __shared__ float q_s[kMaxHeadDim];
  __shared__ float max_s[kAttentionWarps];
  __shared__ float sum_s[kAttentionWarps];
  __shared__ float acc_s[kAttentionWarps][kMaxHeadDim];

  const int row = blockIdx.x;
  const int64_t head_off = static_cast<int64_t>(blockIdx.y) * head_dim;
  const SequenceInfo s = FindSequence(seqs, num_seqs, row);
  const int64_t num_keys = static_cast<int64_t>(s.context) - s.num_new + (row - s.first_row) + 1;

  const __half* qr = q + static_cast<int64_t>(row) * q_stride + head_off;
  for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
    q_s[d] = __half2float(qr[d]) * scale;
  }
  __syncthreads();

  const int lane = threadIdx.x % kWarpSize;
  const int warp = threadIdx.x / kWarpSize;
  float run_max = -INFINITY;  // running max of this warp's scores
  float run_sum = 0.0f;       // sum of exp(score - run_max)
  float acc[kDimsPerLane];    // sum of exp(score - run_max) * v, dims lane + 32 c
#pragma unroll
  for (int c = 0; c < kDimsPerLane; ++c) acc[c] = 0.0f;

  for (int64_t t = warp; t < num_keys; t += kAttentionWarps) {
    const int64_t off =
        KvOffset(page_table, s, t, page_size, page_stride, kv_stride) + head_off;
    float dot = 0.0f;
#pragma unroll
    for (int c = 0; c < kDimsPerLane; ++c) {
      const int d = lane + c * kWarpSize;
      if (d < head_dim) dot += q_s[d] * __half2float(k[off + d]);
    }
    dot = WarpSum(dot);
    const float new_max = fmaxf(run_max, dot);
    const float correction = expf(run_max - new_max);  // 0 on the first key (exp(-inf))
    const float p = expf(dot - new_max);
    run_sum = run_sum * correction + p;
#pragma unroll
    for (int c = 0; c < kDimsPerLane; ++c) {
      const int d = lane + c * kWarpSize;
      if (d < head_dim) acc[c] = acc[c] * correction + p * __half2float(v[off + d]);
    }
    run_max = new_max;
  }

  if (lane == 0) {
    max_s[warp] = run_max;
    sum_s[warp] = run_sum;
  }
#pragma unroll
  for (int c = 0; c < kDimsPerLane; ++c) {
    const int d = lane + c * kWarpSize;
    if (d < head_dim) acc_s[warp][d] = acc[c];
  }
  __syncthreads();

  // Merge the warps: a warp that saw no key has max -inf and contributes 0 (num_keys >= 1, so
  // the overall max is a real score).
  float total_max = -INFINITY;
#pragma unroll
  for (int w = 0; w < kAttentionWarps; ++w) total_max = fmaxf(total_max, max_s[w]);
  __half* orow = out + static_cast<int64_t>(row) * out_stride + head_off;
  for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
    float num = 0.0f;
    float den = 0.0f;
#pragma unroll
    for (int w = 0; w < kAttentionWarps; ++w) {
      const float f = max_s[w] == -INFINITY ? 0.0f : expf(max_s[w] - total_max);
      num += acc_s[w][d] * f;
      den += sum_s[w] * f;
    }
    orow[d] = __float2half_rn(num / den);
  }
}

absl::Status CheckShapeAndView(const char* op, const AttentionShape& shape,
                               const AttentionBatchCuda& batch, const PagedKvCudaView& kv) {
  const int64_t width = shape.num_heads * shape.head_dim;
  if (shape.num_heads < 1 || shape.num_heads > 65535 || shape.head_dim < 1 ||
      shape.head_dim > kMaxAttentionHeadDimCuda || shape.kv_stride < width) {
    return absl::InvalidArgumentError(absl::StrCat(
        op, ": bad shape heads=", shape.num_heads, " head_dim=", shape.head_dim,
        " kv_stride=", shape.kv_stride, " (want 1 <= heads < 65536, 1 <= head_dim <= ",
        kMaxAttentionHeadDimCuda, ", kv_stride >= heads * head_dim)"));
  }
  if (kv.k == nullptr || kv.v == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": kv.k and kv.v must be non-null"));
  }
  if (kv.page_stride < batch.page_size() * shape.kv_stride) {
    return absl::InvalidArgumentError(absl::StrCat(
        op, ": kv.page_stride ", kv.page_stride, " is below page_size * kv_stride = ",
        batch.page_size() * shape.kv_stride, ": pages would overlap"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<AttentionBatchCuda> AttentionBatchCuda::Create(int64_t max_sequences,
                                                              int64_t max_page_entries) {
  if (max_sequences < 1 || max_page_entries < 1 || max_sequences > INT_MAX ||
      max_page_entries > INT_MAX) {
    return absl::InvalidArgumentError(absl::StrCat(
        "AttentionBatchCuda: capacities must be in [1, 2^31), got max_sequences=", max_sequences,
        " max_page_entries=", max_page_entries));
  }
  AttentionBatchCuda batch;
  ASSIGN_OR_RETURN(batch.sequences_,
                   gpu::DeviceBuffer<int32_t>::Allocate(max_sequences * kSequenceFields));
  ASSIGN_OR_RETURN(batch.pages_, gpu::DeviceBuffer<int32_t>::Allocate(max_page_entries));
  batch.max_sequences_ = max_sequences;
  batch.max_page_entries_ = max_page_entries;
  batch.staging_.reserve(max_sequences * kSequenceFields + max_page_entries);
  return batch;
}

absl::Status AttentionBatchCuda::Set(std::span<const AttentionSequenceCuda> seqs,
                                     int64_t page_size, int64_t num_pages, cudaStream_t stream) {
  const int64_t n = static_cast<int64_t>(seqs.size());
  if (n > max_sequences_) {
    return absl::InvalidArgumentError(absl::StrCat("AttentionBatchCuda::Set: ", n,
                                                   " sequences exceed the capacity of ",
                                                   max_sequences_, "; Create a larger batch"));
  }
  if (page_size < 1 || num_pages < 0 || num_pages > INT_MAX) {
    return absl::InvalidArgumentError(
        absl::StrCat("AttentionBatchCuda::Set: need page_size >= 1 and 0 <= num_pages < 2^31, "
                     "got page_size=", page_size, " num_pages=", num_pages));
  }
  int64_t rows = 0;
  int64_t entries = 0;
  int64_t max_context = 0;
  for (int64_t i = 0; i < n; ++i) {
    const AttentionSequenceCuda& s = seqs[i];
    if (s.num_new < 1 || s.context < s.num_new || s.context > INT_MAX) {
      return absl::InvalidArgumentError(absl::StrCat(
          "AttentionBatchCuda::Set: sequence ", i, " has num_new=", s.num_new, " context=",
          s.context, " (want 1 <= num_new <= context < 2^31)"));
    }
    const int64_t need = (s.context + page_size - 1) / page_size;
    if (static_cast<int64_t>(s.pages.size()) < need) {
      return absl::InvalidArgumentError(absl::StrCat(
          "AttentionBatchCuda::Set: sequence ", i, " has ", s.pages.size(), " pages, context ",
          s.context, " needs ", need, " of ", page_size, " positions"));
    }
    for (int64_t p = 0; p < need; ++p) {
      if (s.pages[p] < 0 || s.pages[p] >= num_pages) {
        return absl::InvalidArgumentError(
            absl::StrCat("AttentionBatchCuda::Set: sequence ", i, " page ", p, " has id ",
                         s.pages[p], ", outside the pool [0, ", num_pages, ")"));
      }
    }
    rows += s.num_new;
    entries += need;
    max_context = std::max(max_context, s.context);
  }
  if (rows > INT_MAX || entries > max_page_entries_) {
    return absl::InvalidArgumentError(absl::StrCat(
        "AttentionBatchCuda::Set: ", rows, " rows (max 2^31 - 1) and ", entries,
        " page-table entries (capacity ", max_page_entries_, ")"));
  }

  staging_.assign(n * kSequenceFields, 0);
  int64_t row = 0;
  int64_t page_begin = 0;
  for (int64_t i = 0; i < n; ++i) {
    const AttentionSequenceCuda& s = seqs[i];
    const int64_t need = (s.context + page_size - 1) / page_size;
    int32_t* f = staging_.data() + i * kSequenceFields;
    f[0] = static_cast<int32_t>(row);
    f[1] = static_cast<int32_t>(s.num_new);
    f[2] = static_cast<int32_t>(s.context);
    f[3] = static_cast<int32_t>(page_begin);
    row += s.num_new;
    page_begin += need;
  }
  for (int64_t i = 0; i < n; ++i) {
    const int64_t need = (seqs[i].context + page_size - 1) / page_size;
    staging_.insert(staging_.end(), seqs[i].pages.begin(), seqs[i].pages.begin() + need);
  }
  if (n > 0) {
    const std::span<const int32_t> all(staging_);
    RETURN_IF_ERROR(sequences_.CopyFromHost(all.first(n * kSequenceFields), stream));
    if (entries > 0) {
      RETURN_IF_ERROR(pages_.CopyFromHost(all.subspan(n * kSequenceFields), stream));
    }
  }
  num_sequences_ = n;
  num_rows_ = rows;
  max_context_ = max_context;
  page_size_ = page_size;
  num_pages_ = num_pages;
  return absl::OkStatus();
}

absl::Status AppendKvCuda(const Half* k_new, const Half* v_new, int64_t new_stride,
                          const AttentionShape& shape, const AttentionBatchCuda& batch,
                          const PagedKvCudaView& kv, cudaStream_t stream) {
  RETURN_IF_ERROR(CheckShapeAndView("AppendKvCuda", shape, batch, kv));
  const int64_t width = shape.num_heads * shape.head_dim;
  if (new_stride < width) {
    return absl::InvalidArgumentError(absl::StrCat(
        "AppendKvCuda: new_stride ", new_stride, " is below num_heads * head_dim = ", width));
  }
  if (k_new == nullptr || v_new == nullptr) {
    return absl::InvalidArgumentError("AppendKvCuda: k_new and v_new must be non-null");
  }
  if (batch.num_rows() == 0) return absl::OkStatus();
  AppendKvKernel<<<static_cast<unsigned>(batch.num_rows()), kAppendThreads, 0, stream>>>(
      reinterpret_cast<const __half*>(k_new), reinterpret_cast<const __half*>(v_new), new_stride,
      width, reinterpret_cast<const int4*>(batch.sequence_table()),
      static_cast<int>(batch.num_sequences()), batch.page_table(), batch.page_size(),
      kv.page_stride, shape.kv_stride, reinterpret_cast<__half*>(kv.k),
      reinterpret_cast<__half*>(kv.v));
  RETURN_IF_LAUNCH_ERROR("AppendKvKernel");
  return absl::OkStatus();
}

absl::Status CausalAttentionCuda(const Half* q, const AttentionShape& shape,
                                 const AttentionBatchCuda& batch, const PagedKvCudaView& kv,
                                 Half* out, cudaStream_t stream) {
  RETURN_IF_ERROR(CheckShapeAndView("CausalAttentionCuda", shape, batch, kv));
  const int64_t width = shape.num_heads * shape.head_dim;
  if (shape.q_stride < width || shape.out_stride < width || !std::isfinite(shape.scale)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "CausalAttentionCuda: q_stride ", shape.q_stride, " and out_stride ", shape.out_stride,
        " must be >= num_heads * head_dim = ", width, ", scale (", shape.scale,
        ") finite"));
  }
  if (q == nullptr || out == nullptr) {
    return absl::InvalidArgumentError("CausalAttentionCuda: q and out must be non-null");
  }
  if (batch.num_rows() == 0) return absl::OkStatus();
  const dim3 grid(static_cast<unsigned>(batch.num_rows()),
                  static_cast<unsigned>(shape.num_heads));
  CausalAttentionKernel<<<grid, kAttentionThreads, 0, stream>>>(
      reinterpret_cast<const __half*>(q), shape.q_stride, reinterpret_cast<const __half*>(kv.k),
      reinterpret_cast<const __half*>(kv.v), shape.kv_stride,
      reinterpret_cast<const int4*>(batch.sequence_table()),
      static_cast<int>(batch.num_sequences()), batch.page_table(), batch.page_size(),
      kv.page_stride, static_cast<int>(shape.head_dim), shape.scale,
      reinterpret_cast<__half*>(out), shape.out_stride);
  RETURN_IF_LAUNCH_ERROR("CausalAttentionKernel");
  return absl::OkStatus();
}

}  // namespace llmint8::kernels
