// TokenizerTextStream on the GPT-2 vocabulary (tests/fixtures/tokenizer/gpt2-bpe): an echoed
// prompt that ends inside a character hands its bytes on to the first generated token.
#include "coordinator/tokenizer_text_stream.h"

#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_join.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace llmint8::coordinator {
namespace {

using ::testing::ElementsAre;

std::unique_ptr<Tokenizer> Gpt2() {
  const char* src = std::getenv("LLMINT8_SOURCE_DIR");
  const std::string dir = std::string(src != nullptr ? src : LLMINT8_DEFAULT_SOURCE_DIR) +
                          "/tests/fixtures/tokenizer/gpt2-bpe";
  auto tok = Tokenizer::FromVocabAndMergesFiles(dir + "/vocab.json", dir + "/merges.txt");
  EXPECT_TRUE(tok.ok()) << tok.status();
  return tok.ok() ? *std::move(tok) : nullptr;
}

// The id of the token for one byte (GPT-2's byte alphabet: 0xE2 is "â", 0x80 "Ģ", 0x94 "Ķ").
int32_t ByteToken(const Tokenizer& tok, const char* alphabet_form) {
  const std::optional<int32_t> id = tok.TokenToId(alphabet_form);
  EXPECT_TRUE(id.has_value()) << alphabet_form;
  return id.value_or(0);
}

TEST(TokenizerTextStreamTest, AnEchoedPromptEndingInsideACharacterContinuesIntoTheTokens) {
  const std::unique_ptr<Tokenizer> tok = Gpt2();
  ASSERT_NE(tok, nullptr);
  // "—" (U+2014) is E2 80 94: the prompt brings E2 80, the first generated token 94.
  const std::vector<int32_t> prompt = {ByteToken(*tok, "\xC3\xA2"), ByteToken(*tok, "\xC4\xA2")};
  const int32_t next = ByteToken(*tok, "\xC4\xB6");
  std::vector<int32_t> all = prompt;
  all.push_back(next);
  ASSERT_EQ(tok->Decode(all).value(), "\xE2\x80\x94");

  TokenizerTextStream echoed(*tok);
  const std::vector<std::string> pieces = echoed.StartWith(prompt);
  EXPECT_THAT(pieces, ElementsAre("", ""));
  std::string text = absl::StrJoin(pieces, "");
  text += echoed.Add(next);
  text += echoed.Flush();
  EXPECT_EQ(text, "\xE2\x80\x94");

  // Without the echo, the prompt's pieces stand alone: the incomplete tail is replaced.
  TokenizerTextStream alone(*tok);
  EXPECT_EQ(absl::StrJoin(alone.Pieces(prompt), ""), "\xEF\xBF\xBD");
  // And a prompt that ends the text: flushed, the same replacement.
  TokenizerTextStream ends(*tok);
  std::string ended = absl::StrJoin(ends.StartWith(prompt), "");
  ended += ends.Flush();
  EXPECT_EQ(ended, "\xEF\xBF\xBD");
}

// A sequence's text and each token's text_offset as the OpenAI API counts them (an echoed
// prompt token by its piece, a generated one by its decoded_bytes), after feeding it `ids`
// (its last one must end it; `eos_ids` end it too); `total`: where the text would go on.
struct Offsets {
  std::string text;
  std::vector<size_t> offsets;
  size_t total = 0;
};
Offsets FeedAndCount(Sequence& seq, const std::vector<int32_t>& ids,
                     const std::vector<int32_t>& eos_ids = {-1}) {
  for (int32_t id : ids) {
    v1::SeqResult r;
    r.set_token_id(id);
    seq.AddToken(r, eos_ids);
  }
  std::vector<v1::GenerateResponse> responses;
  EXPECT_TRUE(seq.WaitOutput(absl::ZeroDuration(), responses).has_value()) << "not finished";
  Offsets out;
  for (const v1::GenerateResponse& r : responses) {
    for (const v1::PromptToken& p : r.prompt_tokens()) {
      out.offsets.push_back(out.total);
      out.total += p.text().size();
      out.text += p.text();
    }
    if (!r.has_token_id()) continue;
    out.offsets.push_back(out.total);
    out.total += r.decoded_bytes();
    out.text += r.text();
  }
  return out;
}

// What each generated token adds to the decoded text (decoded_bytes, the OpenAI API's
// text_offset steps) sums to offsets into the text as sent: a special token adds nothing,
// bytes held back count when they come, and invalid UTF-8 counts as the U+FFFD it becomes.
TEST(TokenizerTextStreamTest, DecodedBytesAreOffsetsIntoTheTextAsSent) {
  // The bundled model's tokenizer: its special_tokens_map.json makes </s> (2) special.
  const char* src = std::getenv("LLMINT8_SOURCE_DIR");
  auto loaded = Tokenizer::FromDirectory(
      std::string(src != nullptr ? src : LLMINT8_DEFAULT_SOURCE_DIR) + "/models/opt-sotu-cpu");
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  const Tokenizer* tok = loaded->get();
  const int32_t the = tok->Encode(" the", /*add_bos=*/false).value().at(0);
  const int32_t e2 = ByteToken(*tok, "\xC3\xA2");   // 0xE2: a 3-byte character starts
  const int32_t x80 = ByteToken(*tok, "\xC4\xA2");  // 0x80: it continues
  const int32_t a = ByteToken(*tok, "A");           // not a continuation: E2 80 is invalid
  const int32_t eos = 2;
  ASSERT_TRUE(tok->IsSpecial(eos));
  GenerationParams params;
  params.max_new_tokens = 6;  // ends with the last id below
  params.logprobs = true;
  params.ignore_eos = true;
  Sequence seq(1, {the}, params, std::make_unique<TokenizerTextStream>(*tok));
  const Offsets got = FeedAndCount(seq, {the, e2, x80, a, eos, the});
  EXPECT_EQ(got.text,
            " the\xEF\xBF\xBD"
            "A the");
  // " the" at 0; E2 and 80, held back, at 4 and 5; "A" at 6, though it is released at 7,
  // after the U+FFFD that replaces them; </s> adds nothing; the last " the" at 8.
  EXPECT_THAT(got.offsets, ElementsAre(0, 4, 5, 6, 8, 8));
  EXPECT_EQ(got.total, got.text.size());
}

// A text that ends inside a character (at max_new_tokens, or at an end-of-sequence token):
// the held bytes become a U+FFFD, and the last token counts what that adds, so the sum is
// still the text's length.
TEST(TokenizerTextStreamTest, ATextEndingInsideACharacterCountsItsReplacement) {
  const std::unique_ptr<Tokenizer> tok = Gpt2();
  ASSERT_NE(tok, nullptr);
  const int32_t the = tok->Encode(" the", /*add_bos=*/false).value().at(0);
  const int32_t e2 = ByteToken(*tok, "\xC3\xA2");  // 0xE2: a 3-byte character starts
  const int32_t eos = 2;
  for (const bool at_eos : {false, true}) {
    SCOPED_TRACE(at_eos ? "ends at eos" : "ends at max_new_tokens");
    GenerationParams params;
    params.max_new_tokens = at_eos ? 3 : 2;
    params.logprobs = true;
    Sequence seq(1, {the}, params, std::make_unique<TokenizerTextStream>(*tok));
    const std::vector<int32_t> ids =
        at_eos ? std::vector<int32_t>{the, e2, eos} : std::vector<int32_t>{the, e2};
    const Offsets got = FeedAndCount(seq, ids, {eos});
    EXPECT_EQ(got.text, " the\xEF\xBF\xBD");
    EXPECT_EQ(got.total, got.text.size());
    EXPECT_EQ(got.offsets[1], 4u) << "E2's text begins after \" the\"";
  }
}

// An echoed prompt that ends inside a character: its pieces leave the held bytes out, so the
// generated token that completes the character counts them (text_offset of the next token is
// after the whole character).
TEST(TokenizerTextStreamTest, TheTokenThatCompletesAnEchoedPromptsCharacterCountsItsBytes) {
  const std::unique_ptr<Tokenizer> tok = Gpt2();
  ASSERT_NE(tok, nullptr);
  // "\u2014" is E2 80 94: the prompt brings E2 80, the first generated token 94.
  const std::vector<int32_t> prompt = {ByteToken(*tok, "\xC3\xA2"), ByteToken(*tok, "\xC4\xA2")};
  const int32_t x94 = ByteToken(*tok, "\xC4\xB6");
  const int32_t the = tok->Encode(" the", /*add_bos=*/false).value().at(0);
  GenerationParams params;
  params.max_new_tokens = 2;
  params.logprobs = true;
  params.echo_prompt = true;
  Sequence seq(1, prompt, params, std::make_unique<TokenizerTextStream>(*tok));
  const Offsets got = FeedAndCount(seq, {x94, the});
  EXPECT_EQ(got.text, "\xE2\x80\x94 the");
  EXPECT_THAT(got.offsets, ElementsAre(0, 0, 0, 3));  // the prompt's two tokens first
  EXPECT_EQ(got.total, got.text.size());
}

}  // namespace
}  // namespace llmint8::coordinator
