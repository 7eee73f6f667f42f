// Synthetic OPT weights: a deterministic, seeded CheckpointSource of any config's shapes.
//
// Element (r, c) of tensor `name` depends only on (seed, canonical name, r, c) through a
// counter-based hash, so any slice read at any TP degree equals the same slice of the full
// tensor, and a read materializes nothing bigger than the requested slice (O(1) memory).
//
// Values (computed in fp32, then rounded to `dtype` as if stored so: F16 by default, so every
// value is exactly representable in fp16 and fp32/fp16 paths see the same weights):
//   - linear weights and embeddings: approximately N(0, init_std^2) (OPT init: std 0.02), an
//     Irwin-Hall(4) sum, so |value| <= 3.47 * init_std;
//   - biases: N(0, bias_std^2) (default 0: OPT initializes biases to zero);
//   - LayerNorm gains 1 (+ small noise), shifts 0 (+ small noise).
// Outlier features (the LLM.int8() paper's emergent dims): for each hidden dim in
// `outlier_dims`, every LayerNorm gain at that dim is `outlier_gain` (and the token embedding
// column at that dim is scaled by `outlier_embedding_scale`), so the normalized activations
// entering q/k/v and fc1 reach magnitudes >= 6 there. Dims >= hidden_size are rejected.
#ifndef LLMINT8_MODEL_SYNTHETIC_H_
#define LLMINT8_MODEL_SYNTHETIC_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "model/checkpoint.h"
#include "model/config.h"

namespace llmint8::model {

struct SyntheticOptions {
  uint64_t seed = 1;
  float init_std = 0.02f;
  float bias_std = 0.0f;
  float layer_norm_noise = 0.0f;  // std of the noise around gain 1 / shift 0
  std::vector<int64_t> outlier_dims;
  float outlier_gain = 40.0f;            // LayerNorm gain at outlier dims
  float outlier_embedding_scale = 1.0f;  // multiplier of embed_tokens columns at outlier dims
  TensorDType dtype = TensorDType::kF16;  // F16, BF16 or F32: what Info() reports
};

// Holds only `config` and `options`. Has()/Info() answer for exactly the tensors of
// ExpectedTensors(config) (lm_head.weight is absent: tied). InvalidArgument for an outlier dim
// outside [0, hidden_size) or dtype I8.
absl::StatusOr<std::unique_ptr<CheckpointSource>> MakeSyntheticSource(
    const OptConfig& config, const SyntheticOptions& options = {});

}  // namespace llmint8::model

#endif  // LLMINT8_MODEL_SYNTHETIC_H_
