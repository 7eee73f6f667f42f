// Opaque CUDA handle types for headers that host code outside kernels/ and comm/ includes.
//
// These declarations are the same types the CUDA headers declare (a typedef may be repeated),
// so a .cu file may include both. Nothing here pulls in a CUDA header.
#ifndef LLMINT8_KERNELS_CUDA_CUDA_TYPES_H_
#define LLMINT8_KERNELS_CUDA_CUDA_TYPES_H_

struct CUstream_st;
typedef struct CUstream_st* cudaStream_t;
struct CUevent_st;
typedef struct CUevent_st* cudaEvent_t;
struct cublasLtContext;
typedef struct cublasLtContext* cublasLtHandle_t;

#endif  // LLMINT8_KERNELS_CUDA_CUDA_TYPES_H_
