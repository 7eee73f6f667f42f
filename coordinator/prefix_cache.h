// Finished sequences whose KV cache the workers keep so that a later prompt starting with the
// same tokens copies those positions (SeqStep.prefix_from) instead of prefilling them:
// automatic prefix caching. The scheduler parks a sequence that finished normally, looks up
// each new prompt's longest cached prefix, and evicts the least recently used entries when
// admission needs their KV room (or the entry cap is reached); evicted ids must be released
// on the workers.
//
//   PrefixCache cache({});
//   std::vector<uint64_t> evicted = cache.Park(7, {2, 5, 9, ...}, /*tokens_kept=*/false);
//   if (auto m = cache.Find(prompt, /*need_tokens=*/false)) {
//     cache.MarkUsed(m->id);  // prefix_from m->id, prefix_length m->length
//   }
//
// Not thread-safe (the scheduler thread's).
#ifndef LLMINT8_COORDINATOR_PREFIX_CACHE_H_
#define LLMINT8_COORDINATOR_PREFIX_CACHE_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "model/kv_granule.h"

namespace llmint8::coordinator {

// How many tokens `a` and `b` start with alike, at most `most`.
int64_t SharedStart(std::span<const int32_t> a, std::span<const int32_t> b, size_t most);

class PrefixCache {
 public:
  struct Options {
    size_t max_entries = 256;  // parked sequences; 0: the cache is off
    int64_t min_prefix = 16;   // shorter shared prefixes are prefilled (not worth a copy)
  };
  // A parked sequence's KV is counted in positions rounded up to this (the CPU cache's
  // granule and the GPU cache's page), what it may hold on the workers.
  static constexpr int64_t kGranule = model::kKvGranule;

  explicit PrefixCache(Options options) : options_(options) {}

  // Keeps sequence `id`, whose first tokens.size() positions the workers hold (`tokens_kept`:
  // rank 0 kept its tokens too, for penalties), and `extra` positions after them that count
  // but are never copied (draft tokens not accepted). Returns the ids evicted to stay within
  // max_entries (all of them, `id` included, when the cache is off or `tokens` is empty or
  // shorter than min_prefix).
  std::vector<uint64_t> Park(uint64_t id, std::vector<int32_t> tokens, bool tokens_kept,
                             int64_t extra = 0);

  struct Match {
    uint64_t id = 0;
    int64_t length = 0;  // positions to copy
  };
  // The longest cached prefix of `prompt` a new sequence can start from: at most
  // prompt.size() - 1 positions (its last token gives its first logits), at least min_prefix,
  // from an entry whose tokens rank 0 kept when `need_tokens`.
  std::optional<Match> Find(std::span<const int32_t> prompt, bool need_tokens) const;
  // Marks entry `id` used now (the last to be evicted); no-op when there is none.
  void MarkUsed(uint64_t id);

  // The least recently used (or parked) entry, removed; nullopt when empty.
  std::optional<uint64_t> EvictOldest();
  // Removes entry `id`; false when there is none.
  bool Evict(uint64_t id);
  // Forgets every entry without releasing (the group that held them is gone).
  void Clear();

  int64_t positions() const { return positions_; }  // KV positions held, rounded per entry
  size_t size() const { return entries_.size(); }

 private:
  struct Entry {
    uint64_t id;
    std::vector<int32_t> tokens;
    bool tokens_kept;
    uint64_t last_used;
    int64_t extra;
  };
  static int64_t Positions(const Entry& e);
  void Remove(size_t index);

  Options options_;
  std::vector<Entry> entries_;
  int64_t positions_ = 0;
  uint64_t clock_ = 0;
};

}  // namespace llmint8::coordinator

#endif  // LLMINT8_COORDINATOR_PREFIX_CACHE_H_
