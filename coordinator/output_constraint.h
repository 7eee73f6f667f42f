// Guided decoding: a language over the bytes of a sequence's output that its tokens must keep
// to (vLLM's guided_choice, guided_regex (guided_regex.h), guided_json (json_schema.h, followed
// as a regex) and its json_object response format).
// Before each token the coordinator asks which ids may come next (AllowedTokens) and rank 0 samples
// among those only; each sampled token's bytes then advance the constraint (Advance). Once the
// output is a whole sentence of the language and nothing may follow (MustEnd), the sequence ends
// with finish reason stop; where a sentence may end or go on (one choice a prefix of another), the
// end-of-sequence ids are allowed beside the tokens that go on.
//
//   TokenVocabulary vocab = TokenVocabulary::FromTokenizer(tokenizer);
//   auto c = OutputConstraint::Choice({"yes", "no"});
//   TokenSet allowed;
//   RETURN_IF_ERROR((*c)->Allowed(vocab, allowed));  // "yes", "y", "no", "n"; not " yes"
//   (*c)->Advance(vocab.bytes[sampled]);
//
// The languages work on bytes, as the byte-level BPE tokens do: a token may end inside a
// character. Special tokens (and ids without a token) are never allowed.
//
// Not thread-safe: one per sequence, used by the scheduler's thread.
#ifndef LLMINT8_COORDINATOR_OUTPUT_CONSTRAINT_H_
#define LLMINT8_COORDINATOR_OUTPUT_CONSTRAINT_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace llmint8::coordinator {

class Tokenizer;
namespace internal {
struct JsonScans;  // output_constraint.cc
}  // namespace internal

// The bytes of every token id that may appear in guided output.
struct TokenVocabulary {
  // `token_bytes`: indexed by token id, as `bytes`.
  explicit TokenVocabulary(std::vector<std::string> token_bytes);
  static TokenVocabulary FromTokenizer(const Tokenizer& tokenizer);

  // Indexed by token id: the token's raw bytes; empty for an id never allowed (a special
  // token such as </s>, or an id without a token).
  std::vector<std::string> bytes;
  // Indexed by token id, contiguous for the scan of AllowedTokens: the token's first two bytes
  // (0 past its end), its length (at most 255), and whether it is printable ASCII without '"'
  // or '\\' (text a JSON string takes as it is).
  struct Head {
    uint8_t first = 0;
    uint8_t second = 0;
    uint8_t size = 0;
    bool plain = false;
  };
  std::vector<Head> heads;
  // Distinct for each vocabulary constructed (a copy keeps it): what a scan's result kept for
  // later is for (guided_regex.h). Not to be changed after construction, nor are bytes.
  uint64_t id;
  // JSON mode's allowed tokens by state, shared by every sequence that uses this vocabulary
  // (and its copies): the states recur from sequence to sequence (the whitespace after '{',
  // inside a string), at most kMaxJsonScansKept of them. Thread-safe.
  std::shared_ptr<internal::JsonScans> json_scans;
};

// A set of the token ids [0, size) of a vocabulary, written as the shorter list: its members
// (allow), or the ids outside it. Inside a JSON string nearly every token may come, and the
// few that may not are what is kept and sent (the worker's TokenMask is the same).
struct TokenSet {
  bool allow = true;
  std::vector<int32_t> ids;  // increasing, each in [0, size)

  // `members` (increasing ids in [0, size)) as the shorter list.
  static TokenSet Of(std::vector<int32_t> members, size_t size);
  // The members, increasing.
  std::vector<int32_t> Members(size_t size) const;
};

// Limits of the languages (a request past them is InvalidArgument).
inline constexpr int kMaxGuidedChoices = 256;
inline constexpr int kMaxGuidedChoiceBytes = 1024;
// All the choices together (each sequence of a request keeps its own copy, and the scan of the
// vocabulary grows with them).
inline constexpr int kMaxGuidedChoicesTotalBytes = 16384;
// JSON: containers nest at most this deep, and at most this many whitespace bytes follow each
// other outside strings (a model cannot pad the output with whitespace until max_tokens; 32
// indents a pretty-printed object 15 levels deep by 2).
inline constexpr int kMaxJsonDepth = 64;
inline constexpr int kMaxJsonWhitespaceRun = 32;
// A json_object number's integer digits at most: with 2 exponent digits, below 10^299, a
// finite double.
inline constexpr int kMaxJsonIntegerDigits = 200;
inline constexpr int kMaxJsonScansKept = 4096;

// InvalidArgument unless `choices` are 1 to kMaxGuidedChoices non-empty strings of at most
// kMaxGuidedChoiceBytes bytes each, kMaxGuidedChoicesTotalBytes in all.
absl::Status CheckGuidedChoices(const std::vector<std::string>& choices);

class OutputConstraint {
 public:
  virtual ~OutputConstraint() = default;

  // The output is exactly one of `choices` (CheckGuidedChoices' error otherwise).
  static absl::StatusOr<std::unique_ptr<OutputConstraint>> Choice(std::vector<std::string> choices);
  // The output is one JSON object (RFC 8259; strings are valid UTF-8): its '{' first, the
  // whitespace inside it limited as above, nothing after its closing brace; a number has at
  // most kMaxJsonIntegerDigits integer digits and 2 exponent digits (1e999 would be inf to a
  // reader, whose JSON writer then writes Infinity, which is not JSON).
  static std::unique_ptr<OutputConstraint> JsonObject();

  // Appends `bytes` to the output when the output stays a prefix of a sentence of the
  // language, and returns true; else returns false and changes nothing.
  virtual bool Advance(std::string_view bytes) = 0;
  // Whether the output so far is a whole sentence (the sequence may end here).
  virtual bool CanEnd() const = 0;
  // Whether the output is a whole sentence that no byte can continue.
  virtual bool MustEnd() const = 0;
  // Replaces `allowed` with the token ids of `vocabulary` (a set of [0, vocabulary.bytes.size()))
  // whose bytes Advance would take now. INVALID_ARGUMENT when following the language over the
  // vocabulary costs more than a request may (guided_regex.h); choices and JSON never fail.
  virtual absl::Status Allowed(const TokenVocabulary& vocabulary, TokenSet& allowed) const = 0;
  // The same as a list: replaces `ids` with those ids, increasing.
  absl::Status AllowedTokens(const TokenVocabulary& vocabulary, std::vector<int32_t>& ids) const;
};

}  // namespace llmint8::coordinator

#endif  // LLMINT8_COORDINATOR_OUTPUT_CONSTRAINT_H_
