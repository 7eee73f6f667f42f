// Growing a buffer to exactly the size asked: std::vector::resize past the capacity may
// reserve up to twice the old size, more than memory accounting that counts sizes (the
// shard's ScratchBytesFor, and the KV budget the coordinator takes from it) allows for.
#ifndef LLMINT8_COMMON_GROW_TO_H_
#define LLMINT8_COMMON_GROW_TO_H_

#include <cstddef>
#include <cstdint>
#include <vector>

namespace llmint8 {

// v.size() == n afterwards; when n is past the capacity, the capacity becomes exactly n.
template <typename T>
void GrowTo(std::vector<T>& v, int64_t n) {
  if (static_cast<size_t>(n) > v.capacity()) v.reserve(static_cast<size_t>(n));
  v.resize(static_cast<size_t>(n));
}

}  // namespace llmint8

#endif  // LLMINT8_COMMON_GROW_TO_H_
