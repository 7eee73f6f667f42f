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

// What a token adds to the decoded text (decoded_bytes, the OpenAI API's text_offset steps): its
// bytes, and nothing for a special token the text leaves out (OPT's </s>, id 2), whose own
// bytes are still reported.
TEST(TokenizerTextStreamTest, ASpecialTokenAddsNoBytesToTheText) {
  const char* src = std::getenv("LLMINT8_SOURCE_DIR");
  auto tok = Tokenizer::FromDirectory(
      std::string(src != nullptr ? src : LLMINT8_DEFAULT_SOURCE_DIR) + "/models/opt-sotu-cpu");
  ASSERT_TRUE(tok.ok()) << tok.status();
  TokenizerTextStream stream(**tok);
  const TokenTextStream::TextAndBytes eos = stream.TokenTextAndBytes(2);
  EXPECT_EQ(eos.bytes, "</s>");
  EXPECT_EQ(eos.decoded_bytes, 0u);
  const int32_t the = (*tok)->Encode(" the", /*add_bos=*/false).value().at(0);
  const TokenTextStream::TextAndBytes word = stream.TokenTextAndBytes(the);
  EXPECT_EQ(word.bytes, " the");
  EXPECT_EQ(word.decoded_bytes, 4u);
}

}  // namespace
}  // namespace llmint8::coordinator
