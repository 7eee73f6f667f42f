// 64-bit FNV-1a over bytes: the same on every process and host (absl::Hash is seeded per
// process), for what must agree across them (synthetic weights, checkpoint fingerprints).
#ifndef LLMINT8_COMMON_FNV1A_H_
#define LLMINT8_COMMON_FNV1A_H_

#include <cstddef>
#include <cstdint>

namespace llmint8 {

class Fnv1a {
 public:
  static constexpr uint64_t kOffsetBasis = 0xcbf29ce484222325ULL;
  explicit Fnv1a(uint64_t basis = kOffsetBasis) : h_(basis) {}

  Fnv1a& Add(const void* data, size_t n) {
    const auto* p = static_cast<const uint8_t*>(data);
    for (size_t i = 0; i < n; ++i) h_ = (h_ ^ p[i]) * 0x100000001b3ULL;
    return *this;
  }
  uint64_t value() const { return h_; }

 private:
  uint64_t h_;
};

}  // namespace llmint8

#endif  // LLMINT8_COMMON_FNV1A_H_
