// A fingerprint of a checkpoint: its config's architecture (not _name_or_path or
// torch_dtype) and each tensor's name, dtype, shape and a sample of its values (the first and the
// last row's first and last 16), hashed (64-bit FNV-1a). Equal on two hosts that hold the same
// files (or the same synthetic spec); different, but for a 2^-64 chance, where a config field, a
// tensor's shape or dtype, or a sampled value differs: two fine-tunes of one architecture differ in
// every tensor's values. The workers of a group report theirs at LoadShard, and the coordinator
// refuses a group whose workers loaded different checkpoints under the same --model (another
// version on one host's disk).
//
// Cost: two small reads per tensor (a few thousand for OPT-175B).
#ifndef LLMINT8_MODEL_CHECKPOINT_FINGERPRINT_H_
#define LLMINT8_MODEL_CHECKPOINT_FINGERPRINT_H_

#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "model/checkpoint.h"
#include "model/config.h"

namespace llmint8::model {

// "<version>:" and 16 lowercase hex digits; fingerprints of other versions (a worker of
// another release, which hashed otherwise) are not compared. Errors: a tensor the source
// cannot read; `cancelled` (checked every 64 tensors; may be empty) saying true: CANCELLED.
inline constexpr char kCheckpointFingerprintVersion[] = "1";
absl::StatusOr<std::string> CheckpointFingerprint(const OptConfig& config,
                                                  const CheckpointSource& source,
                                                  const std::function<bool()>& cancelled = {});

}  // namespace llmint8::model

#endif  // LLMINT8_MODEL_CHECKPOINT_FINGERPRINT_H_
