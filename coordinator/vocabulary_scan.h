// The vocabulary scan of guided decoding, shared by the OutputConstraint languages.
#ifndef LLMINT8_COORDINATOR_VOCABULARY_SCAN_H_
#define LLMINT8_COORDINATOR_VOCABULARY_SCAN_H_

#include <array>
#include <bitset>
#include <cstdint>
#include <string_view>
#include <utility>
#include <vector>

#include "coordinator/output_constraint.h"

namespace llmint8::coordinator::internal {

// The ids of `vocabulary` for which `takes(bytes)` holds. Where few bytes may come next, most
// tokens are refused by their first two bytes, which are tried alone first: every first byte,
// and after each of at most 32 that `takes` allows, every second byte.
template <typename Takes>
inline void ScanVocabulary(const TokenVocabulary& vocabulary, const Takes& takes,
                           std::vector<int32_t>& ids) {
  constexpr int kMostFirstBytes = 32;
  std::bitset<256> first;
  std::vector<std::pair<uint8_t, std::bitset<256>>> seconds;  // for each first byte allowed
  for (int b = 0; b < 256; ++b) {
    const char c = static_cast<char>(b);
    first[static_cast<size_t>(b)] = takes(std::string_view(&c, 1));
  }
  if (first.count() <= kMostFirstBytes) {
    for (int b = 0; b < 256; ++b) {
      if (!first[static_cast<size_t>(b)]) continue;
      std::bitset<256> second;
      for (int b2 = 0; b2 < 256; ++b2) {
        const char pair[2] = {static_cast<char>(b), static_cast<char>(b2)};
        second[static_cast<size_t>(b2)] = takes(std::string_view(pair, 2));
      }
      seconds.emplace_back(static_cast<uint8_t>(b), second);
    }
  }
  std::array<int16_t, 256> second_index;  // into `seconds`, -1: not tried
  second_index.fill(-1);
  for (size_t i = 0; i < seconds.size(); ++i) {
    second_index[seconds[i].first] = static_cast<int16_t>(i);
  }
  ids.clear();
  for (size_t id = 0; id < vocabulary.heads.size(); ++id) {
    const TokenVocabulary::Head head = vocabulary.heads[id];
    if (head.size == 0 || !first[head.first]) continue;
    if (head.size == 1) {
      ids.push_back(static_cast<int32_t>(id));
      continue;
    }
    const int16_t tried = second_index[head.first];
    if (tried >= 0) {
      if (!seconds[static_cast<size_t>(tried)].second[head.second]) continue;
      if (head.size == 2) {
        ids.push_back(static_cast<int32_t>(id));
        continue;
      }
    }
    if (takes(vocabulary.bytes[id])) ids.push_back(static_cast<int32_t>(id));
  }
}

}  // namespace llmint8::coordinator::internal

#endif  // LLMINT8_COORDINATOR_VOCABULARY_SCAN_H_
