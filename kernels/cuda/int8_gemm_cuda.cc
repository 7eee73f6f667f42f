#include "kernels/cuda/int8_gemm_cuda.h"

#include <cuda_runtime_api.h>

#include <cstdint>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/int8_gemv.h"

namespace llmint8::kernels {
namespace {

constexpr int64_t kMaxK = int64_t{1} << 17;

bool Aligned4(const void* p) { return reinterpret_cast<uintptr_t>(p) % 4 == 0; }

}  // namespace

bool CublasLtInt8Supported(int64_t n, int64_t k, const void* a, const void* b, const void* c) {
  return k % 4 == 0 && n % 4 == 0 && Aligned4(a) && Aligned4(b) && Aligned4(c);
}

absl::Status Int8GemmCuda(gpu::CublasLt* lt, const int8_t* a, const int8_t* b, int64_t m,
                          int64_t n, int64_t k, int32_t* c, Int8GemmAlgo algo,
                          cudaStream_t stream) {
  if (a == nullptr || b == nullptr || c == nullptr) {
    return absl::InvalidArgumentError("Int8GemmCuda: a, b and c must be non-null");
  }
  if (m <= 0 || n <= 0 || k <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("Int8GemmCuda: m, n, k must be positive, got ", m, ", ", n, ", ", k));
  }
  if (k > kMaxK) {
    return absl::InvalidArgumentError(
        absl::StrCat("Int8GemmCuda: k must be <= 2^17 so int32 cannot overflow, got ", k));
  }
  const bool lt_ok = CublasLtInt8Supported(n, k, a, b, c);
  const bool automatic = algo == Int8GemmAlgo::kAuto;
  if (automatic) {
    algo = (m <= kDefaultGemvMaxM || !lt_ok || lt == nullptr) ? Int8GemmAlgo::kGemv
                                                               : Int8GemmAlgo::kCublasLt;
  }
  if (algo == Int8GemmAlgo::kCublasLt) {
    if (lt == nullptr)
      return absl::InvalidArgumentError("Int8GemmCuda: kCublasLt needs a CublasLt");
    if (!lt_ok) {
      return absl::InvalidArgumentError(absl::StrCat(
          "Int8GemmCuda: cuBLASLt int8 needs k % 4 == 0, n % 4 == 0 and 4-byte aligned "
          "pointers; got n=", n, " k=", k, " (use kAuto or kGemv for this shape)"));
    }
    gpu::MatmulArgs args;
    args.type = gpu::MatmulType::kInt8Int32;
    args.a = a;
    args.b = b;
    args.c = c;
    args.m = m;
    args.n = n;
    args.k = k;
    const absl::Status s = lt->Matmul(args, stream);
    // kAuto: where cuBLASLt has no int8 algorithm for the shape, or could not find one now
    // (out of memory: CublasLt::Matmul asks again next time), the small-M kernel below
    // computes it, writing all of the output (whatever a failed matmul left in it).
    if (!automatic || !gpu::CublasLtMayFallBack(s)) return s;
    (void)cudaGetLastError();  // a cudaMalloc cuBLASLt failed: not the fallback launch's error
  }
  internal::Int8GemvParams p;
  p.x = a;
  p.w = b;
  p.m = m;
  p.n = n;
  p.k = k;
  p.out_i32 = c;
  return internal::LaunchInt8Gemv(p, stream);
}

}  // namespace llmint8::kernels
