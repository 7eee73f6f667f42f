// Pre-quantized int8 checkpoints (written by `llmint8 quantize`).
//
// A directory with config.json and safetensors files in the Hugging Face layout where every
// decoder-layer linear weight "X.weight" [n, k] is stored as
//   "X.weight"         I8  [n, k]   q = round(127 * W / absmax) (kernels/quantize_weight.h)
//   "X.weight_absmax"  F32 [n]      absmax of each FULL row of W
// and every other tensor (embeddings, positions, norms, biases, project_in/out) stays F16.
// The metadata holds {"format": "llmint8-int8", "format_version": "1"}.
// Files: one per decoder layer, "model-int8-00001-of-000NN.safetensors" (globals in the first),
// plus model.safetensors.index.json, so the writer holds one layer at a time.
//
// Opened through OpenModelDir / OpenSafetensorsDir, the source reports Info(X.weight).dtype ==
// kI8; ReadInt8Slice gives int8 values plus the full-row absmax, so any TP degree (a column
// range for row-parallel layers) dequantizes exactly as TP=1; ReadSlice dequantizes to fp32.
#ifndef LLMINT8_MODEL_INT8_CHECKPOINT_H_
#define LLMINT8_MODEL_INT8_CHECKPOINT_H_

#include <string>

#include "absl/status/status.h"
#include "model/checkpoint.h"
#include "model/config.h"

namespace llmint8::model {

inline constexpr char kInt8FormatName[] = "llmint8-int8";
inline constexpr char kAbsmaxSuffix[] = "_absmax";

// Quantizes `source` (validated against `config`) into `out_dir` (created if missing; existing
// files of the same names are overwritten) and writes config.json. Reads one layer at a time.
absl::Status WriteInt8Checkpoint(const CheckpointSource& source, const OptConfig& config,
                                 const std::string& out_dir);

}  // namespace llmint8::model

#endif  // LLMINT8_MODEL_INT8_CHECKPOINT_H_
