// libFuzzer target: the safetensors header parser on arbitrary bytes (the whole input is the
// file, so lengths, offsets and the JSON are all attacker-controlled). Besides "no crash, no
// sanitizer report", it checks the parser's promise: an accepted header tiles the data buffer.
// Build and run: model/fuzz/README.md.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>

#include "model/checkpoint.h"
#include "model/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::span<const uint8_t> bytes(data, size);
  auto header = llmint8::model::ParseSafetensorsHeader(bytes, size, "fuzz-input");
  if (!header.ok()) return 0;
  int64_t expect = 0;
  for (const auto& e : header->entries) {
    int64_t elements = 1;
    for (int64_t d : e.shape) elements *= d;  // cannot overflow: checked by the parser
    if (e.begin != expect ||
        e.end - e.begin != elements * llmint8::model::TensorDTypeSize(e.dtype)) {
      std::abort();
    }
    expect = e.end;
  }
  if (header->data_start + expect != static_cast<int64_t>(size)) std::abort();
  return 0;
}
