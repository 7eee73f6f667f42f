#include "model/int8_checkpoint.h"

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/file.h"
#include "common/half.h"
#include "common/status_macros.h"
#include "kernels/quantize_weight.h"
#include "model/safetensors.h"
#include "model/tensor_names.h"
#include "nlohmann/json.hpp"

namespace llmint8::model {
namespace {

// fp32 rows read at a time, to bound the writer's scratch memory (64 MB).
constexpr int64_t kChunkElements = int64_t{16} << 20;

int64_t ChunkRows(const TensorInfo& info) {
  return std::max<int64_t>(1, kChunkElements / std::max<int64_t>(1, info.cols()));
}

// Copies a tensor as F16, reading `ChunkRows` rows at a time.
absl::Status AddAsF16(const CheckpointSource& source, const std::string& name,
                      SafetensorsWriter* w) {
  ASSIGN_OR_RETURN(TensorInfo info, source.Info(name));
  std::vector<uint8_t> bytes(static_cast<size_t>(info.num_elements()) * 2);
  const int64_t step = ChunkRows(info);
  std::vector<Half> chunk;
  for (int64_t r = 0; r < info.rows(); r += step) {
    const Range rows{r, std::min(info.rows(), r + step)};
    chunk.resize(static_cast<size_t>(rows.size() * info.cols()));
    RETURN_IF_ERROR(source.ReadSliceHalf(name, rows, {0, info.cols()}, chunk));
    std::memcpy(bytes.data() + r * info.cols() * 2, chunk.data(), chunk.size() * 2);
  }
  return w->Add(name, TensorDType::kF16, info.shape, bytes);
}

// Quantizes a linear weight [n, k] per row (kernels::QuantizeWeight) in chunks of rows.
absl::Status AddQuantized(const CheckpointSource& source, const std::string& name,
                          SafetensorsWriter* w) {
  ASSIGN_OR_RETURN(TensorInfo info, source.Info(name));
  const int64_t n = info.rows(), k = info.cols();
  std::vector<int8_t> q(static_cast<size_t>(n * k));
  std::vector<float> absmax(static_cast<size_t>(n));
  if (info.quantized()) {  // already int8: copy as is
    RETURN_IF_ERROR(source.ReadInt8Slice(name, {0, n}, {0, k}, q, absmax));
  } else {
    const int64_t step = ChunkRows(info);
    std::vector<float> chunk;
    for (int64_t r = 0; r < n; r += step) {
      const int64_t rows = std::min(n, r + step) - r;
      chunk.resize(static_cast<size_t>(rows * k));
      RETURN_IF_ERROR(source.ReadSlice(name, {r, r + rows}, {0, k}, chunk));
      absl::Status s = kernels::QuantizeWeight(
          chunk, rows, k, std::span<int8_t>(q).subspan(static_cast<size_t>(r * k), chunk.size()),
          std::span<float>(absmax).subspan(static_cast<size_t>(r), static_cast<size_t>(rows)));
      if (!s.ok()) {
        return absl::Status(s.code(), absl::StrCat(source.Describe(), ": tensor \"", name,
                                                   "\" (rows from ", r, "): ", s.message()));
      }
    }
  }
  RETURN_IF_ERROR(w->AddI8(name, info.shape, q));
  return w->AddF32(name + kAbsmaxSuffix, {n}, absmax);
}

absl::Status AddTensor(const CheckpointSource& source, const ExpectedTensor& t,
                       SafetensorsWriter* w) {
  return t.is_linear_weight ? AddQuantized(source, t.name, w) : AddAsF16(source, t.name, w);
}

absl::Status WriteText(const std::string& path, const std::string& text) {
  errno = 0;
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return WriteFailed(path, errno);
  out << text;
  out.close();
  if (!out) return WriteFailed(path, errno);
  return absl::OkStatus();
}

}  // namespace

absl::Status WriteInt8Checkpoint(const CheckpointSource& source, const OptConfig& config,
                                 const std::string& out_dir) {
  RETURN_IF_ERROR(ValidateCheckpoint(source, config));
  // The copy holds no lm_head.weight (tied): one that differs would be dropped silently.
  RETURN_IF_ERROR(CheckTiedLmHead(source, {0, config.vocab_size}, config.word_embed_proj_dim));
  std::error_code ec;
  std::filesystem::create_directories(out_dir, ec);
  if (ec) return absl::ErrnoToStatus(ec.value(), absl::StrCat("creating ", out_dir));

  const std::vector<ExpectedTensor> all = ExpectedTensors(config);
  const int64_t layers = config.num_hidden_layers;
  nlohmann::json weight_map = nlohmann::json::object();
  int64_t total = 0;
  for (int64_t i = 0; i < layers; ++i) {
    SafetensorsWriter w;
    w.SetMetadata("format", kInt8FormatName);
    w.SetMetadata("format_version", "1");
    const std::string prefix = absl::StrCat("model.decoder.layers.", i, ".");
    for (const ExpectedTensor& t : all) {
      const bool is_layer = t.name.find(".layers.") != std::string::npos;
      const bool here = is_layer ? t.name.compare(0, prefix.size(), prefix) == 0 : i == 0;
      if (!here) continue;
      RETURN_IF_ERROR(AddTensor(source, t, &w));
      weight_map[t.name] = "";
      if (t.is_linear_weight) weight_map[t.name + kAbsmaxSuffix] = "";
    }
    const std::string file = absl::StrFormat("model-int8-%05d-of-%05d.safetensors", i + 1, layers);
    for (auto& [name, f] : weight_map.items()) {
      if (f.get<std::string>().empty()) f = file;
    }
    total += w.data_bytes();
    RETURN_IF_ERROR(w.Finish(out_dir + "/" + file));
  }
  nlohmann::json index = {
      {"metadata", {{"total_size", total}, {"format", kInt8FormatName}}},
      {"weight_map", weight_map},
  };
  RETURN_IF_ERROR(WriteText(out_dir + "/model.safetensors.index.json", index.dump(2)));
  return WriteText(out_dir + "/config.json", OptConfigToJson(config));
}

}  // namespace llmint8::model
