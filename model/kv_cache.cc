#include "model/kv_cache.h"

#include <algorithm>
#include <cstring>

#include "absl/base/internal/raw_logging.h"
#include "absl/strings/str_cat.h"

namespace llmint8::model {

KvCache::KvCache(int64_t num_layers, int64_t width, int64_t max_context)
    : num_layers_(num_layers),
      width_(width),
      max_context_(max_context),
      per_position_bytes_(num_layers * 2 * width * static_cast<int64_t>(sizeof(float))) {}

int64_t KvCache::Length(uint64_t seq_id) const {
  auto it = seqs_.find(seq_id);
  return it == seqs_.end() ? 0 : it->second->length;
}

int64_t KvCache::Capacity(uint64_t seq_id) const {
  auto it = seqs_.find(seq_id);
  return it == seqs_.end() ? 0 : it->second->capacity;
}

int64_t KvCache::CapacityFor(int64_t old_capacity, int64_t length) const {
  if (length <= old_capacity) return old_capacity;
  int64_t cap = std::max(length, 2 * old_capacity);
  cap = (cap + kGranule - 1) / kGranule * kGranule;
  return std::min(cap, std::max(max_context_, length));
}

int64_t KvCache::GrowthBytes(uint64_t seq_id, int64_t length) const {
  const int64_t old = Capacity(seq_id);
  return BytesFor(CapacityFor(old, length)) - BytesFor(old);
}

void KvCache::Reserve(uint64_t seq_id, int64_t length) {
  // The entry is made whole or not at all: an allocation that throws leaves no null entry
  // for Release (or a lookup) to read.
  auto it = seqs_.find(seq_id);
  if (it == seqs_.end()) it = seqs_.emplace(seq_id, std::make_unique<Sequence>()).first;
  Sequence& s = *it->second;
  const int64_t cap = CapacityFor(s.capacity, length);
  if (cap == s.capacity) return;
  std::vector<float> data(static_cast<size_t>(num_layers_ * 2 * cap * width_));
  CopyPositions(s.data.data(), s.capacity, data.data(), cap, s.length);
  bytes_ += BytesFor(cap) - BytesFor(s.capacity);
  s.data = std::move(data);
  s.capacity = cap;
}

KvCache::Sequence& KvCache::Get(uint64_t seq_id) {
  auto it = seqs_.find(seq_id);
  ABSL_RAW_CHECK(it != seqs_.end(), "KvCache: unknown sequence (caller must Reserve first)");
  return *it->second;
}

std::span<float> KvCache::Keys(uint64_t seq_id, int64_t layer) {
  Sequence& s = Get(seq_id);
  return std::span<float>(s.data).subspan((layer * 2) * s.capacity * width_, s.capacity * width_);
}

std::span<float> KvCache::Values(uint64_t seq_id, int64_t layer) {
  Sequence& s = Get(seq_id);
  return std::span<float>(s.data).subspan((layer * 2 + 1) * s.capacity * width_,
                                          s.capacity * width_);
}

void KvCache::SetLength(uint64_t seq_id, int64_t length) {
  Sequence& s = Get(seq_id);
  ABSL_RAW_CHECK(length <= s.capacity, "KvCache: length beyond the reserved capacity");
  s.length = length;
}

void KvCache::CopyPrefix(uint64_t from, uint64_t to, int64_t length) {
  const Sequence& src = Get(from);
  Sequence& dst = Get(to);
  ABSL_RAW_CHECK(length <= src.length && length <= dst.capacity,
                 "KvCache::CopyPrefix: beyond the source's length or the target's capacity");
  CopyPositions(src.data.data(), src.capacity, dst.data.data(), dst.capacity, length);
}

void KvCache::CopyPositions(const float* src, int64_t src_capacity, float* dst,
                            int64_t dst_capacity, int64_t length) const {
  if (length <= 0) return;
  const size_t bytes = static_cast<size_t>(length * width_) * sizeof(float);
  for (int64_t block = 0; block < 2 * num_layers_; ++block) {  // [layers][2 (k, v)]
    std::memcpy(dst + block * dst_capacity * width_, src + block * src_capacity * width_, bytes);
  }
}

absl::Status KvCache::Release(uint64_t seq_id) {
  auto it = seqs_.find(seq_id);
  if (it == seqs_.end()) {
    return absl::NotFoundError(absl::StrCat("no KV cache for sequence ", seq_id));
  }
  bytes_ -= BytesFor(it->second->capacity);
  seqs_.erase(it);
  return absl::OkStatus();
}

}  // namespace llmint8::model
