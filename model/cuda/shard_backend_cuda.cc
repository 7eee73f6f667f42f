// The CUDA backend of ShardModel: the forward of one tensor-parallel shard on one GPU, fp16
// activations, weights in fp16 or LLM.int8(), a paged fp16 KV cache. See model/cuda/README.md.
//
// One step, all on one stream (options.cuda_stream, or a stream of our own at TP = 1):
//   host: validate the batch (as the CPU backend), check memory, grow the KV pool / scratch if
//         needed, assign KV pages, upload ids + positions + head rows (one copy) and the
//         attention batch description (one copy);
//   device: embedding (+ all-reduce) -> [project_in] -> + positions -> N x [LN -> QKV -> append
//         K/V -> attention -> out_proj (+ all-reduce) -> residual + bias + LN (fused) -> fc1 +
//         bias -> act -> fc2 (+ all-reduce) -> residual + bias + next LN (fused)] -> head rows
//         -> final LN -> [project_out] -> LM head on this rank's vocab slice (+ all-gather);
//   host: one device-to-host copy of the fp16 logits, the only synchronization of the step
//         (the NCCL communicator also waits for each collective, see comm/communicator.h).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <new>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/half.h"
#include "common/status_macros.h"
#include "kernels/attention.h"
#include "kernels/cuda/activation_cuda.h"
#include "kernels/cuda/attention_cuda.h"
#include "kernels/cuda/cublaslt.h"
#include "kernels/cuda/device.h"
#include "kernels/cuda/embedding_cuda.h"
#include "kernels/cuda/int8_linear_cuda.h"
#include "kernels/cuda/layer_norm_cuda.h"
#include "kernels/cuda/linear_cuda.h"
#include "kernels/cuda/quantize_activation_cuda.h"
#include "kernels/layer_norm.h"
#include "model/cuda/device_weights.h"
#include "model/cuda/paged_kv_cache.h"
#include "model/forward_weights.h"
#include "model/shard_backend.h"

namespace llmint8::model {
namespace cuda {
namespace {

// Token capacity of the activation buffers is rounded up to this, so a stream of slightly
// different batch sizes does not reallocate every step.
constexpr int64_t kTokenGranule = 16;
// The attention tables' capacity in sequences and page entries is rounded up to these.
constexpr int64_t kAttentionSequenceGranule = 16;
constexpr int64_t kAttentionPageGranule = 64;
// The int8 linears take the small-M kernel up to this many rows (Int8LinearCudaOptions default);
// their int32 GEMM scratch exists only for larger workspaces.
constexpr int64_t kGemvMaxM = kernels::kDefaultGemvMaxM;

int64_t RoundUp(int64_t v, int64_t g) { return (v + g - 1) / g * g; }

// Bytes of an AttentionBatchCuda for `sequences` and `page_entries`: [sequences][4] int32 + the
// page table.
int64_t AttentionTableBytes(int64_t sequences, int64_t page_entries) {
  return (sequences * 4 + page_entries) * 4;
}

// Columns of one rank's block in the LM head's gather buffer: its vocab rows per rank, rounded
// up to 8 halves so that every block, the cuBLASLt output of one rank, starts 16-byte aligned
// (a vocab slice may be odd: 50272 / 2 is even, a 510-token test vocab / 2 is not).
int64_t LogitBlockColumns(int64_t vocab, int64_t tp) { return RoundUp((vocab + tp - 1) / tp, 8); }

// Bytes of the workspace Scratch creates for an int8 linear.
int64_t Int8WorkspaceBytes(int64_t max_m, int64_t k, int64_t n) {
  return kernels::Int8LinearCudaWorkspace::Bytes(max_m, k, n, kernels::kDefaultMaxOutlierColumns,
                                                 kGemvMaxM);
}

template <typename T>
int64_t Bytes(const gpu::DeviceBuffer<T>& b) {
  return static_cast<int64_t>(b.bytes());
}

int64_t WorkspaceBytes(const kernels::Int8LinearCudaWorkspace& ws) {
  const kernels::QuantizedActivationCuda& a = ws.act;
  return Bytes(a.q) + Bytes(a.absmax) + Bytes(a.outlier_cols) + Bytes(a.outliers) +
         Bytes(a.counts) + Bytes(a.col_flags) + Bytes(a.tile_counts) + Bytes(ws.acc) +
         Bytes(ws.outlier_weight);
}

// Activation buffers on the device, sized for `tokens` new tokens and `rows` logit rows.
struct Scratch {
  int64_t tokens = 0;
  int64_t rows = 0;
  gpu::DeviceBuffer<int32_t> ints;    // [2 * tokens + rows]: ids, positions, head rows
  gpu::DeviceBuffer<Half> x;          // [tokens, hidden]: the residual stream
  gpu::DeviceBuffer<Half> normed;     // [tokens, hidden]
  gpu::DeviceBuffer<Half> partial;    // [tokens, hidden]: row-parallel output before the reduce
  gpu::DeviceBuffer<Half> qkv;        // [tokens, 3 * local_width]
  gpu::DeviceBuffer<Half> attn;       // [tokens, local_width]
  gpu::DeviceBuffer<Half> ffn;        // [tokens, local_ffn]
  gpu::DeviceBuffer<Half> embed;      // [tokens, proj] (models with project_in only)
  gpu::DeviceBuffer<Half> head_in;    // [rows, hidden]
  gpu::DeviceBuffer<Half> head_proj;  // [rows, proj] (models with project_out only)
  gpu::DeviceBuffer<Half> logits;     // [tp, rows, LogitBlockColumns]
  // kInt8: one workspace per linear shape, shared by the layers.
  kernels::Int8LinearCudaWorkspace ws_qkv, ws_out, ws_fc1, ws_fc2;

  int64_t bytes() const {
    return Bytes(ints) + Bytes(x) + Bytes(normed) + Bytes(partial) + Bytes(qkv) + Bytes(attn) +
           Bytes(ffn) + Bytes(embed) + Bytes(head_in) + Bytes(head_proj) + Bytes(logits) +
           WorkspaceBytes(ws_qkv) + WorkspaceBytes(ws_out) + WorkspaceBytes(ws_fc1) +
           WorkspaceBytes(ws_fc2);
  }
};

class CudaShardBackend final : public ShardBackend {
 public:
  static absl::StatusOr<std::unique_ptr<ShardBackend>> Load(
      const OptConfig& config, const CheckpointSource& source, const ShardPlan& plan,
      comm::Communicator* comm, const ShardOptions& options, int64_t max_context,
      const LoadProgressFn& progress);

  // The device memory is freed on the shard's device, whichever device the destroying thread
  // (a gRPC thread unloading the shard) had current.
  ~CudaShardBackend() override { gpu::SetDevice(options_.cuda_device).IgnoreError(); }

  absl::StatusOr<Logits> Step(std::span<const ShardModel::SequenceInput> batch,
                              bool all_positions) override;
  absl::Status Release(uint64_t seq_id) override;
  int64_t ContextLength(uint64_t seq_id) const override { return kv_.Length(seq_id); }
  int64_t num_sequences() const override { return kv_.num_sequences(); }
  MemoryStats memory() const override;
  int64_t KvCapacityTokens(int64_t usable_bytes, int64_t step_tokens, int64_t step_rows,
                           int64_t max_sequences) const override;

 private:
  CudaShardBackend(const OptConfig& config, const ShardPlan& plan, comm::Communicator* comm,
                   const ShardOptions& options, int64_t max_context);

  absl::Status LoadWeights(const CheckpointSource& source, const ShardPlan& plan,
                           const LoadProgressFn& progress);
  // Bytes of Scratch for (tokens, rows), before rounding (Int8WorkspaceBytes for kInt8).
  int64_t ScratchBytesFor(int64_t tokens, int64_t rows) const;
  absl::Status EnsureScratch(int64_t tokens, int64_t rows);
  absl::Status EnsureAttentionBatch(int64_t sequences, int64_t page_entries);
  absl::Status CheckLimit(int64_t more_bytes, std::string_view what) const;
  // The step Step prepared (bookkeeping, KV pages, logits rows planned).
  absl::Status Forward(std::span<const ShardModel::SequenceInput> batch, int64_t tokens,
                       int64_t rows, Logits* out);
  absl::Status Linear(const DeviceLinear& w, const Half* x, int64_t m, Half* y,
                      kernels::Int8LinearCudaWorkspace* ws);
  absl::Status AllReduce(Half* data, int64_t count);
  // Checks the limit and allocates what the step needs (MemoryForStep), voting with the other
  // ranks when any of them may allocate (model/shard_backend.h AgreeOnRoom).
  absl::Status MemoryForStep(int64_t nseq, int64_t tokens, int64_t rows, int64_t pages_needed,
                             int64_t page_entries);

  const OptConfig config_;
  const ShardOptions options_;
  const int tp_;
  const int rank_;
  comm::Communicator* const comm_;  // not owned; null when tp == 1
  const int64_t max_context_;
  const int64_t hidden_;
  const int64_t proj_;
  const int64_t local_width_;
  const int64_t local_ffn_;
  const int64_t local_heads_;
  const int64_t head_dim_;

  gpu::Stream own_stream_;  // when options.cuda_stream is null
  cudaStream_t stream_ = nullptr;
  gpu::CublasLt lt_;
  DeviceShardWeights weights_;
  PagedKvCache kv_;
  Scratch scratch_;
  kernels::AttentionBatchCuda attn_batch_;
  int64_t attn_batch_sequences_ = 0;
  int64_t attn_batch_pages_ = 0;
  // What every rank of the group is known to hold (raised only after the group agreed to a
  // step, and rounded as the allocations round): within these no rank allocates, so no vote
  // is needed; the same on every rank, unlike the buffers, which a rank with room may have
  // grown for a step the group then refused. KV in pages in use (pages count positions; a
  // rank's pool may be capped smaller or larger).
  int64_t agreed_tokens_ = 0;
  int64_t agreed_rows_ = 0;
  int64_t agreed_sequences_ = 0;
  int64_t agreed_page_entries_ = 0;
  int64_t kv_pages_high_water_ = 0;
  gpu::DeviceBuffer<float> vote_;  // tp > 1: AgreeOnRoom's all-reduce

  // Host-side per-step state, reused.
  std::vector<uint64_t> sorted_ids_;
  std::vector<int64_t> past_;
  std::vector<int64_t> first_row_;
  std::vector<int32_t> host_ints_;
  std::vector<int64_t> logit_row_begin_;  // PlanLogitRows
  std::vector<int32_t> head_rows_;
  std::vector<kernels::AttentionSequenceCuda> seqs_;
  std::vector<Half> host_logits_;
};

CudaShardBackend::CudaShardBackend(const OptConfig& config, const ShardPlan& plan,
                                   comm::Communicator* comm, const ShardOptions& options,
                                   int64_t max_context)
    : config_(config),
      options_(options),
      tp_(plan.tp),
      rank_(plan.rank),
      comm_(comm),
      max_context_(max_context),
      hidden_(config.hidden_size),
      proj_(config.word_embed_proj_dim),
      local_width_(plan.attn_rows.size()),
      local_ffn_(plan.ffn_rows.size()),
      local_heads_(plan.local_heads),
      head_dim_(config.head_dim()),
      kv_(config.num_hidden_layers, plan.attn_rows.size()) {}

absl::StatusOr<std::unique_ptr<ShardBackend>> CudaShardBackend::Load(
    const OptConfig& config, const CheckpointSource& source, const ShardPlan& plan,
    comm::Communicator* comm, const ShardOptions& options, int64_t max_context,
    const LoadProgressFn& progress) {
  if (options.precision == Precision::kF32) {
    return absl::InvalidArgumentError(
        "device cuda computes in fp16: use precision f16 or int8 (f32 is CPU only)");
  }
  const int tp = plan.tp;
  if (tp > 1 && (comm == nullptr || !comm->on_device())) {
    return absl::InvalidArgumentError(
        absl::StrCat("device cuda with tp=", tp, " needs a device-memory communicator (nccl), got ",
                     comm == nullptr ? std::string("none") : comm->backend()));
  }
  if (tp > 1 && options.cuda_stream == nullptr) {
    return absl::InvalidArgumentError(
        "device cuda with tp > 1 needs ShardOptions::cuda_stream: the stream the NCCL "
        "communicator was created with (CommOptions::cuda_stream)");
  }
  if (config.head_dim() > kernels::kMaxAttentionHeadDimCuda) {
    return absl::InvalidArgumentError(absl::StrCat("head_dim ", config.head_dim(),
                                                   " is over the CUDA attention limit ",
                                                   kernels::kMaxAttentionHeadDimCuda));
  }
  RETURN_IF_ERROR(gpu::SetDevice(options.cuda_device));
  std::unique_ptr<CudaShardBackend> b(
      new CudaShardBackend(config, plan, comm, options, max_context));
  if (options.cuda_stream != nullptr) {
    b->stream_ = static_cast<cudaStream_t>(options.cuda_stream);
  } else {
    ASSIGN_OR_RETURN(b->own_stream_, gpu::Stream::Create());
    b->stream_ = b->own_stream_.get();
  }
  ASSIGN_OR_RETURN(b->lt_, gpu::CublasLt::Create());
  if (options.memory_limit_bytes > 0) {
    // Before reading anything: the weights (EstimateShardWeightBytes counts biases and norms
    // as fp32, so it bounds the fp16 device copy), the cuBLASLt workspace, minimal scratch.
    MemoryStats need = EstimateShardWeightBytes(config, plan, options.precision);
    need.scratch = static_cast<int64_t>(b->lt_.workspace_bytes()) +
                   b->ScratchBytesFor(kTokenGranule, kTokenGranule);
    if (need.total() > options.memory_limit_bytes) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "shard ", b->rank_, "/", tp, " of ", config.name, " in ",
          std::string(PrecisionName(options.precision)), " on cuda needs about ",
          need.DebugString(), " before any KV cache; memory_limit_bytes is ",
          options.memory_limit_bytes, ". Use a higher TP degree, int8, or more memory"));
    }
  }
  RETURN_IF_ERROR(b->LoadWeights(source, plan, progress));
  RETURN_IF_ERROR(b->EnsureScratch(1, 1));
  RETURN_IF_ERROR(b->EnsureAttentionBatch(1, 1));
  if (tp > 1) {
    ASSIGN_OR_RETURN(b->vote_, gpu::DeviceBuffer<float>::Allocate(1));
  }
  RETURN_IF_ERROR(b->CheckLimit(0, "after loading"));
  return std::unique_ptr<ShardBackend>(std::move(b));
}

absl::Status CudaShardBackend::LoadWeights(const CheckpointSource& source, const ShardPlan& plan,
                                           const LoadProgressFn& progress) {
  {
    ShardWeights host;  // the shared tables only; freed once on the device
    RETURN_IF_ERROR(
        LoadSharedWeights(config_, source, plan, options_.precision, Layout::kRowMajor, &host));
    RETURN_IF_ERROR(UploadShared(host, &weights_, stream_));
  }
  const MemoryStats per_layer =
      DeviceLayerBytes(config_, local_width_, local_ffn_, options_.precision);
  std::vector<float> tmp;
  weights_.layers.reserve(static_cast<size_t>(config_.num_hidden_layers));
  for (int64_t i = 0; i < config_.num_hidden_layers; ++i) {
    RETURN_IF_ERROR(CheckLimit(per_layer.total(), absl::StrCat("loading decoder layer ", i)));
    LayerWeights host;  // one layer on the host at a time (kInt8: already quantized)
    RETURN_IF_ERROR(LoadLayerWeights(config_, source, plan, options_.precision, Layout::kRowMajor,
                                     i, &host, &tmp));
    ASSIGN_OR_RETURN(DeviceLayer layer, UploadLayer(host, stream_));
    weights_.layers.push_back(std::move(layer));
    if (progress) RETURN_IF_ERROR(progress(i + 1, config_.num_hidden_layers));
  }
  return absl::OkStatus();
}

MemoryStats CudaShardBackend::memory() const {
  MemoryStats s;
  weights_.AddBytes(&s);
  s.kv_cache = kv_.bytes();
  s.scratch = scratch_.bytes() + static_cast<int64_t>(lt_.workspace_bytes()) +
              AttentionTableBytes(attn_batch_sequences_, attn_batch_pages_);
  return s;
}

int64_t CudaShardBackend::KvCapacityTokens(int64_t usable_bytes, int64_t step_tokens,
                                           int64_t step_rows, int64_t max_sequences) const {
  const MemoryStats now = memory();
  const int64_t fixed = now.weights();
  const int64_t room = usable_bytes - fixed - ScratchBytesFor(step_tokens, step_rows) -
                       static_cast<int64_t>(lt_.workspace_bytes());
  // The pool grows by doubling and holds the old pool while it copies (Step, GrowPool): a pool
  // of P pages can pass through 3P / 2 pages at once, and the last doubling overshoots by up to
  // 2x. Claiming a third of the room keeps every growth within it.
  const int64_t pages = std::max<int64_t>(0, room) / kv_.page_bytes() / 3;
  // Each sequence's last page may be partly empty.
  return std::max<int64_t>(
      0, pages * PagedKvCache::kPageSize - max_sequences * (PagedKvCache::kPageSize - 1));
}

absl::Status CudaShardBackend::CheckLimit(int64_t more_bytes, std::string_view what) const {
  if (options_.memory_limit_bytes <= 0) return absl::OkStatus();
  const MemoryStats now = memory();
  if (now.total() + more_bytes <= options_.memory_limit_bytes) return absl::OkStatus();
  return absl::ResourceExhaustedError(
      absl::StrCat("cuda shard ", rank_, "/", tp_, ": ", std::string(what), " needs ", more_bytes,
                   " more bytes; the shard holds ", now.DebugString(), " of memory_limit_bytes ",
                   options_.memory_limit_bytes));
}

int64_t CudaShardBackend::ScratchBytesFor(int64_t tokens, int64_t rows) const {
  const int64_t m = RoundUp(std::max<int64_t>(tokens, 1), kTokenGranule);
  const int64_t r = RoundUp(std::max<int64_t>(rows, 1), kTokenGranule);
  const bool proj = config_.has_projections();
  const int64_t logit_cols = LogitBlockColumns(config_.vocab_size, tp_);
  int64_t halfs =
      m * (3 * hidden_ + 3 * local_width_ + local_width_ + local_ffn_ + (proj ? proj_ : 0)) +
      r * (hidden_ + (proj ? proj_ : 0) + tp_ * logit_cols);
  int64_t b = halfs * 2 + (2 * m + r) * 4;
  if (options_.precision == Precision::kInt8) {
    b += Int8WorkspaceBytes(m, hidden_, 3 * local_width_) +
         Int8WorkspaceBytes(m, local_width_, hidden_) + Int8WorkspaceBytes(m, hidden_, local_ffn_) +
         Int8WorkspaceBytes(m, local_ffn_, hidden_);
  }
  return b;
}

absl::Status CudaShardBackend::EnsureScratch(int64_t tokens, int64_t rows) {
  Scratch& s = scratch_;
  const int64_t m = RoundUp(std::max<int64_t>(tokens, 1), kTokenGranule);
  const int64_t r = RoundUp(std::max<int64_t>(rows, 1), kTokenGranule);
  if (m <= s.tokens && r <= s.rows) return absl::OkStatus();
  const int64_t nm = std::max(m, s.tokens);
  const int64_t nr = std::max(r, s.rows);
  // Buffers still in use by queued work must not be freed under it. Then the old buffers go
  // before the new ones are allocated, so the device never holds both (if an allocation
  // fails, the scratch is empty and the next step allocates it again).
  RETURN_IF_ERROR(gpu::internal::SynchronizeStream(stream_));
  scratch_ = Scratch{};
  auto half = [](int64_t n) { return gpu::DeviceBuffer<Half>::Allocate(static_cast<size_t>(n)); };
  const bool proj = config_.has_projections();
  Scratch n;
  ASSIGN_OR_RETURN(n.ints, gpu::DeviceBuffer<int32_t>::Allocate(static_cast<size_t>(2 * nm + nr)));
  ASSIGN_OR_RETURN(n.x, half(nm * hidden_));
  ASSIGN_OR_RETURN(n.normed, half(nm * hidden_));
  ASSIGN_OR_RETURN(n.partial, half(nm * hidden_));
  ASSIGN_OR_RETURN(n.qkv, half(nm * 3 * local_width_));
  ASSIGN_OR_RETURN(n.attn, half(nm * local_width_));
  ASSIGN_OR_RETURN(n.ffn, half(nm * local_ffn_));
  if (proj) {
    ASSIGN_OR_RETURN(n.embed, half(nm * proj_));
  }
  ASSIGN_OR_RETURN(n.head_in, half(nr * hidden_));
  if (proj) {
    ASSIGN_OR_RETURN(n.head_proj, half(nr * proj_));
  }
  ASSIGN_OR_RETURN(n.logits, half(tp_ * nr * LogitBlockColumns(config_.vocab_size, tp_)));
  if (options_.precision == Precision::kInt8) {
    using kernels::Int8LinearCudaWorkspace;
    using kernels::kDefaultMaxOutlierColumns;
    ASSIGN_OR_RETURN(n.ws_qkv,
                     Int8LinearCudaWorkspace::Create(nm, hidden_, 3 * local_width_,
                                                     kDefaultMaxOutlierColumns, kGemvMaxM));
    ASSIGN_OR_RETURN(n.ws_out,
                     Int8LinearCudaWorkspace::Create(nm, local_width_, hidden_,
                                                     kDefaultMaxOutlierColumns, kGemvMaxM));
    ASSIGN_OR_RETURN(n.ws_fc1, Int8LinearCudaWorkspace::Create(
                                   nm, hidden_, local_ffn_, kDefaultMaxOutlierColumns, kGemvMaxM));
    ASSIGN_OR_RETURN(n.ws_fc2, Int8LinearCudaWorkspace::Create(
                                   nm, local_ffn_, hidden_, kDefaultMaxOutlierColumns, kGemvMaxM));
  }
  n.tokens = nm;
  n.rows = nr;
  scratch_ = std::move(n);
  return absl::OkStatus();
}

absl::Status CudaShardBackend::EnsureAttentionBatch(int64_t sequences, int64_t page_entries) {
  if (sequences <= attn_batch_sequences_ && page_entries <= attn_batch_pages_) {
    return absl::OkStatus();
  }
  const int64_t ns = std::max(RoundUp(sequences, kAttentionSequenceGranule), attn_batch_sequences_);
  const int64_t np = std::max(RoundUp(page_entries, kAttentionPageGranule), attn_batch_pages_);
  RETURN_IF_ERROR(gpu::internal::SynchronizeStream(stream_));
  ASSIGN_OR_RETURN(attn_batch_, kernels::AttentionBatchCuda::Create(ns, np));
  attn_batch_sequences_ = ns;
  attn_batch_pages_ = np;
  return absl::OkStatus();
}

absl::Status CudaShardBackend::Release(uint64_t seq_id) { return kv_.Release(seq_id); }

absl::StatusOr<Logits> CudaShardBackend::Step(std::span<const ShardModel::SequenceInput> batch,
                                              bool all_positions) {
  RETURN_IF_ERROR(ValidateStepBatch(
      batch, config_.vocab_size, max_context_, [this](uint64_t id) { return kv_.Length(id); },
      &sorted_ids_));
  RETURN_IF_ERROR(gpu::SetDevice(options_.cuda_device));
  const int64_t nseq = static_cast<int64_t>(batch.size());
  int64_t tokens = 0;
  int64_t pages_needed = 0;
  int64_t page_entries = 0;
  for (const ShardModel::SequenceInput& in : batch) {
    const int64_t n = static_cast<int64_t>(in.tokens.size());
    const int64_t len = PastLength(in, kv_.Length(in.seq_id)) + n;
    tokens += n;
    pages_needed += kv_.PagesNeeded(in.seq_id, len);
    page_entries += PagedKvCache::PagesFor(len);
  }
  const int64_t rows = PlanLogitRows(batch, all_positions, &logit_row_begin_, &head_rows_);

  RETURN_IF_ERROR(MemoryForStep(nseq, tokens, rows, pages_needed, page_entries));

  // Bookkeeping and KV pages; undone below if the step fails. Host memory can run out here
  // (the page tables grow): that fails the step as the forward's would, not the process.
  absl::Status st = absl::OkStatus();
  std::vector<uint64_t> created;
  try {
    past_.resize(batch.size());
    first_row_.resize(batch.size() + 1);
    created.reserve(batch.size());
    int64_t row = 0;
    for (size_t i = 0; i < batch.size(); ++i) {
      const uint64_t id = batch[i].seq_id;
      past_[i] = PastLength(batch[i], kv_.Length(id));
      first_row_[i] = row;
      row += static_cast<int64_t>(batch[i].tokens.size());
      if (!kv_.Contains(id)) created.push_back(id);
      kv_.Reserve(id, past_[i] + static_cast<int64_t>(batch[i].tokens.size()));
    }
    first_row_[batch.size()] = row;
  } catch (const std::bad_alloc&) {
    st = absl::ResourceExhaustedError(
        "Step: out of host memory for the batch's KV page tables; release finished sequences or "
        "send a smaller batch");
  }

  Logits out;
  for (const ShardModel::SequenceInput& in : batch) {
    if (!st.ok()) break;
    if (in.prefix_length == 0) continue;
    st = kv_.CopyPrefix(in.prefix_from, in.seq_id, in.prefix_length, stream_);
    if (!st.ok()) break;  // the rest is undone below with the step
  }
  if (st.ok()) st = Forward(batch, tokens, rows, &out);
  // Past the vote memory can still run out (cuBLASLt's or NCCL's own allocations): refused
  // alone, a broken group with TP (ForwardError, as model/shard_model.cc).
  st = ForwardError(std::move(st), rank_, tp_);
  if (!st.ok()) {
    // Drain what was queued before touching host state the queued copies may read.
    gpu::internal::SynchronizeStream(stream_).IgnoreError();
    for (uint64_t id : created) kv_.Release(id).IgnoreError();
    for (const ShardModel::SequenceInput& in : batch) kv_.Trim(in.seq_id);
    return st;
  }
  for (size_t i = 0; i < batch.size(); ++i) {
    kv_.SetLength(batch[i].seq_id, past_[i] + static_cast<int64_t>(batch[i].tokens.size()));
    // A drop may leave pages past the new length (Reserve only grows): they go back, so a
    // sequence holds the pages of its length as the coordinator counts it.
    if (batch[i].drop > 0) kv_.Trim(batch[i].seq_id);
  }
  return out;
}

absl::Status CudaShardBackend::MemoryForStep(int64_t nseq, int64_t tokens, int64_t rows,
                                             int64_t pages_needed, int64_t page_entries) {
  // Whether any rank may allocate: from the agreed sizes only, so the same on every rank.
  const int64_t pages_after = kv_.num_pages() - kv_.free_pages() + pages_needed;
  const int64_t m = RoundUp(std::max<int64_t>(tokens, 1), kTokenGranule);
  const int64_t r = RoundUp(std::max<int64_t>(rows, 1), kTokenGranule);
  const int64_t ns = RoundUp(nseq, kAttentionSequenceGranule);
  const int64_t np = RoundUp(page_entries, kAttentionPageGranule);
  const bool may_grow = m > agreed_tokens_ || r > agreed_rows_ || ns > agreed_sequences_ ||
                        np > agreed_page_entries_ || pages_after > kv_pages_high_water_;
  absl::Status room = [&]() -> absl::Status {
    // Memory: scratch growth (estimated from the shapes) + KV pool growth vs the limit, before
    // any allocation. The pool doubles when it must grow, unless the limit allows less.
    // (The attention tables too, as memory() counts them.)
    const int64_t table_growth =
        AttentionTableBytes(std::max<int64_t>(0, ns - attn_batch_sequences_),
                            std::max<int64_t>(0, np - attn_batch_pages_));
    // An empty scratch (before the first step, or after an allocation failed) holds nothing,
    // where ScratchBytesFor(0, 0) would be a 16-token one.
    const int64_t scratch_held =
        scratch_.tokens == 0 ? 0 : ScratchBytesFor(scratch_.tokens, scratch_.rows);
    const int64_t scratch_growth =
        table_growth + std::max<int64_t>(0, ScratchBytesFor(std::max(tokens, scratch_.tokens),
                                                            std::max(rows, scratch_.rows)) -
                                                scratch_held);
    int64_t pool_pages = kv_.num_pages();
    int64_t min_pages = kv_.num_pages();
    if (pages_needed > kv_.free_pages()) {
      min_pages = kv_.num_pages() + pages_needed - kv_.free_pages();
      pool_pages = std::max(min_pages, 2 * kv_.num_pages());
      if (options_.memory_limit_bytes > 0) {
        const MemoryStats now = memory();
        const int64_t headroom =
            options_.memory_limit_bytes - (now.total() - now.kv_cache) - scratch_growth;
        const int64_t cap = std::max<int64_t>(0, headroom) / kv_.page_bytes();
        if (min_pages > cap) {
          return absl::ResourceExhaustedError(absl::StrCat(
              "Step: the batch needs ", (min_pages - kv_.num_pages()) * kv_.page_bytes(),
              " more bytes of KV cache and ", scratch_growth, " of activations; the shard holds ",
              now.DebugString(), " of memory_limit_bytes ", options_.memory_limit_bytes,
              ". Release finished sequences or send a smaller batch"));
        }
        pool_pages = std::min(pool_pages, cap);
      }
    } else if (options_.memory_limit_bytes > 0 && scratch_growth > 0) {
      RETURN_IF_ERROR(CheckLimit(scratch_growth, "Step: the batch's activations"));
    }
    RETURN_IF_ERROR(EnsureScratch(tokens, rows));
    RETURN_IF_ERROR(EnsureAttentionBatch(nseq, page_entries));
    return kv_.GrowPool(min_pages, pool_pages, stream_);
  }();
  if (tp_ > 1 && may_grow) {
    room = AgreeOnRoom(room, rank_, [this](float mine) -> absl::StatusOr<float> {
      RETURN_IF_ERROR(vote_.CopyFromHost(std::span<const float>(&mine, 1), stream_));
      RETURN_IF_ERROR(comm_->AllReduceSum(std::span<float>(vote_.data(), 1)));
      float sum = 0.0f;
      RETURN_IF_ERROR(vote_.CopyToHost(std::span<float>(&sum, 1), stream_));
      RETURN_IF_ERROR(gpu::internal::SynchronizeStream(stream_));
      return sum;
    });
  }
  if (!room.ok()) {
    // Every rank sees this outcome where it was voted on above. A rank may have freed its
    // scratch before a failed allocation (EnsureScratch), so no earlier size counts as held
    // any more: the next step votes again whatever its size.
    agreed_tokens_ = agreed_rows_ = 0;
    return room;
  }
  agreed_tokens_ = std::max(agreed_tokens_, m);
  agreed_rows_ = std::max(agreed_rows_, r);
  agreed_sequences_ = std::max(agreed_sequences_, ns);
  agreed_page_entries_ = std::max(agreed_page_entries_, np);
  kv_pages_high_water_ = std::max(kv_pages_high_water_, pages_after);
  return absl::OkStatus();
}

absl::Status CudaShardBackend::Linear(const DeviceLinear& w, const Half* x, int64_t m, Half* y,
                                      kernels::Int8LinearCudaWorkspace* ws) {
  if (w.precision == Precision::kInt8) {
    kernels::Int8LinearCudaOptions o;
    o.threshold = options_.threshold;
    o.gemv_max_m = kGemvMaxM;
    return kernels::Int8LinearCuda(&lt_, x, m, w.int8_view(), w.bias.data(), o, ws, y, stream_);
  }
  return kernels::LinearF16Cuda(&lt_, x, m, w.w.data(), w.n, w.k, w.bias.data(), y, stream_);
}

absl::Status CudaShardBackend::AllReduce(Half* data, int64_t count) {
  if (tp_ == 1) return absl::OkStatus();
  return comm_->AllReduceSum(std::span<Half>(data, static_cast<size_t>(count)));
}

absl::Status CudaShardBackend::Forward(std::span<const ShardModel::SequenceInput> batch, int64_t m,
                                       int64_t rows, Logits* result) {
  Scratch& s = scratch_;
  const DeviceShardWeights& w = weights_;
  const int64_t h = hidden_;
  const int64_t lw = local_width_;
  const int64_t lf = local_ffn_;
  const int64_t nseq = static_cast<int64_t>(batch.size());
  const bool pre_ln = config_.do_layer_norm_before;
  const bool proj = config_.has_projections();
  const float eps = kernels::kLayerNormEps;
  cudaStream_t st = stream_;

  // Step inputs: ids [m], positions [m] (0-based; the kernel adds OPT's offset), head rows
  // [rows] (the token row of each logits row: PlanLogitRows), in one upload.
  host_ints_.resize(static_cast<size_t>(2 * m + rows));
  for (int64_t i = 0; i < nseq; ++i) {
    const int64_t n = first_row_[i + 1] - first_row_[i];
    for (int64_t j = 0; j < n; ++j) {
      host_ints_[first_row_[i] + j] = batch[i].tokens[j];
      host_ints_[m + first_row_[i] + j] = static_cast<int32_t>(past_[i] + j);
    }
  }
  std::copy(head_rows_.begin(), head_rows_.end(), host_ints_.begin() + 2 * m);
  RETURN_IF_ERROR(s.ints.CopyFromHost(host_ints_, st));
  const int32_t* ids = s.ints.data();
  const int32_t* positions = ids + m;
  const int32_t* head_rows = ids + 2 * m;

  seqs_.resize(batch.size());
  for (int64_t i = 0; i < nseq; ++i) {
    const int64_t n = first_row_[i + 1] - first_row_[i];
    seqs_[i] = {n, past_[i] + n, kv_.Pages(batch[i].seq_id)};
  }
  RETURN_IF_ERROR(attn_batch_.Set(seqs_, PagedKvCache::kPageSize, kv_.num_pages(), st));

  // Embeddings: vocab-parallel tokens (+ all-reduce), project_in, learned positions.
  Half* x = s.x.data();
  Half* embed = proj ? s.embed.data() : x;
  RETURN_IF_ERROR(kernels::EmbeddingLookupCuda(ids, m, w.embed.w.data(), w.vocab_rows.begin,
                                               w.vocab_rows.size(), proj_, embed, st));
  RETURN_IF_ERROR(AllReduce(embed, m * proj_));
  if (proj) RETURN_IF_ERROR(Linear(w.project_in, embed, m, x, nullptr));
  RETURN_IF_ERROR(kernels::AddPositionEmbeddingCuda(positions, m, w.positions.w.data(),
                                                    w.positions.n, h, x, st));

  const kernels::AttentionShape shape{
      local_heads_, head_dim_, 3 * lw,
      lw,           lw,        static_cast<float>(1.0 / std::sqrt(static_cast<double>(head_dim_)))};
  Half* normed = s.normed.data();
  Half* qkv = s.qkv.data();
  Half* attn = s.attn.data();
  Half* partial = s.partial.data();
  Half* ffn = s.ffn.data();
  const size_t num_layers = w.layers.size();
  if (pre_ln && num_layers > 0) {
    const DeviceNorm& n0 = w.layers[0].attn_norm;
    RETURN_IF_ERROR(
        kernels::LayerNormCuda(x, m, h, n0.gain.data(), n0.shift.data(), eps, normed, st));
  }
  for (size_t li = 0; li < num_layers; ++li) {
    const DeviceLayer& l = w.layers[li];
    // Self-attention. Pre-LN: `normed` holds LN_attn(x) (from the previous layer's fused add).
    RETURN_IF_ERROR(Linear(l.qkv, pre_ln ? normed : x, m, qkv, &s.ws_qkv));
    const kernels::PagedKvCudaView kv = kv_.Layer(static_cast<int64_t>(li));
    RETURN_IF_ERROR(
        kernels::AppendKvCuda(qkv + lw, qkv + 2 * lw, 3 * lw, shape, attn_batch_, kv, st));
    RETURN_IF_ERROR(kernels::CausalAttentionCuda(qkv, shape, attn_batch_, kv, attn, st));
    RETURN_IF_ERROR(Linear(l.out_proj, attn, m, partial, &s.ws_out));
    RETURN_IF_ERROR(AllReduce(partial, m * h));
    // x += partial + out_bias; then pre-LN: normed = LN_ffn(x); post-LN: x = LN_attn(x).
    const DeviceNorm& n1 = pre_ln ? l.ffn_norm : l.attn_norm;
    RETURN_IF_ERROR(kernels::AddResidualLayerNormCuda(x, partial, l.out_bias.data(), m, h,
                                                      n1.gain.data(), n1.shift.data(), eps,
                                                      pre_ln ? normed : x, st));

    // Feed-forward.
    RETURN_IF_ERROR(Linear(l.fc1, pre_ln ? normed : x, m, ffn, &s.ws_fc1));
    if (config_.activation == Activation::kRelu) {
      RETURN_IF_ERROR(kernels::BiasReluCuda(ffn, m, lf, nullptr, st));
    } else {
      RETURN_IF_ERROR(kernels::BiasGeluCuda(ffn, m, lf, nullptr, st));
    }
    RETURN_IF_ERROR(Linear(l.fc2, ffn, m, partial, &s.ws_fc2));
    RETURN_IF_ERROR(AllReduce(partial, m * h));
    // x += partial + fc2_bias; then pre-LN: normed = LN_attn of the next layer (nothing after
    // the last: the final norm runs on the head rows only); post-LN: x = LN_ffn(x).
    if (pre_ln) {
      const bool next = li + 1 < num_layers;
      const DeviceNorm* n2 = next ? &w.layers[li + 1].attn_norm : nullptr;
      RETURN_IF_ERROR(kernels::AddResidualLayerNormCuda(
          x, partial, l.fc2_bias.data(), m, h, next ? n2->gain.data() : nullptr,
          next ? n2->shift.data() : nullptr, eps, next ? normed : nullptr, st));
    } else {
      RETURN_IF_ERROR(kernels::AddResidualLayerNormCuda(x, partial, l.fc2_bias.data(), m, h,
                                                        l.ffn_norm.gain.data(),
                                                        l.ffn_norm.shift.data(), eps, x, st));
    }
  }

  // Head rows: a row gather, unless every token row gets logits (rows == m: then the head
  // rows are 0..m-1 in order).
  const Half* head = x;
  if (rows != m) {
    RETURN_IF_ERROR(
        kernels::EmbeddingLookupCuda(head_rows, rows, x, 0, m, h, s.head_in.data(), st));
    head = s.head_in.data();
  }
  if (w.has_final_norm) {
    RETURN_IF_ERROR(kernels::LayerNormCuda(head, rows, h, w.final_norm.gain.data(),
                                           w.final_norm.shift.data(), eps, s.head_in.data(), st));
    head = s.head_in.data();
  }
  if (proj) {
    RETURN_IF_ERROR(Linear(w.project_out, head, rows, s.head_proj.data(), nullptr));
    head = s.head_proj.data();
  }

  // Tied LM head over this rank's vocab slice: dense [rows, owned] at this rank's block of the
  // gather buffer (blocks are rows * LogitBlockColumns apart; the pad is never read), then
  // all-gathered and copied to the host once.
  const int64_t vocab = config_.vocab_size;
  const int64_t rpr = w.rows_per_rank;
  const int64_t block = rows * LogitBlockColumns(vocab, tp_);
  Half* local = s.logits.data() + (tp_ > 1 ? rank_ * block : 0);
  if (!w.embed.empty()) RETURN_IF_ERROR(Linear(w.embed, head, rows, local, nullptr));
  if (tp_ > 1) {
    RETURN_IF_ERROR(
        comm_->AllGather(std::span<const Half>(local, static_cast<size_t>(block)),
                         std::span<Half>(s.logits.data(), static_cast<size_t>(tp_ * block))));
  }
  host_logits_.resize(static_cast<size_t>(tp_ * block));
  RETURN_IF_ERROR(s.logits.CopyToHost(host_logits_, st));
  RETURN_IF_ERROR(gpu::internal::SynchronizeStream(st));

  result->rows = rows;
  result->vocab = vocab;
  result->values.resize(static_cast<size_t>(rows * vocab));
  result->row_begin = logit_row_begin_;
  for (int p = 0; p < tp_; ++p) {
    const int64_t col0 = p * rpr;
    const int64_t ncols = std::min(rpr, vocab - col0);  // = rank p's owned rows
    if (ncols <= 0) break;
    const Half* src = host_logits_.data() + p * block;
    for (int64_t r = 0; r < rows; ++r) {
      float* dst = result->values.data() + r * vocab + col0;
      for (int64_t j = 0; j < ncols; ++j) dst[j] = HalfToFloat(src[r * ncols + j]);
    }
  }
  return absl::OkStatus();
}

}  // namespace
}  // namespace cuda

absl::StatusOr<std::unique_ptr<ShardBackend>> MakeCudaShardBackend(
    const OptConfig& config, const CheckpointSource& source, const ShardPlan& plan,
    comm::Communicator* comm, const ShardOptions& options, int64_t max_context,
    const LoadProgressFn& progress) {
  return cuda::CudaShardBackend::Load(config, source, plan, comm, options, max_context, progress);
}

absl::StatusOr<int64_t> CudaFreeMemoryBytes(int cuda_device) {
  return gpu::FreeMemoryBytes(cuda_device < 0 ? 0 : cuda_device);
}

absl::StatusOr<std::string> CudaDeviceUuid(int cuda_device) {
  return gpu::DeviceUuid(cuda_device < 0 ? 0 : cuda_device);
}

absl::StatusOr<int> CudaDeviceCount() { return gpu::DeviceCount(); }

}  // namespace llmint8::model
