#include "coordinator/guide_cache.h"

#include <algorithm>
#include <utility>

#include "coordinator/json_schema.h"

namespace llmint8::coordinator {

GuideCache::GuideCache(size_t capacity, ServiceMetrics* metrics)
    : capacity_(std::min(capacity, kMaxGuideCacheEntries)), metrics_(metrics) {}

absl::StatusOr<std::shared_ptr<const CompiledRegex>> GuideCache::Regex(std::string_view pattern) {
  return Find('r', pattern, [](std::string_view text) { return CompiledRegex::Compile(text); });
}

absl::StatusOr<std::shared_ptr<const CompiledRegex>> GuideCache::JsonSchema(
    std::string_view schema) {
  return Find('j', schema, CompileJsonSchema);
}

absl::StatusOr<std::shared_ptr<const CompiledRegex>> GuideCache::Find(char kind,
                                                                      std::string_view text,
                                                                      Compiler compile) {
  if (capacity_ == 0) return compile(text);
  std::string key(1, kind);
  key.append(text);
  std::shared_ptr<const CompiledRegex> kept;
  {
    absl::MutexLock lock(&mu_);
    if (auto it = by_key_.find(key); it != by_key_.end()) {
      order_.splice(order_.begin(), order_, it->second);
      kept = it->second->second;
      ++hits_;
    } else {
      ++misses_;
    }
  }
  if (metrics_ != nullptr) metrics_->RecordGuideLookup(/*hit=*/kept != nullptr);
  if (kept != nullptr) return kept;
  absl::StatusOr<std::shared_ptr<const CompiledRegex>> compiled = compile(text);
  if (!compiled.ok()) return compiled.status();
  absl::MutexLock lock(&mu_);
  // Another request may have compiled the same guide meanwhile: share the kept one.
  if (auto it = by_key_.find(key); it != by_key_.end()) {
    order_.splice(order_.begin(), order_, it->second);
    return it->second->second;
  }
  order_.emplace_front(key, *compiled);
  by_key_.emplace(std::move(key), order_.begin());
  if (order_.size() > capacity_) {
    by_key_.erase(order_.back().first);
    order_.pop_back();  // requests holding it keep it until they end
  }
  return compiled;
}

size_t GuideCache::size() const {
  absl::MutexLock lock(&mu_);
  return order_.size();
}

uint64_t GuideCache::hits() const {
  absl::MutexLock lock(&mu_);
  return hits_;
}

uint64_t GuideCache::misses() const {
  absl::MutexLock lock(&mu_);
  return misses_;
}

}  // namespace llmint8::coordinator
