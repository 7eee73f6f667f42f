#include "coordinator/prompt_lookup.h"

#include <algorithm>
#include <cstddef>

namespace llmint8::coordinator {

void ProposeByPromptLookup(std::span<const int32_t> tokens, const PromptLookup& lookup, int32_t k,
                           std::vector<int32_t>& draft) {
  draft.clear();
  const ptrdiff_t len = std::ssize(tokens);
  if (k <= 0 || lookup.min_n < 1) return;
  for (ptrdiff_t n = std::min<ptrdiff_t>(lookup.max_n, len - 1); n >= lookup.min_n; --n) {
    const std::span<const int32_t> suffix = tokens.last(static_cast<size_t>(n));
    // The most recent earlier occurrence: shift d (its start is len - n - d), smallest first.
    for (ptrdiff_t d = 1; d <= len - n; ++d) {
      if (!std::equal(suffix.begin(), suffix.end(), tokens.begin() + (len - n - d))) continue;
      // Token len + j goes as token len + j - d did: from `tokens`, then from the draft.
      for (ptrdiff_t j = 0; j < k; ++j) {
        const ptrdiff_t from = len + j - d;
        draft.push_back(from < len ? tokens[static_cast<size_t>(from)]
                                   : draft[static_cast<size_t>(from - len)]);
      }
      return;
    }
  }
}

}  // namespace llmint8::coordinator
