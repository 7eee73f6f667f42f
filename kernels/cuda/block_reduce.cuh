// Block-wide reductions for the kernels of this directory (internal; include from .cu only).
// They take any float: the max has -inf as its identity, so it also serves softmax over logits
// with masked (-inf) entries, and absmax over |x| >= 0.
//
// Requirements: blockDim.x a multiple of 32 (<= 1024), blockDim.y == blockDim.z == 1, every
// thread of the block calls, and the result is returned to every thread. Each reduction owns its
// shared scratch; consecutive calls are safe (a barrier precedes the write).
#ifndef LLMINT8_KERNELS_CUDA_BLOCK_REDUCE_CUH_
#define LLMINT8_KERNELS_CUDA_BLOCK_REDUCE_CUH_

#include <cuda_fp16.h>

#include "kernels/cuda/device_math.cuh"

namespace llmint8::gpu::internal {

// One warp-level reduction per warp, the partials through shared memory, then one more warp
// reduction; `identity` fills the lanes past the last warp.
template <typename WarpReduce>
__device__ __forceinline__ float BlockReduce(float v, WarpReduce warp_reduce, float identity) {
  __shared__ float partial[kWarpSize];
  const int lane = threadIdx.x % kWarpSize;
  const int warp = threadIdx.x / kWarpSize;
  const int num_warps = blockDim.x / kWarpSize;
  v = warp_reduce(v);
  __syncthreads();  // a previous call may still be reading `partial`
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  v = lane < num_warps ? partial[lane] : identity;
  return warp_reduce(v);
}

__device__ __forceinline__ float BlockReduceSum(float v) {
  return BlockReduce(v, [](float x) { return WarpSum(x); }, 0.0f);
}

// fmaxf semantics: NaN inputs are ignored unless every input is NaN.
__device__ __forceinline__ float BlockReduceMax(float v) {
  return BlockReduce(v, [](float x) { return WarpMax(x); }, -INFINITY);
}

// fp16 <-> fp32 for the element types the kernels read (fp16 activations, fp32 logits).
__device__ __forceinline__ float LoadAsFloat(const __half* p) { return __half2float(*p); }
__device__ __forceinline__ float LoadAsFloat(const float* p) { return *p; }

// Blocks for a grid-stride loop over `total` elements with `threads` per block: enough to fill
// an H100 several times over, never more than the work.
inline unsigned GridStrideBlocks(int64_t total, int threads) {
  const int64_t needed = (total + threads - 1) / threads;
  return static_cast<unsigned>(needed < 4096 ? (needed > 0 ? needed : 1) : 4096);
}

}  // namespace llmint8::gpu::internal

#endif  // LLMINT8_KERNELS_CUDA_BLOCK_REDUCE_CUH_
