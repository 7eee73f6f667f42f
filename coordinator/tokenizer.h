// GPT-2 / OPT byte-level BPE tokenizer: text <-> token ids, as Hugging Face's GPT2Tokenizer does.
//
// Loads either vocab.json + merges.txt (what OPT and GPT-2 checkpoints ship) or a Hugging Face
// tokenizer.json (model.type "BPE" with a ByteLevel pre-tokenizer; model.vocab, model.merges as
// "a b" strings or ["a", "b"] pairs, added_tokens). Encoding: the text is split by GPT-2's
// pre-tokenization pattern
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// (Unicode letters, numbers and White_Space from ICU: Debian 12's ICU 72 knows Unicode 15.0,
// Hugging Face's regex engine Unicode 16.0, so the 5,004 code points 16.0 made letters or
// numbers, mostly scripts new in it such as Garay and Todhri, split as symbols here), each piece's UTF-8 bytes are mapped to
// GPT-2's printable byte alphabet and merged by rank. Special tokens written in the text
// ("</s>", "<|endoftext|>") are encoded as plain text, never as the special id (HF's
// split_special_tokens=True): a client cannot inject control tokens through the prompt.
//
// Added tokens that are not special (tokenizer.json added_tokens with "special": false,
// added_tokens.json) are found in the text before it is split into words, as HF does
// (coordinator/added_tokens.h).
//
// Decoding maps ids back to bytes; Decode replaces invalid UTF-8 (ids that end inside a
// multi-byte character) by U+FFFD per maximal invalid subpart, as HF decode does.
// DecodeStream emits text incrementally for streaming, holding back incomplete characters.
//
// Thread-safety: a loaded Tokenizer is immutable apart from an internal, mutex-guarded cache;
// Encode/Decode may be called from any number of threads. A DecodeStream is for one thread and
// must not outlive its Tokenizer.
#ifndef LLMINT8_COORDINATOR_TOKENIZER_H_
#define LLMINT8_COORDINATOR_TOKENIZER_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "coordinator/added_tokens.h"

namespace llmint8::coordinator {

struct TokenizerOptions {
  // Encode prepends the BOS token when true (OPT's tokenizer does: </s> = 2 in OPT's vocab).
  bool add_bos = false;
  // The BOS token, looked up among the vocabulary and added tokens at load. bos_id, when set,
  // takes precedence (for vocabularies without the token, e.g. GPT-2's where "</s>" is absent).
  std::string bos_token = "</s>";
  std::optional<int32_t> bos_id;
  // Tokens that count as special (skipped by Decode(..., skip_special_tokens=true) and by
  // DecodeStream) when present in the vocabulary. tokenizer.json marks its own with "special".
  // FromDirectory takes them from special_tokens_map.json when the directory has one.
  std::vector<std::string> special_tokens = {"<s>", "</s>", "<pad>", "<unk>", "<|endoftext|>"};
  // Tokens added on top of the vocabulary, as a slow tokenizer's added_tokens.json lists them
  // ({"<|user|>": 50261}; FromDirectory reads it): decoded as written, and found in the text
  // (coordinator/added_tokens.h) unless special. One already in the vocabulary under the same
  // id keeps its id, and is found in the text all the same (as transformers registers it);
  // one in the vocabulary under another id is found in the text as this id, and both ids
  // decode to it.
  std::vector<std::pair<std::string, int32_t>> added_tokens;
  // Pre-tokenized pieces whose ids are cached (a piece is a word with its leading space);
  // 0 disables the cache. When full, the cache is cleared.
  size_t cache_capacity = 1 << 16;
};

class Tokenizer {
 public:
  // Load from file paths. Errors: NotFound (missing file), InvalidArgument (malformed JSON, a
  // merge whose parts or result are not in the vocabulary, unsupported tokenizer.json model).
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromVocabAndMergesFiles(
      const std::string& vocab_json_path, const std::string& merges_txt_path,
      TokenizerOptions options = {});
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromTokenizerJsonFile(
      const std::string& path, TokenizerOptions options = {});
  // <dir>/tokenizer.json if it exists, else <dir>/vocab.json + <dir>/merges.txt; with
  // <dir>/special_tokens_map.json's tokens as the special ones and <dir>/added_tokens.json's
  // added (options.special_tokens / added_tokens), when the directory has them.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromDirectory(const std::string& dir,
                                                                   TokenizerOptions options = {});
  // Whether `dir` holds the files FromDirectory reads (not whether they parse).
  static bool DirectoryHasFiles(const std::string& dir);
  // The same from file contents.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromVocabAndMerges(
      std::string_view vocab_json, std::string_view merges_txt, TokenizerOptions options = {});
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromTokenizerJson(
      std::string_view tokenizer_json, TokenizerOptions options = {});

  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  // Token ids of `text` (UTF-8), with BOS first when options.add_bos. InvalidArgument naming the
  // byte offset when `text` is not valid UTF-8 (overlong forms, surrogates and code points past
  // U+10FFFF are invalid); FailedPrecondition if add_bos is set but no BOS id is known.
  absl::StatusOr<std::vector<int32_t>> Encode(std::string_view text) const;
  absl::StatusOr<std::vector<int32_t>> Encode(std::string_view text, bool add_bos) const;

  // Text of `ids`, always valid UTF-8 (see above). InvalidArgument for an id outside
  // [0, vocab_size()) or one with no token (a hole in the id range).
  absl::StatusOr<std::string> Decode(absl::Span<const int32_t> ids,
                                     bool skip_special_tokens = false) const;
  // The raw bytes of `ids`, which may end inside (or contain invalid) UTF-8.
  absl::StatusOr<std::string> DecodeBytes(absl::Span<const int32_t> ids,
                                          bool skip_special_tokens = false) const;

  // One more than the largest id with a token.
  int32_t vocab_size() const { return static_cast<int32_t>(id_to_bytes_.size()); }
  // The most bytes of text one token stands for: a text of B bytes encodes to at least
  // B / max_token_bytes() tokens (Encode adds no special tokens from the text). 0 when there is
  // no such bound: an added token that strips the whitespace beside it (lstrip / rstrip)
  // stands for any amount of it.
  int64_t max_token_bytes() const { return strips_whitespace_ ? 0 : max_token_bytes_; }
  std::optional<int32_t> TokenToId(std::string_view token) const;  // vocab string form
  // Whether `id` has a token (Decode refuses one that has none).
  bool HasId(int32_t id) const { return id >= 0 && id < vocab_size() && id_exists_[id]; }
  std::optional<int32_t> bos_id() const { return bos_id_; }
  bool IsSpecial(int32_t id) const { return special_ids_.contains(id); }
  const TokenizerOptions& options() const { return options_; }

 private:
  friend class TokenizerBuilder;
  Tokenizer() = default;

  // Appends the ids of one pre-tokenized piece (raw UTF-8 bytes) to `out`.
  void EncodePiece(std::string_view piece, std::vector<int32_t>& out) const;
  // Appends the ids of `text`, split into words by GPT-2's pattern; InvalidArgument for
  // invalid UTF-8, at its byte offset plus `offset` (where `text` starts in the request's).
  absl::Status EncodeWords(std::string_view text, size_t offset, std::vector<int32_t>& out) const;
  std::vector<int32_t> MergePiece(std::string_view piece) const;

  TokenizerOptions options_;
  absl::flat_hash_map<std::string, int32_t> token_to_id_;  // vocab string form -> id
  std::vector<std::string> id_to_bytes_;                   // id -> raw bytes ("" for holes)
  std::vector<bool> id_exists_;
  int64_t max_token_bytes_ = 1;
  bool strips_whitespace_ = false;  // an added token has lstrip or rstrip
  int32_t byte_to_id_[256] = {};  // id of each single-byte token
  // (left id << 32 | right id) -> (rank, merged id).
  absl::flat_hash_map<uint64_t, std::pair<int32_t, int32_t>> merges_;
  bool ignore_merges_ = false;  // tokenizer.json: a piece in the vocab is taken whole
  absl::flat_hash_set<int32_t> special_ids_;
  AddedTokenSplitter added_;  // the added tokens that are not special
  std::optional<int32_t> bos_id_;

  mutable absl::Mutex cache_mu_;
  mutable absl::flat_hash_map<std::string, std::vector<int32_t>> cache_
      ABSL_GUARDED_BY(cache_mu_);
};

// Incremental detokenization: feed the generated ids one at a time; each call returns the text
// that became complete. The concatenation of every Next() and the final Finish() equals
// tokenizer.Decode(all ids, skip_special_tokens). A character split across ids is emitted whole
// by the call that completes it; bytes that can never become valid UTF-8 come out as U+FFFD.
// Holds a reference: `tokenizer` must outlive the stream. Not thread-safe.
class DecodeStream {
 public:
  explicit DecodeStream(const Tokenizer& tokenizer, bool skip_special_tokens = true)
      : tokenizer_(tokenizer), skip_special_tokens_(skip_special_tokens) {}

  // InvalidArgument for an id out of range (the stream is unchanged then).
  absl::StatusOr<std::string> Next(int32_t id);
  // Whatever is held back (an incomplete character at the end), as U+FFFD; resets the stream.
  std::string Finish();
  // The bytes held back now: an incomplete character's, at most 3.
  size_t pending_bytes() const { return pending_.size(); }

 private:
  const Tokenizer& tokenizer_;
  bool skip_special_tokens_;
  std::string pending_;  // bytes of an incomplete trailing character
};

// UTF-8 helpers (exposed for tests and the service's input validation).
// Byte offset of the first invalid UTF-8 sequence in `s`, or nullopt when `s` is valid.
std::optional<size_t> FindInvalidUtf8(std::string_view s);
// `s` with each maximal invalid subpart replaced by U+FFFD (the Unicode-recommended practice,
// as Python's errors="replace" and Rust's from_utf8_lossy). If `hold_back_incomplete` is set, a
// trailing sequence that is a valid but incomplete prefix is not replaced but left out of the
// result, and its length is written to *held_back.
std::string SanitizeUtf8(std::string_view s, bool hold_back_incomplete = false,
                         size_t* held_back = nullptr);

}  // namespace llmint8::coordinator

#endif  // LLMINT8_COORDINATOR_TOKENIZER_H_
