// Compiled guides kept across requests: the guided_regex patterns and guided_json schemas
// clients send again and again (a service's one response schema, an agent's tool) are
// compiled once, and their requests share one CompiledRegex, so also its lazily built DFA and
// the allowed tokens of the states it scanned (guided_regex.h). A request whose guide is
// kept starts with its masks already found; each request's automaton work is still bounded on
// its own (RegexRequestWork). The least recently used guide goes first.
//
//   GuideCache guides(16, metrics);
//   ASSIGN_OR_RETURN(std::shared_ptr<const CompiledRegex> re, guides.JsonSchema(schema));
//
// Memory: each kept guide holds its NFA and its DFA as the scheduler grew it, until it is
// evicted and its last request ends: after a scan up to 3 x kMaxGuidedRegexDfaStates states
// of 1 KiB and 3 x kMaxGuidedRegexDfaEntries NFA state ids (guided_regex.h), the
// kMaxGuidedRegexAllowedEntries kept token ids and an NFA of up to 65,536 states: about 24
// MiB at worst by those limits (computed, not measured), a pattern built to blow up. The
// pydantic-style schema of output_constraint_benchmark held 770 DFA states (their transition
// tables 770 KiB) after 8 random 64-token walks (BM_JsonSchemaKeptGeneration's dfa_states).
// A failed compile is not kept.
//
// Thread-safe: lookups come from every request's thread; compiles run outside the lock.
#ifndef LLMINT8_COORDINATOR_GUIDE_CACHE_H_
#define LLMINT8_COORDINATOR_GUIDE_CACHE_H_

#include <cstddef>
#include <cstdint>
#include <list>
#include <memory>
#include <string>
#include <string_view>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "coordinator/guided_regex.h"
#include "coordinator/metrics.h"

namespace llmint8::coordinator {

inline constexpr size_t kMaxGuideCacheEntries = 1024;

class GuideCache {
 public:
  // Keeps up to `capacity` guides (0: none; every request compiles its own; at most
  // kMaxGuideCacheEntries). `metrics` (may be null) counts hits and misses.
  explicit GuideCache(size_t capacity, ServiceMetrics* metrics = nullptr);

  // guided_regex's `pattern` (CompiledRegex::Compile), kept or compiled now.
  absl::StatusOr<std::shared_ptr<const CompiledRegex>> Regex(std::string_view pattern);
  // guided_json's `schema` (CompileJsonSchema), kept or compiled now. The key is the schema's
  // text as sent: the same schema written differently is compiled again.
  absl::StatusOr<std::shared_ptr<const CompiledRegex>> JsonSchema(std::string_view schema);

  size_t size() const;
  uint64_t hits() const;
  uint64_t misses() const;

 private:
  using Compiler = absl::StatusOr<std::shared_ptr<const CompiledRegex>> (*)(std::string_view);
  using Entry = std::pair<std::string, std::shared_ptr<const CompiledRegex>>;

  absl::StatusOr<std::shared_ptr<const CompiledRegex>> Find(char kind, std::string_view text,
                                                            Compiler compile);

  const size_t capacity_;
  ServiceMetrics* const metrics_;
  mutable absl::Mutex mu_;
  std::list<Entry> order_ ABSL_GUARDED_BY(mu_);  // most recently used first
  absl::flat_hash_map<std::string, std::list<Entry>::iterator> by_key_ ABSL_GUARDED_BY(mu_);
  uint64_t hits_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t misses_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace llmint8::coordinator

#endif  // LLMINT8_COORDINATOR_GUIDE_CACHE_H_
