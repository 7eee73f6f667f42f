// CheckpointSource: read-only access to the named weight tensors of one OPT model, one slice at
// a time, so a tensor-parallel shard never materializes more than its own part.
//
// Names are Hugging Face OPT names (see tensor_names.h), canonically with the "model." prefix;
// sources also accept the unprefixed form ("decoder.layers.0...") that some checkpoints use.
//
// Shapes: every tensor is viewed as a 2-D row-major matrix [rows, cols].
//   - a 2-D tensor [n, k] (an nn.Linear weight is [out, in]) is itself;
//   - a 1-D tensor [n] (bias, LayerNorm gain/shift) is viewed as [n, 1]: a row range selects
//     elements, so the bias slice of a column-parallel layer uses the same row range as its
//     weight.
//
// Implementations: safetensors.h (Hugging Face files, mmap; also the pre-quantized int8
// checkpoints of int8_checkpoint.h: I8 weights + F32 row scales), synthetic.h (seeded weights of
// any shape, computed on demand).
//
// Thread-safety: all methods are const and safe to call concurrently from several threads.
// Lifetime: nothing returned points into the source; output buffers belong to the caller.
#ifndef LLMINT8_MODEL_CHECKPOINT_H_
#define LLMINT8_MODEL_CHECKPOINT_H_

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/half.h"
#include "model/config.h"

namespace llmint8::model {

// Element type of a stored tensor (safetensors dtype strings "F16", "BF16", "F32", "I8").
enum class TensorDType { kF16, kBF16, kF32, kI8 };

std::string_view TensorDTypeName(TensorDType dtype);  // "F16", "BF16", "F32", "I8"
int64_t TensorDTypeSize(TensorDType dtype);           // bytes per element: 2, 2, 4, 1

// Half-open index range [begin, end).
struct Range {
  int64_t begin = 0;
  int64_t end = 0;
  int64_t size() const { return end - begin; }
  bool empty() const { return end <= begin; }
  friend bool operator==(const Range&, const Range&) = default;
};

struct TensorInfo {
  std::vector<int64_t> shape;  // as stored: 1-D or 2-D
  TensorDType dtype = TensorDType::kF16;
  // The [rows, cols] view described above ({n, 1} for a 1-D tensor).
  int64_t rows() const { return shape.empty() ? 1 : shape[0]; }
  int64_t cols() const { return shape.size() < 2 ? 1 : shape[1]; }
  int64_t num_elements() const { return rows() * cols(); }
  // True for an int8 weight with per-row fp32 absmax scales (read it with ReadInt8Slice).
  bool quantized() const { return dtype == TensorDType::kI8; }
};

class CheckpointSource {
 public:
  virtual ~CheckpointSource() = default;

  // For logs and error messages: a path, or e.g. "synthetic(opt-125m, seed 1)".
  virtual std::string Describe() const = 0;

  virtual bool Has(std::string_view name) const = 0;

  // NotFound naming the tensor and the source when absent.
  virtual absl::StatusOr<TensorInfo> Info(std::string_view name) const = 0;

  // Names of all tensors, canonical ("model."-prefixed) form, sorted.
  virtual std::vector<std::string> TensorNames() const = 0;

  // out[(r - rows.begin) * cols.size() + (c - cols.begin)] = T[r, c] converted to fp32, for
  // r in rows, c in cols. Requires 0 <= begin <= end <= extent for both ranges and
  // out.size() == rows.size() * cols.size(); else InvalidArgument naming the tensor.
  // An int8 (quantized) tensor is dequantized: absmax[r] * q[r, c] / 127.
  virtual absl::Status ReadSlice(std::string_view name, Range rows, Range cols,
                                 std::span<float> out) const = 0;

  // Same slice as fp16 (exact for F16 storage; BF16/F32 rounded to nearest even).
  // Default: ReadSlice then RoundToHalfChecked's rule: a finite value beyond fp16's range is
  // InvalidArgument, not inf.
  virtual absl::Status ReadSliceHalf(std::string_view name, Range rows, Range cols,
                                     std::span<Half> out) const;

  // For a quantized tensor (Info().quantized()): the int8 values of the slice (same layout as
  // ReadSlice) and, per row r in `rows`, the absmax of the FULL row r (not of the column slice),
  // so a row-parallel shard (a column range) dequantizes exactly like TP=1.
  // q.size() == rows.size() * cols.size(), row_absmax.size() == rows.size().
  // FailedPrecondition naming the tensor when the tensor is not quantized.
  virtual absl::Status ReadInt8Slice(std::string_view name, Range rows, Range cols,
                                     std::span<int8_t> q, std::span<float> row_absmax) const;

  // Convenience: the whole tensor as fp32 (only for small tensors: norms, biases, positions).
  absl::StatusOr<std::vector<float>> ReadAll(std::string_view name) const;
};

// Checks a slice request against `info` (the tensor named `name` of `source_label`):
// 0 <= begin <= end <= extent for rows and cols, and out_elements == rows.size()*cols.size().
// InvalidArgument naming the tensor and the source otherwise. For implementations.
absl::Status ValidateSliceRequest(std::string_view source_label, std::string_view name,
                                  const TensorInfo& info, Range rows, Range cols,
                                  size_t out_elements);

// Rounds `values` (of tensor `what`, for the message) to fp16 in place. A finite value beyond
// fp16's range (|v| >= 65520, which rounds to inf) is InvalidArgument naming the tensor and
// element: such a checkpoint needs --dtype=fp32, and an inf weight would only show later as
// a non-finite logit.
absl::Status RoundToHalfChecked(std::string_view what, std::span<float> values);

// Checks that `source` holds every tensor the config needs, with the shape the config implies
// (tensor_names.h: ExpectedTensors). Missing tensor -> NotFound naming it; wrong shape ->
// InvalidArgument naming the tensor, the stored and the expected shape. lm_head.weight may be
// absent (tied to embed_tokens).
absl::Status ValidateCheckpoint(const CheckpointSource& source, const OptConfig& config);

// The LM head is the token embedding (tie_word_embeddings; a config without it is refused).
// A checkpoint may still carry lm_head.weight: a copy is fine, but one that differs (a
// fine-tune that untied them) would be computed with the embedding instead, its logits
// silently not the checkpoint's (transformers uses lm_head.weight then): InvalidArgument.
// Compares `rows` of both ([vocab, cols]; a rank's vocabulary slice, or all of it), a block
// at a time, bit for bit as fp32. OK when lm_head.weight is absent.
absl::Status CheckTiedLmHead(const CheckpointSource& source, Range rows, int64_t cols);

// A model directory opened for serving: the parsed config.json and its weights.
struct OpenedModel {
  OptConfig config;
  std::unique_ptr<CheckpointSource> source;
};

// Opens a Hugging Face model directory: config.json plus model.safetensors or
// model.safetensors.index.json (sharded), or an int8 checkpoint written by
// WriteInt8Checkpoint (int8_checkpoint.h; recognized by its I8 tensors, each with an F32
// "<name>_absmax" of its rows; the metadata is informative). Every safetensors header
// is validated at open (sizes, offsets, dtypes, shapes) and the tensors are checked against the
// config with ValidateCheckpoint. Errors name the file and the tensor.
absl::StatusOr<OpenedModel> OpenModelDir(const std::string& dir);

}  // namespace llmint8::model

#endif  // LLMINT8_MODEL_CHECKPOINT_H_
