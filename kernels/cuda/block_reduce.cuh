// Block-wide reductions for the forward-op kernels of this directory (internal; include from .cu
// only). Unlike device_math.cuh's BlockMax (inputs >= 0), these take any float: the max has
// -inf as its identity, so it also serves softmax over logits with masked (-inf) entries.
//
// Requirements (as BlockMax): blockDim.x a multiple of 32 (<= 1024), blockDim.y == blockDim.z
// == 1, every thread of the block calls, and the result is returned to every thread. Each
// function owns its shared scratch; consecutive calls are safe (a barrier precedes the write).
#ifndef LLMINT8_KERNELS_CUDA_BLOCK_REDUCE_CUH_
#define LLMINT8_KERNELS_CUDA_BLOCK_REDUCE_CUH_

#include <cuda_fp16.h>

#include "kernels/cuda/device_math.cuh"

namespace llmint8::gpu::internal {

__device__ __forceinline__ float BlockReduceSum(float v) {
  __shared__ float partial[kWarpSize];
  const int lane = threadIdx.x % kWarpSize;
  const int warp = threadIdx.x / kWarpSize;
  const int num_warps = blockDim.x / kWarpSize;
  v = WarpSum(v);
  __syncthreads();  // a previous call may still be reading `partial`
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  v = lane < num_warps ? partial[lane] : 0.0f;
  return WarpSum(v);
}

// fmaxf semantics: NaN inputs are ignored unless every input is NaN.
__device__ __forceinline__ float BlockReduceMax(float v) {
  __shared__ float partial[kWarpSize];
  const int lane = threadIdx.x % kWarpSize;
  const int warp = threadIdx.x / kWarpSize;
  const int num_warps = blockDim.x / kWarpSize;
  v = WarpMax(v);
  __syncthreads();
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  v = lane < num_warps ? partial[lane] : -INFINITY;
  return WarpMax(v);
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
