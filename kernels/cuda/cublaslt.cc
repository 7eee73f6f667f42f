#include "kernels/cuda/cublaslt.h"

#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>
#include <tuple>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "kernels/cuda/cuda_status.h"
#include "kernels/cuda/device.h"

namespace llmint8::gpu {
namespace {

// Largest power of two (capped at 256) dividing the address: what cuBLASLt may assume.
uint32_t AlignmentOf(const void* p) {
  const uintptr_t v = reinterpret_cast<uintptr_t>(p);
  if (v == 0) return 256;
  const uintptr_t lowest = v & (~v + 1);
  return static_cast<uint32_t>(std::min<uintptr_t>(lowest, 256));
}

using PlanKey = std::tuple<int, int64_t, int64_t, int64_t, bool, uint32_t, uint32_t, uint32_t,
                           uint32_t>;

// Descriptors and the algorithm for one (type, shape, bias, alignment) combination.
struct Plan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t layout_a = nullptr;  // the weight (cuBLASLt's A)
  cublasLtMatrixLayout_t layout_b = nullptr;  // the activations (cuBLASLt's B)
  cublasLtMatrixLayout_t layout_c = nullptr;
  cublasLtMatmulAlgo_t algo{};

  Plan() = default;
  Plan(const Plan&) = delete;
  Plan& operator=(const Plan&) = delete;
  ~Plan() {
    if (layout_c != nullptr) cublasLtMatrixLayoutDestroy(layout_c);
    if (layout_b != nullptr) cublasLtMatrixLayoutDestroy(layout_b);
    if (layout_a != nullptr) cublasLtMatrixLayoutDestroy(layout_a);
    if (desc != nullptr) cublasLtMatmulDescDestroy(desc);
  }
};

// Plans (and remembered refusals) kept at most; past it the cache starts again empty.
constexpr size_t kMaxPlans = 4096;

struct PreferenceDeleter {
  void operator()(cublasLtMatmulPreferenceOpaque_t* p) const { cublasLtMatmulPreferenceDestroy(p); }
};

}  // namespace

struct CublasLt::State {
  cublasLtHandle_t handle = nullptr;
  DeviceBuffer<uint8_t> workspace;
  absl::flat_hash_map<PlanKey, std::unique_ptr<Plan>> plans;
  // Shapes cuBLASLt has no algorithm for (Unimplemented), so callers that fall back to another
  // kernel do not rerun the heuristic on every call.
  absl::flat_hash_map<PlanKey, absl::Status> refused;

  ~State() {
    plans.clear();
    if (handle != nullptr) cublasLtDestroy(handle);
  }
};

CublasLt::CublasLt() = default;
CublasLt::CublasLt(CublasLt&&) noexcept = default;
CublasLt& CublasLt::operator=(CublasLt&&) noexcept = default;
CublasLt::~CublasLt() = default;

absl::StatusOr<CublasLt> CublasLt::Create(size_t workspace_bytes) {
  CublasLt lt;
  lt.state_ = std::make_unique<State>();
  RETURN_IF_CUBLAS_ERROR(cublasLtCreate(&lt.state_->handle));
  ASSIGN_OR_RETURN(lt.state_->workspace, DeviceBuffer<uint8_t>::Allocate(workspace_bytes));
  return lt;
}

cublasLtHandle_t CublasLt::handle() const { return state_ ? state_->handle : nullptr; }
size_t CublasLt::workspace_bytes() const { return state_ ? state_->workspace.bytes() : 0; }

namespace {

// C^T = B * A^T in cuBLASLt's column-major terms: our row-major C[m, n] is a column-major
// [n, m] matrix, the weight B[n, k] row-major is column-major [k, n] (used transposed) and the
// activations A[m, k] are column-major [k, m]. This is the "TN" layout IMMA kernels require.
absl::StatusOr<std::unique_ptr<Plan>> MakePlan(cublasLtHandle_t handle, size_t workspace_bytes,
                                               const MatmulArgs& args) {
  const bool int8 = args.type == MatmulType::kInt8Int32;
  const cublasComputeType_t compute = int8 ? CUBLAS_COMPUTE_32I : CUBLAS_COMPUTE_32F;
  const cudaDataType_t scale_type = int8 ? CUDA_R_32I : CUDA_R_32F;
  const cudaDataType_t ab_type = int8 ? CUDA_R_8I : CUDA_R_16F;
  const cudaDataType_t c_type = int8 ? CUDA_R_32I : CUDA_R_16F;

  auto plan = std::make_unique<Plan>();
  RETURN_IF_CUBLAS_ERROR(cublasLtMatmulDescCreate(&plan->desc, compute, scale_type));
  const cublasOperation_t trans_a = CUBLAS_OP_T;
  const cublasOperation_t trans_b = CUBLAS_OP_N;
  RETURN_IF_CUBLAS_ERROR(cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_TRANSA,
                                                        &trans_a, sizeof(trans_a)));
  RETURN_IF_CUBLAS_ERROR(cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_TRANSB,
                                                        &trans_b, sizeof(trans_b)));
  if (args.bias != nullptr) {
    const cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_BIAS;
    RETURN_IF_CUBLAS_ERROR(cublasLtMatmulDescSetAttribute(
        plan->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof(epilogue)));
    const cudaDataType_t bias_type = CUDA_R_16F;
    RETURN_IF_CUBLAS_ERROR(cublasLtMatmulDescSetAttribute(
        plan->desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_type, sizeof(bias_type)));
    RETURN_IF_CUBLAS_ERROR(cublasLtMatmulDescSetAttribute(
        plan->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &args.bias, sizeof(args.bias)));
  }
  RETURN_IF_CUBLAS_ERROR(cublasLtMatrixLayoutCreate(&plan->layout_a, ab_type, args.k, args.n,
                                                    args.k));
  RETURN_IF_CUBLAS_ERROR(cublasLtMatrixLayoutCreate(&plan->layout_b, ab_type, args.k, args.m,
                                                    args.k));
  RETURN_IF_CUBLAS_ERROR(cublasLtMatrixLayoutCreate(&plan->layout_c, c_type, args.n, args.m,
                                                    args.n));

  cublasLtMatmulPreference_t pref_raw = nullptr;
  RETURN_IF_CUBLAS_ERROR(cublasLtMatmulPreferenceCreate(&pref_raw));
  std::unique_ptr<cublasLtMatmulPreferenceOpaque_t, PreferenceDeleter> pref(pref_raw);
  const uint64_t max_ws = workspace_bytes;
  RETURN_IF_CUBLAS_ERROR(cublasLtMatmulPreferenceSetAttribute(
      pref.get(), CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &max_ws, sizeof(max_ws)));
  const uint32_t align_a = AlignmentOf(args.b);  // cuBLASLt's A is our weight
  const uint32_t align_b = AlignmentOf(args.a);
  const uint32_t align_c = AlignmentOf(args.c);
  RETURN_IF_CUBLAS_ERROR(cublasLtMatmulPreferenceSetAttribute(
      pref.get(), CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &align_a, sizeof(align_a)));
  RETURN_IF_CUBLAS_ERROR(cublasLtMatmulPreferenceSetAttribute(
      pref.get(), CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &align_b, sizeof(align_b)));
  RETURN_IF_CUBLAS_ERROR(cublasLtMatmulPreferenceSetAttribute(
      pref.get(), CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &align_c, sizeof(align_c)));
  RETURN_IF_CUBLAS_ERROR(cublasLtMatmulPreferenceSetAttribute(
      pref.get(), CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &align_c, sizeof(align_c)));
  if (!int8) {
    // Split-K partial sums only in the compute type (fp32): the INPLACE and OUTPUT_TYPE schemes
    // would add them in fp16, breaking the fp32-accumulation contract at large k.
    const uint32_t reduction = CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE;
    RETURN_IF_CUBLAS_ERROR(cublasLtMatmulPreferenceSetAttribute(
        pref.get(), CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, &reduction, sizeof(reduction)));
  }

  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  const cublasStatus_t st =
      cublasLtMatmulAlgoGetHeuristic(handle, plan->desc, plan->layout_a, plan->layout_b,
                                     plan->layout_c, plan->layout_c, pref.get(), 1, &result,
                                     &found);
  // What the shape cannot have (no algorithm, NOT_SUPPORTED, INVALID_VALUE) is Unimplemented,
  // which Matmul remembers and the callers' kAuto paths take elsewhere from then on. A failure
  // of the moment (out of memory, a library not initialized or failing) is reported as it is,
  // and the next call asks again.
  if (st == CUBLAS_STATUS_ALLOC_FAILED || st == CUBLAS_STATUS_NOT_INITIALIZED ||
      st == CUBLAS_STATUS_INTERNAL_ERROR || st == CUBLAS_STATUS_EXECUTION_FAILED) {
    RETURN_IF_CUBLAS_ERROR(st);
  }
  if (st != CUBLAS_STATUS_SUCCESS || found == 0) {
    return absl::UnimplementedError(absl::StrCat(
        "cuBLASLt has no ", int8 ? "int8" : "fp16", " matmul algorithm for m=", args.m,
        " n=", args.n, " k=", args.k, " (alignments ", align_a, "/", align_b, "/", align_c,
        ", status ", cublasLtGetStatusName(st), ")",
        int8 ? "; int8 needs k % 4 == 0, n % 4 == 0 and 4-byte aligned pointers" : ""));
  }
  plan->algo = result.algo;
  return plan;
}

}  // namespace

absl::Status CublasLt::Matmul(const MatmulArgs& args, cudaStream_t stream) {
  if (!state_) return absl::FailedPreconditionError("CublasLt used after move or before Create");
  if (args.a == nullptr || args.b == nullptr || args.c == nullptr) {
    return absl::InvalidArgumentError("Matmul: a, b and c must be device pointers, got null");
  }
  if (args.m <= 0 || args.n <= 0 || args.k <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("Matmul: sizes must be positive, got m=",
                                                   args.m, " n=", args.n, " k=", args.k));
  }
  const bool int8 = args.type == MatmulType::kInt8Int32;
  if (int8 && args.bias != nullptr) {
    return absl::InvalidArgumentError("Matmul: the int8 -> int32 matmul takes no bias");
  }
  const PlanKey key{static_cast<int>(args.type), args.m, args.n, args.k, args.bias != nullptr,
                    AlignmentOf(args.a), AlignmentOf(args.b), AlignmentOf(args.c),
                    AlignmentOf(args.bias)};
  auto it = state_->plans.find(key);
  if (it == state_->plans.end()) {
    if (auto r = state_->refused.find(key); r != state_->refused.end()) return r->second;
    absl::StatusOr<std::unique_ptr<Plan>> plan =
        MakePlan(state_->handle, state_->workspace.bytes(), args);
    if (!plan.ok()) {
      if (plan.status().code() == absl::StatusCode::kUnimplemented) {
        if (state_->refused.size() >= kMaxPlans) state_->refused.clear();
        state_->refused.emplace(key, plan.status());
      }
      return plan.status();
    }
    // A server sees one m per batch size it runs, so the plans are bounded by its largest
    // step; the cap keeps a long-lived process with many shapes from growing without end.
    if (state_->plans.size() >= kMaxPlans) state_->plans.clear();
    it = state_->plans.emplace(key, *std::move(plan)).first;
  }
  Plan& plan = *it->second;
  if (args.bias != nullptr) {
    RETURN_IF_CUBLAS_ERROR(cublasLtMatmulDescSetAttribute(
        plan.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &args.bias, sizeof(args.bias)));
  }
  const int32_t alpha_i = 1, beta_i = 0;
  const float alpha_f = 1.0f, beta_f = 0.0f;
  const void* alpha = int8 ? static_cast<const void*>(&alpha_i) : &alpha_f;
  const void* beta = int8 ? static_cast<const void*>(&beta_i) : &beta_f;
  RETURN_IF_CUBLAS_ERROR(cublasLtMatmul(state_->handle, plan.desc, alpha, args.b, plan.layout_a,
                                        args.a, plan.layout_b, beta, args.c, plan.layout_c,
                                        args.c, plan.layout_c, &plan.algo,
                                        state_->workspace.data(), state_->workspace.bytes(),
                                        stream));
  return absl::OkStatus();
}

}  // namespace llmint8::gpu
