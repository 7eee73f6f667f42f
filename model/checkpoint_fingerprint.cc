#include "model/checkpoint_fingerprint.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <span>
#include <string_view>
#include <vector>

#include "absl/strings/str_format.h"
#include "common/fnv1a.h"
#include "common/status_macros.h"

namespace llmint8::model {
namespace {

void AddNumber(uint64_t v, Fnv1a& hash) { hash.Add(&v, sizeof(v)); }
void AddText(std::string_view s, Fnv1a& hash) {
  hash.Add(s.data(), s.size());
  AddNumber(s.size(), hash);  // "ab" + "c" differs from "a" + "bc"
}

constexpr int64_t kSampleColumns = 16;

// The values of `rows` x `cols` of tensor `name`, as their float bits.
absl::Status AddSample(const CheckpointSource& source, const std::string& name, Range rows,
                       Range cols, Fnv1a& hash) {
  std::vector<float> values(static_cast<size_t>(rows.size() * cols.size()));
  RETURN_IF_ERROR(source.ReadSlice(name, rows, cols, values));
  hash.Add(values.data(), values.size() * sizeof(float));
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::string> CheckpointFingerprint(const OptConfig& config,
                                                  const CheckpointSource& source,
                                                  const std::function<bool()>& cancelled) {
  Fnv1a hash;
  // The architecture, not how the files were made: _name_or_path is the path they were saved
  // from, and torch_dtype what they were saved as (the tensors' own dtypes are hashed below).
  OptConfig architecture = config;
  architecture.name.clear();
  architecture.torch_dtype = OptConfig().torch_dtype;
  AddText(OptConfigToJson(architecture), hash);
  std::vector<std::string> names = source.TensorNames();
  std::sort(names.begin(), names.end());
  for (size_t t = 0; t < names.size(); ++t) {
    if (t % 64 == 0 && cancelled && cancelled()) {
      return absl::CancelledError("the checkpoint's fingerprint was cancelled");
    }
    const std::string& name = names[t];
    ASSIGN_OR_RETURN(const TensorInfo info, source.Info(name));
    AddText(name, hash);
    AddText(TensorDTypeName(info.dtype), hash);
    for (int64_t d : info.shape) AddNumber(static_cast<uint64_t>(d), hash);
    const int64_t rows = info.rows(), cols = info.cols();
    if (rows <= 0 || cols <= 0) continue;
    const int64_t width = std::min(cols, kSampleColumns);
    RETURN_IF_ERROR(AddSample(source, name, {0, 1}, {0, width}, hash));
    RETURN_IF_ERROR(AddSample(source, name, {rows - 1, rows}, {cols - width, cols}, hash));
  }
  return absl::StrFormat("%s:%016x", kCheckpointFingerprintVersion, hash.value());
}

}  // namespace llmint8::model
