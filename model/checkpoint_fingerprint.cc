#include "model/checkpoint_fingerprint.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <span>
#include <string_view>
#include <vector>

#include "absl/strings/str_format.h"
#include "common/status_macros.h"

namespace llmint8::model {
namespace {

// 64-bit FNV-1a: stable across processes and hosts (absl::Hash is seeded per process).
class Fnv1a {
 public:
  void Add(const void* data, size_t n) {
    const auto* p = static_cast<const uint8_t*>(data);
    for (size_t i = 0; i < n; ++i) h_ = (h_ ^ p[i]) * 0x100000001b3ULL;
  }
  void Add(std::string_view s) {
    Add(s.data(), s.size());
    Add(uint64_t{s.size()});  // "ab" + "c" differs from "a" + "bc"
  }
  void Add(uint64_t v) { Add(&v, sizeof(v)); }
  uint64_t value() const { return h_; }

 private:
  uint64_t h_ = 0xcbf29ce484222325ULL;
};

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
  hash.Add(OptConfigToJson(architecture));
  std::vector<std::string> names = source.TensorNames();
  std::sort(names.begin(), names.end());
  for (size_t t = 0; t < names.size(); ++t) {
    if (t % 64 == 0 && cancelled && cancelled()) {
      return absl::CancelledError("the checkpoint's fingerprint was cancelled");
    }
    const std::string& name = names[t];
    ASSIGN_OR_RETURN(const TensorInfo info, source.Info(name));
    hash.Add(name);
    hash.Add(TensorDTypeName(info.dtype));
    for (int64_t d : info.shape) hash.Add(static_cast<uint64_t>(d));
    const int64_t rows = info.rows(), cols = info.cols();
    if (rows <= 0 || cols <= 0) continue;
    const int64_t width = std::min(cols, kSampleColumns);
    RETURN_IF_ERROR(AddSample(source, name, {0, 1}, {0, width}, hash));
    RETURN_IF_ERROR(AddSample(source, name, {rows - 1, rows}, {cols - width, cols}, hash));
  }
  return absl::StrFormat("%s:%016x", kCheckpointFingerprintVersion, hash.value());
}

}  // namespace llmint8::model
