// What the safetensors header parser, reader and writer (safetensors_header.cc, safetensors.cc,
// safetensors_writer.cc) share; internal to model/.
#ifndef LLMINT8_MODEL_SAFETENSORS_INTERNAL_H_
#define LLMINT8_MODEL_SAFETENSORS_INTERNAL_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace llmint8::model::internal {

using Json = nlohmann::json;

// The longest header read (the reference implementation's limit).
inline constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

inline absl::Status FileError(std::string_view file, std::string_view what) {
  return absl::InvalidArgumentError(
      absl::StrCat("safetensors file ", std::string(file), ": ", std::string(what)));
}

inline absl::Status TensorError(std::string_view file, std::string_view tensor,
                                std::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("safetensors file ", std::string(file),
                                                 ": tensor \"", std::string(tensor),
                                                 "\": ", std::string(what)));
}

}  // namespace llmint8::model::internal

#endif  // LLMINT8_MODEL_SAFETENSORS_INTERNAL_H_
