// Added tokens of a Hugging Face tokenizer that are not special (tokenizer.json "added_tokens"
// with "special": false, a slow tokenizer's added_tokens.json): words a fine-tune added to the
// vocabulary, such as a chat template's "<|user|>". Hugging Face finds them in the text before
// the text is split into words, so "<|user|> hi" is [<|user|>, " hi"], not the pieces of
// "<|", "user", ... AddedTokenSplitter does the same, with HF's rules (tokenizers'
// AddedVocabulary):
//   - the leftmost match wins, and of those starting there the longest;
//   - tokens with normalized=false are found first, then those with normalized=true in the
//     text between (GPT-2's tokenizer has no normalizer, so both match the text as it is);
//   - single_word: only where the characters around it are not word characters (regex \w:
//     Unicode Alphabetic, marks, decimal digits, connector punctuation such as "_", joiners);
//   - lstrip / rstrip: the token takes the whitespace before / after it with it.
// Special tokens are not added here: their text stays plain text (coordinator/tokenizer.h).
//
// Immutable once built; Split may be called from any number of threads.
#ifndef LLMINT8_COORDINATOR_ADDED_TOKENS_H_
#define LLMINT8_COORDINATOR_ADDED_TOKENS_H_

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"

namespace llmint8::coordinator {

struct AddedToken {
  std::string content;  // UTF-8, not empty
  int32_t id = 0;
  bool single_word = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = true;
};

class AddedTokenSplitter {
 public:
  // A token with empty content is ignored. The same content twice: the later one counts.
  void Add(AddedToken token);
  bool empty() const { return count_ == 0; }
  // Whether a token of this content was added (either pass).
  bool Contains(std::string_view content) const;

  // Walks `text` (valid UTF-8) in order: on_text(segment) for each non-empty stretch between
  // tokens, on_token(id) for each token found.
  void Split(std::string_view text, const std::function<void(std::string_view)>& on_text,
             const std::function<void(int32_t)>& on_token) const;

 private:
  // Tokens of one pass, by their first byte, longest first.
  using Pass = absl::flat_hash_map<char, std::vector<AddedToken>>;

  static void SplitPass(const Pass& pass, std::string_view text,
                        const std::function<void(std::string_view)>& on_text,
                        const std::function<void(int32_t)>& on_token);

  Pass verbatim_;    // normalized=false: the first pass
  Pass normalized_;  // normalized=true: within the text the first pass left
  int count_ = 0;
};

}  // namespace llmint8::coordinator

#endif  // LLMINT8_COORDINATOR_ADDED_TOKENS_H_
