#include "model/synthetic.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/fnv1a.h"
#include "common/half.h"
#include "common/status_macros.h"
#include "model/tensor_names.h"

namespace llmint8::model {
namespace {

uint64_t SplitMix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

uint64_t HashName(uint64_t seed, std::string_view name) {
  // FNV-1a, seeded.
  return SplitMix(
      Fnv1a(Fnv1a::kOffsetBasis ^ SplitMix(seed)).Add(name.data(), name.size()).value());
}

// Approximately standard normal: Irwin-Hall sum of four 16-bit uniforms, rescaled to unit
// variance. Depends only on (name_hash, r, c).
float NormalAt(uint64_t name_hash, int64_t r, int64_t c) {
  uint64_t x = SplitMix(name_hash ^ SplitMix(static_cast<uint64_t>(r)));
  x = SplitMix(x + static_cast<uint64_t>(c) * 0xd1b54a32d192ed03ull);
  float sum = 0.0f;
  for (int i = 0; i < 4; ++i)
    sum += (static_cast<float>((x >> (16 * i)) & 0xffffu) + 0.5f) / 65536.0f;
  return (sum - 2.0f) * 1.7320508f;  // var of the sum is 4/12
}

float RoundTo(TensorDType dtype, float v) {
  switch (dtype) {
    case TensorDType::kF16:
      return HalfToFloat(FloatToHalf(v));
    case TensorDType::kBF16: {
      uint32_t x;
      std::memcpy(&x, &v, 4);
      x += 0x7fffu + ((x >> 16) & 1u);
      x &= 0xffff0000u;
      std::memcpy(&v, &x, 4);
      return v;
    }
    default:
      return v;
  }
}

bool EndsWith(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

enum class Kind { kWeight, kEmbedding, kBias, kNormGain, kNormShift };

Kind KindOf(std::string_view n) {
  const bool norm = n.find("layer_norm.") != std::string_view::npos;
  if (norm) return EndsWith(n, ".weight") ? Kind::kNormGain : Kind::kNormShift;
  if (EndsWith(n, ".bias")) return Kind::kBias;
  if (n == kEmbedTokens) return Kind::kEmbedding;
  return Kind::kWeight;
}

class SyntheticSource final : public CheckpointSource {
 public:
  SyntheticSource(const OptConfig& config, const SyntheticOptions& options)
      : config_(config),
        options_(options),
        outliers_(options.outlier_dims.begin(), options.outlier_dims.end()) {
    for (const ExpectedTensor& t : ExpectedTensors(config_)) names_.push_back(t.name);
    std::sort(names_.begin(), names_.end());
  }

  std::string Describe() const override {
    return absl::StrCat("synthetic(", config_.name, ", seed ", options_.seed, ")");
  }

  bool Has(std::string_view name) const override {
    return std::binary_search(names_.begin(), names_.end(), CanonicalTensorName(name));
  }

  absl::StatusOr<TensorInfo> Info(std::string_view name) const override {
    if (!Has(name)) {
      return absl::NotFoundError(
          absl::StrCat(Describe(), ": tensor \"", std::string(name), "\" not found"));
    }
    TensorInfo info;
    info.shape = ExpectedShape(config_, name);
    info.dtype = options_.dtype;
    return info;
  }

  std::vector<std::string> TensorNames() const override { return names_; }

  absl::Status ReadSlice(std::string_view name, Range rows, Range cols,
                         std::span<float> out) const override {
    ASSIGN_OR_RETURN(TensorInfo info, Info(name));
    RETURN_IF_ERROR(ValidateSliceRequest(Describe(), name, info, rows, cols, out.size()));
    const std::string n = CanonicalTensorName(name);
    const uint64_t h = HashName(options_.seed, n);
    const Kind kind = KindOf(n);
    // Every element is a function of (name, r, c) alone: threads take blocks of rows (a
    // 66B-shaped model is 65e9 values, ~15 min on one core).
    const int64_t width = cols.size();
#pragma omp parallel for schedule(static) if (rows.size() * width >= (int64_t{1} << 20))
    for (int64_t r = rows.begin; r < rows.end; ++r) {
      float* o = out.data() + (r - rows.begin) * width;
      for (int64_t c = cols.begin; c < cols.end; ++c)
        *o++ = RoundTo(options_.dtype, Value(kind, h, r, c));
    }
    return absl::OkStatus();
  }

 private:
  float Value(Kind kind, uint64_t h, int64_t r, int64_t c) const {
    switch (kind) {
      case Kind::kNormGain:  // [hidden] viewed as [hidden, 1]: the hidden dim is r
        if (outliers_.count(r)) return options_.outlier_gain;
        return 1.0f + options_.layer_norm_noise * NormalAt(h, r, c);
      case Kind::kNormShift:
        return options_.layer_norm_noise * NormalAt(h, r, c);
      case Kind::kBias:
        return options_.bias_std == 0.0f ? 0.0f : options_.bias_std * NormalAt(h, r, c);
      case Kind::kEmbedding: {
        const float v = options_.init_std * NormalAt(h, r, c);
        return outliers_.count(c) ? v * options_.outlier_embedding_scale : v;
      }
      case Kind::kWeight:
        return options_.init_std * NormalAt(h, r, c);
    }
    return 0.0f;
  }

  OptConfig config_;
  SyntheticOptions options_;
  std::unordered_set<int64_t> outliers_;
  std::vector<std::string> names_;  // sorted canonical names
};

}  // namespace

absl::StatusOr<std::unique_ptr<CheckpointSource>> MakeSyntheticSource(
    const OptConfig& config, const SyntheticOptions& options) {
  if (config.hidden_size <= 0 || config.num_hidden_layers <= 0 || config.vocab_size <= 0) {
    return absl::InvalidArgumentError("synthetic source: config has no valid shape");
  }
  for (int64_t d : options.outlier_dims) {
    if (d < 0 || d >= config.hidden_size) {
      return absl::InvalidArgumentError(
          absl::StrCat("synthetic source: outlier dim ", d,
                       " is outside [0, hidden_size = ", config.hidden_size, ")"));
    }
  }
  if (options.dtype == TensorDType::kI8) {
    return absl::InvalidArgumentError(
        "synthetic source: dtype must be F16, BF16 or F32 (write an int8 checkpoint from it "
        "with WriteInt8Checkpoint)");
  }
  return std::unique_ptr<CheckpointSource>(new SyntheticSource(config, options));
}

}  // namespace llmint8::model
