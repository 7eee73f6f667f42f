#include "coordinator/prompt_lookup.h"

#include <algorithm>
#include <cstddef>

namespace llmint8::coordinator {

void ProposeByPromptLookup(std::span<const int32_t> tokens, const PromptLookup& lookup, int32_t k,
                           std::vector<int32_t>& draft) {
  draft.clear();
  const ptrdiff_t len = std::ssize(tokens);
  if (k <= 0 || lookup.min_n < 1 || lookup.max_n < lookup.min_n) return;
  // One pass over the shifts d (an earlier occurrence ending d tokens before the last one),
  // nearest first: how many of the last tokens (up to max_n) it repeats. The longest wins,
  // the nearest among equals; a first mismatch ends a shift's count, so a pass is ~len steps.
  ptrdiff_t best_n = 0, best_d = 0;
  for (ptrdiff_t d = 1; d < len && best_n < lookup.max_n; ++d) {
    const ptrdiff_t most = std::min<ptrdiff_t>(lookup.max_n, len - d);
    ptrdiff_t n = 0;
    while (n < most && tokens[static_cast<size_t>(len - 1 - n)] ==
                           tokens[static_cast<size_t>(len - 1 - d - n)]) {
      ++n;
    }
    if (n > best_n) {
      best_n = n;
      best_d = d;
    }
  }
  if (best_n < lookup.min_n) return;
  // Token len + j goes as token len + j - d did: from `tokens`, then from the draft.
  for (ptrdiff_t j = 0; j < k; ++j) {
    const ptrdiff_t from = len + j - best_d;
    draft.push_back(from < len ? tokens[static_cast<size_t>(from)]
                               : draft[static_cast<size_t>(from - len)]);
  }
}

}  // namespace llmint8::coordinator
