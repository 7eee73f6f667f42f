// safetensors files (https://github.com/huggingface/safetensors): parser, mmap reader, writer.
//
// Layout: 8-byte little-endian header length N, N bytes of JSON header, then the data buffer.
// The header maps tensor names to {"dtype", "shape", "data_offsets": [begin, end]} (offsets
// relative to the data buffer) plus an optional "__metadata__" string->string map.
//
// The header is UNTRUSTED. ParseSafetensorsHeader checks, before any tensor is read:
//   N <= file size - 8 and N <= 100 MB; at most 2^20 JSON values (parsed JSON takes up to ~40x
//   its text); the JSON parses and is an object; every entry has a
//   known dtype (F16, BF16, F32, I8 — others are InvalidArgument naming the dtype), a shape of
//   non-negative dims whose element count does not overflow, offsets begin <= end with
//   end - begin == elements * dtype size, end <= data size; entries, sorted by offset, tile the
//   data buffer without gaps or overlap (as the format requires). Each error is a Status naming
//   the file and the tensor.
#ifndef LLMINT8_MODEL_SAFETENSORS_H_
#define LLMINT8_MODEL_SAFETENSORS_H_

#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "model/checkpoint.h"

namespace llmint8::model {

struct SafetensorsEntry {
  std::string name;  // as stored in the file
  TensorDType dtype = TensorDType::kF16;
  std::vector<int64_t> shape;
  int64_t begin = 0;  // byte offsets into the data buffer
  int64_t end = 0;
};

struct SafetensorsHeader {
  int64_t data_start = 0;  // 8 + header length: file offset of the data buffer
  std::vector<SafetensorsEntry> entries;  // sorted by offset
  std::map<std::string, std::string> metadata;
};

// Parses and validates the first bytes of a file (`file_prefix` must hold at least the header;
// `file_size` is the whole file's size). `file_label` names the file in errors. Never reads
// past file_prefix; never crashes on any input (fuzzed: model/fuzz/).
absl::StatusOr<SafetensorsHeader> ParseSafetensorsHeader(std::span<const uint8_t> file_prefix,
                                                         uint64_t file_size,
                                                         std::string_view file_label);

// A CheckpointSource over one .safetensors file or a sharded set
// (model.safetensors.index.json: {"weight_map": {tensor name: file name}}). Files are
// memory-mapped read-only; all headers are validated at open, and for an index every mapped
// tensor must exist in the file it names (file names must not contain '/'). The files must not
// be truncated while the source is open (a read of a mapped page past EOF raises SIGBUS).
absl::StatusOr<std::unique_ptr<CheckpointSource>> OpenSafetensors(const std::string& path);
// `dir` holding model.safetensors.index.json or model.safetensors.
absl::StatusOr<std::unique_ptr<CheckpointSource>> OpenSafetensorsDir(const std::string& dir);

// Metadata ("__metadata__") of an opened safetensors source (first file of a sharded set);
// empty for other sources.
std::map<std::string, std::string> SafetensorsMetadata(const CheckpointSource& source);

// Writer: tensors are appended in order and written by Finish() (the data is held in memory
// until then; for checkpoints of test size and one int8 shard file at a time).
class SafetensorsWriter {
 public:
  void SetMetadata(std::string key, std::string value);
  // `bytes` little-endian, bytes.size() == elements * dtype size, else InvalidArgument.
  absl::Status Add(std::string name, TensorDType dtype, std::vector<int64_t> shape,
                   std::span<const uint8_t> bytes);
  absl::Status AddF32(std::string name, std::vector<int64_t> shape, std::span<const float> v);
  // Stored as F16 / BF16 (round to nearest even).
  absl::Status AddF16(std::string name, std::vector<int64_t> shape, std::span<const float> v);
  absl::Status AddBF16(std::string name, std::vector<int64_t> shape, std::span<const float> v);
  absl::Status AddI8(std::string name, std::vector<int64_t> shape, std::span<const int8_t> v);
  int64_t data_bytes() const { return static_cast<int64_t>(data_.size()); }
  // Writes the file (header padded with spaces to a multiple of 8 bytes).
  absl::Status Finish(const std::string& path) const;

 private:
  struct Item {
    std::string name;
    TensorDType dtype;
    std::vector<int64_t> shape;
    int64_t begin, end;
  };
  std::vector<Item> items_;
  std::vector<uint8_t> data_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace llmint8::model

#endif  // LLMINT8_MODEL_SAFETENSORS_H_
