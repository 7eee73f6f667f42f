// SafetensorsWriter: small safetensors files for tests and `llmint8 quantize`.
#include <cstdint>
#include <cstring>
#include <fstream>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/file.h"
#include "common/half.h"
#include "common/json_text.h"
#include "common/status_macros.h"
#include "model/safetensors.h"
#include "model/safetensors_internal.h"

namespace llmint8::model {

using internal::Json;

namespace {

uint16_t FloatToBF16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 0x40u);  // NaN
  x += 0x7fffu + ((x >> 16) & 1u);  // round to nearest even
  return static_cast<uint16_t>(x >> 16);
}

// Converts `n` little-endian elements at `src` to float.

void AppendBytes(std::vector<uint8_t>* data, const void* p, size_t n) {
  const auto* b = static_cast<const uint8_t*>(p);
  data->insert(data->end(), b, b + n);
}

}  // namespace

void SafetensorsWriter::SetMetadata(std::string key, std::string value) {
  metadata_[std::move(key)] = std::move(value);
}

absl::Status SafetensorsWriter::Add(std::string name, TensorDType dtype, std::vector<int64_t> shape,
                                    std::span<const uint8_t> bytes) {
  int64_t elements = 1;
  for (int64_t d : shape) {
    if (d < 0)
      return absl::InvalidArgumentError(absl::StrCat("tensor \"", name, "\": negative dim"));
    elements *= d;
  }
  if (static_cast<int64_t>(bytes.size()) != elements * TensorDTypeSize(dtype)) {
    return absl::InvalidArgumentError(absl::StrCat("tensor \"", name, "\": ", bytes.size(),
                                                   " bytes for ", elements, " elements of ",
                                                   std::string(TensorDTypeName(dtype))));
  }
  for (const Item& it : items_) {
    if (it.name == name) {
      return absl::AlreadyExistsError(absl::StrCat("tensor \"", name, "\" added twice"));
    }
  }
  const int64_t begin = static_cast<int64_t>(data_.size());
  AppendBytes(&data_, bytes.data(), bytes.size());
  items_.push_back(
      {std::move(name), dtype, std::move(shape), begin, static_cast<int64_t>(data_.size())});
  return absl::OkStatus();
}

absl::Status SafetensorsWriter::AddF32(std::string name, std::vector<int64_t> shape,
                                       std::span<const float> v) {
  return Add(std::move(name), TensorDType::kF32, std::move(shape),
             {reinterpret_cast<const uint8_t*>(v.data()), v.size() * 4});
}

absl::Status SafetensorsWriter::AddF16(std::string name, std::vector<int64_t> shape,
                                       std::span<const float> v) {
  std::vector<uint16_t> h(v.size());
  for (size_t i = 0; i < v.size(); ++i) h[i] = FloatToHalf(v[i]).bits;
  return Add(std::move(name), TensorDType::kF16, std::move(shape),
             {reinterpret_cast<const uint8_t*>(h.data()), h.size() * 2});
}

absl::Status SafetensorsWriter::AddBF16(std::string name, std::vector<int64_t> shape,
                                        std::span<const float> v) {
  std::vector<uint16_t> h(v.size());
  for (size_t i = 0; i < v.size(); ++i) h[i] = FloatToBF16(v[i]);
  return Add(std::move(name), TensorDType::kBF16, std::move(shape),
             {reinterpret_cast<const uint8_t*>(h.data()), h.size() * 2});
}

absl::Status SafetensorsWriter::AddI8(std::string name, std::vector<int64_t> shape,
                                      std::span<const int8_t> v) {
  return Add(std::move(name), TensorDType::kI8, std::move(shape),
             {reinterpret_cast<const uint8_t*>(v.data()), v.size()});
}

absl::Status SafetensorsWriter::Finish(const std::string& path) const {
  Json header = Json::object();
  if (!metadata_.empty()) header["__metadata__"] = metadata_;
  for (const Item& it : items_) {
    header[it.name] = {{"dtype", std::string(TensorDTypeName(it.dtype))},
                       {"shape", it.shape},
                       {"data_offsets", {it.begin, it.end}}};
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  errno = 0;
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return WriteFailed(path, errno);
  uint8_t len[8];
  uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(n >> (8 * i));
  out.write(reinterpret_cast<const char*>(len), 8);
  out.write(text.data(), static_cast<std::streamsize>(text.size()));
  out.write(reinterpret_cast<const char*>(data_.data()),
            static_cast<std::streamsize>(data_.size()));
  out.close();
  if (!out) return WriteFailed(path, errno);
  return absl::OkStatus();
}

}  // namespace llmint8::model
