// The text of a sequence's tokens as they come (TokenTextStream) from the model's tokenizer:
// whole UTF-8 characters only, the bytes of a character split across tokens held back until the
// token that completes it.
#ifndef LLMINT8_COORDINATOR_TOKENIZER_TEXT_STREAM_H_
#define LLMINT8_COORDINATOR_TOKENIZER_TEXT_STREAM_H_

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "coordinator/sequence.h"
#include "coordinator/tokenizer.h"

namespace llmint8::coordinator {

// A sequence's text, decoded as its tokens come. Holds a reference: the tokenizer (the
// coordinator's, for the process's life) must outlive it. An id outside the vocabulary adds no
// text (the scheduler fails a sequence given one first).
class TokenizerTextStream : public TokenTextStream {
 public:
  explicit TokenizerTextStream(const Tokenizer& tokenizer)
      : tokenizer_(tokenizer), stream_(tokenizer) {}
  std::string Add(int32_t token_id) override;
  std::string Flush() override { return stream_.Finish(); }
  size_t held_bytes() const override { return stream_.pending_bytes(); }
  TextAndBytes TokenTextAndBytes(int32_t token_id) const override;
  std::vector<std::string> Pieces(std::span<const int32_t> ids) const override;
  std::vector<std::string> StartWith(std::span<const int32_t> ids) override;

 private:
  const Tokenizer& tokenizer_;
  DecodeStream stream_;
};

}  // namespace llmint8::coordinator

#endif  // LLMINT8_COORDINATOR_TOKENIZER_TEXT_STREAM_H_
