#include "model/cuda/paged_kv_cache.h"

#include <algorithm>
#include <limits>
#include <utility>

#include "absl/base/internal/raw_logging.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace llmint8::model::cuda {

PagedKvCache::PagedKvCache(int64_t num_layers, int64_t width)
    : num_layers_(num_layers), width_(width), page_elems_(num_layers * 2 * kPageSize * width) {}

int64_t PagedKvCache::Length(uint64_t seq_id) const {
  auto it = seqs_.find(seq_id);
  return it == seqs_.end() ? 0 : it->second.length;
}

int64_t PagedKvCache::PagesNeeded(uint64_t seq_id, int64_t length) const {
  auto it = seqs_.find(seq_id);
  const int64_t held = it == seqs_.end() ? 0 : static_cast<int64_t>(it->second.pages.size());
  return std::max<int64_t>(0, PagesFor(length) - held);
}

absl::Status PagedKvCache::GrowPool(int64_t min_pages, int64_t want_pages, cudaStream_t stream) {
  absl::Status grown = GrowPoolTo(std::max(min_pages, want_pages), stream);
  if (absl::IsResourceExhausted(grown) && want_pages > min_pages) {
    grown = GrowPoolTo(min_pages, stream);
  }
  return grown;
}

absl::Status PagedKvCache::GrowPoolTo(int64_t num_pages, cudaStream_t stream) {
  if (num_pages <= num_pages_) return absl::OkStatus();
  if (num_pages > std::numeric_limits<int32_t>::max()) {
    return absl::ResourceExhaustedError(
        absl::StrCat("KV cache: ", num_pages, " pages exceed the int32 page ids"));
  }
  ASSIGN_OR_RETURN(auto pool, gpu::DeviceBuffer<Half>::Allocate(
                                  static_cast<size_t>(num_pages * page_elems_)));
  if (num_pages_ > 0) {
    RETURN_IF_ERROR(gpu::internal::CopyDeviceToDevice(pool.data(), pool_.data(),
                                                      static_cast<size_t>(bytes()), stream));
    // The old pool must outlive the copy.
    RETURN_IF_ERROR(gpu::internal::SynchronizeStream(stream));
  }
  pool_ = std::move(pool);
  // New ids go below the existing free ones so the lowest ids are handed out first.
  std::vector<int32_t> added;
  for (int64_t p = num_pages - 1; p >= num_pages_; --p) added.push_back(static_cast<int32_t>(p));
  free_.insert(free_.begin(), added.begin(), added.end());
  num_pages_ = num_pages;
  return absl::OkStatus();
}

void PagedKvCache::Reserve(uint64_t seq_id, int64_t length) {
  Sequence& s = seqs_[seq_id];
  const int64_t want = PagesFor(length);
  ABSL_RAW_CHECK(want - static_cast<int64_t>(s.pages.size()) <= free_pages(),
                 "PagedKvCache::Reserve: not enough free pages (caller must GrowPool first)");
  while (static_cast<int64_t>(s.pages.size()) < want) {
    s.pages.push_back(free_.back());
    free_.pop_back();
  }
}

std::span<const int32_t> PagedKvCache::Pages(uint64_t seq_id) const {
  auto it = seqs_.find(seq_id);
  ABSL_RAW_CHECK(it != seqs_.end(), "PagedKvCache: unknown sequence (caller must Reserve first)");
  return it->second.pages;
}

void PagedKvCache::SetLength(uint64_t seq_id, int64_t length) {
  auto it = seqs_.find(seq_id);
  ABSL_RAW_CHECK(it != seqs_.end(), "PagedKvCache: unknown sequence");
  ABSL_RAW_CHECK(PagesFor(length) <= static_cast<int64_t>(it->second.pages.size()),
                 "PagedKvCache: length beyond the reserved pages");
  it->second.length = length;
}

absl::Status PagedKvCache::CopyPrefix(uint64_t from, uint64_t to, int64_t length,
                                      cudaStream_t stream) {
  const std::span<const int32_t> src = Pages(from);
  const std::span<const int32_t> dst = Pages(to);
  const int64_t pages = PagesFor(length);
  ABSL_RAW_CHECK(length <= Length(from) && pages <= static_cast<int64_t>(dst.size()),
                 "PagedKvCache::CopyPrefix: beyond the source's length or the target's pages");
  for (int64_t p = 0; p < pages;) {
    int64_t run = 1;
    while (p + run < pages && src[p + run] == src[p] + run && dst[p + run] == dst[p] + run) ++run;
    RETURN_IF_ERROR(gpu::internal::CopyDeviceToDevice(
        pool_.data() + dst[p] * page_elems_, pool_.data() + src[p] * page_elems_,
        static_cast<size_t>(run * page_bytes()), stream));
    p += run;
  }
  return absl::OkStatus();
}

void PagedKvCache::Trim(uint64_t seq_id) {
  auto it = seqs_.find(seq_id);
  if (it == seqs_.end()) return;
  Sequence& s = it->second;
  while (static_cast<int64_t>(s.pages.size()) > PagesFor(s.length)) {
    free_.push_back(s.pages.back());
    s.pages.pop_back();
  }
}

absl::Status PagedKvCache::Release(uint64_t seq_id) {
  auto it = seqs_.find(seq_id);
  if (it == seqs_.end()) {
    return absl::NotFoundError(absl::StrCat("no KV cache for sequence ", seq_id));
  }
  for (auto p = it->second.pages.rbegin(); p != it->second.pages.rend(); ++p) free_.push_back(*p);
  seqs_.erase(it);
  return absl::OkStatus();
}

kernels::PagedKvCudaView PagedKvCache::Layer(int64_t layer) const {
  Half* k = pool_.data() + layer * 2 * kPageSize * width_;
  return {k, k + kPageSize * width_, page_elems_};
}

}  // namespace llmint8::model::cuda
