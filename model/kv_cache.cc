#include "model/kv_cache.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <new>

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

KvCache::Mapping::~Mapping() {
  if (data_ != nullptr) munmap(data_, bytes_);
}

void KvCache::Mapping::Grow(size_t bytes) {
  static const size_t kPage = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  bytes = (bytes + kPage - 1) / kPage * kPage;
  if (bytes <= bytes_) return;
  void* grown = data_ == nullptr ? mmap(nullptr, bytes, PROT_READ | PROT_WRITE,
                                        MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
                                 : mremap(data_, bytes_, bytes, MREMAP_MAYMOVE);
  if (grown == MAP_FAILED) throw std::bad_alloc();
  data_ = grown;
  bytes_ = bytes;
}

void KvCache::Reserve(uint64_t seq_id, int64_t length) {
  // The entry is made whole or not at all: an allocation that throws leaves no null entry
  // for Release (or a lookup) to read.
  auto it = seqs_.find(seq_id);
  if (it == seqs_.end()) it = seqs_.emplace(seq_id, std::make_unique<Sequence>()).first;
  Sequence& s = *it->second;
  const int64_t cap = CapacityFor(s.capacity, length);
  if (cap == s.capacity) return;
  s.data.Grow(static_cast<size_t>(num_layers_ * 2 * cap * width_) * sizeof(float));
  // Each [capacity, width] block moves up to its offset at the new capacity, the last first:
  // block b's new place starts at or past where blocks 0..b-1 end, so nothing unmoved is
  // overwritten (memmove: a block may overlap its own old place).
  const size_t row_bytes = static_cast<size_t>(s.length * width_) * sizeof(float);
  for (int64_t block = 2 * num_layers_ - 1; block > 0 && row_bytes > 0; --block) {
    std::memmove(s.data.data() + block * cap * width_, s.data.data() + block * s.capacity * width_,
                 row_bytes);
  }
  bytes_ += BytesFor(cap) - BytesFor(s.capacity);
  s.capacity = cap;
}

KvCache::Sequence& KvCache::Get(uint64_t seq_id) {
  auto it = seqs_.find(seq_id);
  ABSL_RAW_CHECK(it != seqs_.end(), "KvCache: unknown sequence (caller must Reserve first)");
  return *it->second;
}

std::span<float> KvCache::Keys(uint64_t seq_id, int64_t layer) {
  Sequence& s = Get(seq_id);
  return {s.data.data() + (layer * 2) * s.capacity * width_,
          static_cast<size_t>(s.capacity * width_)};
}

std::span<float> KvCache::Values(uint64_t seq_id, int64_t layer) {
  Sequence& s = Get(seq_id);
  return {s.data.data() + (layer * 2 + 1) * s.capacity * width_,
          static_cast<size_t>(s.capacity * width_)};
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
