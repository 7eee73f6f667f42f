#include "coordinator/tokenizer_text_stream.h"

#include <utility>

namespace llmint8::coordinator {

std::string TokenizerTextStream::Add(int32_t token_id) {
  absl::StatusOr<std::string> piece = stream_.Next(token_id);
  return piece.ok() ? *std::move(piece) : std::string();
}

TokenTextStream::TextAndBytes TokenizerTextStream::TokenTextAndBytes(int32_t token_id) const {
  // Special tokens too ("</s>"): a candidate must say which token it is.
  absl::StatusOr<std::string> bytes = tokenizer_.DecodeBytes({token_id});
  if (!bytes.ok()) return {};
  std::string text = SanitizeUtf8(*bytes);  // what Decode({token_id}) gives
  return {std::move(text), *std::move(bytes)};
}

std::vector<std::string> TokenizerTextStream::Pieces(std::span<const int32_t> ids) const {
  DecodeStream stream(tokenizer_);
  std::vector<std::string> pieces;
  pieces.reserve(ids.size());
  for (int32_t id : ids) {
    absl::StatusOr<std::string> piece = stream.Next(id);
    pieces.push_back(piece.ok() ? *std::move(piece) : std::string());
  }
  if (!pieces.empty()) pieces.back() += stream.Finish();
  return pieces;
}

std::vector<std::string> TokenizerTextStream::StartWith(std::span<const int32_t> ids) {
  std::vector<std::string> pieces;
  pieces.reserve(ids.size());
  for (int32_t id : ids) pieces.push_back(Add(id));  // an incomplete tail stays in stream_
  return pieces;
}

}  // namespace llmint8::coordinator
