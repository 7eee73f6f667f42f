#include "coordinator/tokenizer.h"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace llmint8::coordinator {
namespace {

using json = nlohmann::json;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::string FixtureDir() {
  const char* src = std::getenv("LLMINT8_SOURCE_DIR");
  return std::string(src != nullptr ? src : LLMINT8_DEFAULT_SOURCE_DIR) +
         "/tests/fixtures/tokenizer";
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

class Gpt2TokenizerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto tok = Tokenizer::FromVocabAndMergesFiles(FixtureDir() + "/gpt2-bpe/vocab.json",
                                                  FixtureDir() + "/gpt2-bpe/merges.txt");
    ASSERT_TRUE(tok.ok()) << tok.status();
    tok_ = tok->release();
    cases_ = new json(json::parse(ReadAll(FixtureDir() + "/cases.json")));
  }
  static void TearDownTestSuite() {
    delete tok_;
    delete cases_;
  }
  static const Tokenizer& tok() { return *tok_; }
  static const json& cases() { return *cases_; }

  static Tokenizer* tok_;
  static json* cases_;
};
Tokenizer* Gpt2TokenizerTest::tok_ = nullptr;
json* Gpt2TokenizerTest::cases_ = nullptr;

TEST_F(Gpt2TokenizerTest, VocabularyShape) {
  EXPECT_EQ(tok().vocab_size(), 50257);
  EXPECT_EQ(tok().TokenToId("<|endoftext|>"), 50256);
  EXPECT_EQ(tok().TokenToId("\xC4\xA0the"), 262);  // "Ġthe"
  EXPECT_TRUE(tok().IsSpecial(50256));
  EXPECT_FALSE(tok().IsSpecial(262));
  EXPECT_FALSE(tok().bos_id().has_value());  // GPT-2's vocabulary has no "</s>"
}

TEST_F(Gpt2TokenizerTest, EncodeMatchesHuggingFace) {
  ASSERT_GE(cases()["encode"].size(), 60u);
  for (const json& c : cases()["encode"]) {
    const std::string text = c["text"].get<std::string>();
    auto ids = tok().Encode(text);
    ASSERT_TRUE(ids.ok()) << ids.status();
    EXPECT_EQ(*ids, c["ids"].get<std::vector<int32_t>>()) << "text: '" << text << "'";
  }
}

// max_token_bytes is the longest token's text, so a text of B bytes takes at least
// B / max_token_bytes tokens (what the server refuses over-long prompts by, before encoding).
TEST_F(Gpt2TokenizerTest, MaxTokenBytesBoundsEveryEncoding) {
  int64_t longest = 0;
  for (int32_t id = 0; id < tok().vocab_size(); ++id) {
    const int32_t ids[] = {id};
    absl::StatusOr<std::string> bytes = tok().DecodeBytes(ids);
    if (bytes.ok()) longest = std::max(longest, static_cast<int64_t>(bytes->size()));
  }
  EXPECT_EQ(tok().max_token_bytes(), longest);
  for (const json& c : cases()["encode"]) {
    const std::string text = c["text"].get<std::string>();
    auto ids = tok().Encode(text);
    ASSERT_TRUE(ids.ok()) << ids.status();
    EXPECT_GE(static_cast<int64_t>(ids->size()) * tok().max_token_bytes(),
              static_cast<int64_t>(text.size()));
  }
}

TEST_F(Gpt2TokenizerTest, DecodeOfEncodeIsIdentity) {
  for (const json& c : cases()["encode"]) {
    const std::string text = c["text"].get<std::string>();
    auto ids = tok().Encode(text);
    ASSERT_TRUE(ids.ok()) << ids.status();
    auto back = tok().Decode(*ids);
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(*back, text);
  }
}

TEST_F(Gpt2TokenizerTest, DecodeMatchesHuggingFaceIncludingSplitCharacters) {
  int with_replacement = 0;
  for (const json& c : cases()["decode"]) {
    const auto ids = c["ids"].get<std::vector<int32_t>>();
    const std::string expected = c["text"].get<std::string>();
    auto text = tok().Decode(ids);
    ASSERT_TRUE(text.ok()) << text.status();
    EXPECT_EQ(*text, expected) << "ids " << ::testing::PrintToString(ids);
    with_replacement += expected.find("\xEF\xBF\xBD") != std::string::npos;
  }
  EXPECT_GT(with_replacement, 5);  // the fixtures do split characters across tokens
}

// Streaming: the pieces concatenate to Decode(ids); no piece is invalid UTF-8; a character split
// over tokens comes out whole from the token that completes it.
TEST_F(Gpt2TokenizerTest, DecodeStreamConcatenatesToDecode) {
  for (const json& c : cases()["encode"]) {
    const auto ids = c["ids"].get<std::vector<int32_t>>();
    DecodeStream stream(tok());
    std::string joined;
    for (int32_t id : ids) {
      auto piece = stream.Next(id);
      ASSERT_TRUE(piece.ok()) << piece.status();
      EXPECT_FALSE(FindInvalidUtf8(*piece).has_value());
      joined += *piece;
    }
    joined += stream.Finish();
    EXPECT_EQ(joined, c["text"].get<std::string>());
  }
}

TEST_F(Gpt2TokenizerTest, DecodeStreamHoldsBackSplitEmoji) {
  const std::string llama = "\xF0\x9F\xA6\x99";  // U+1F999, 4 bytes
  auto ids = tok().Encode(llama);
  ASSERT_TRUE(ids.ok());
  ASSERT_GE(ids->size(), 2u) << "the test needs an emoji split across tokens";
  DecodeStream stream(tok());
  for (size_t i = 0; i + 1 < ids->size(); ++i) {
    auto piece = stream.Next((*ids)[i]);
    ASSERT_TRUE(piece.ok());
    EXPECT_EQ(*piece, "") << "token " << i;
  }
  auto last = stream.Next(ids->back());
  ASSERT_TRUE(last.ok());
  EXPECT_EQ(*last, llama);
  EXPECT_EQ(stream.Finish(), "");
}

TEST_F(Gpt2TokenizerTest, DecodeStreamFinishReplacesIncompleteTail) {
  auto ids = tok().Encode("a\xF0\x9F\xA6\x99");
  ASSERT_TRUE(ids.ok());
  ASSERT_GE(ids->size(), 3u);
  DecodeStream stream(tok());
  std::string out;
  for (size_t i = 0; i + 1 < ids->size(); ++i) out += *stream.Next((*ids)[i]);
  EXPECT_EQ(out, "a");
  EXPECT_EQ(stream.Finish(), "\xEF\xBF\xBD");  // one U+FFFD for the incomplete character
}

TEST_F(Gpt2TokenizerTest, DecodeStreamSkipsSpecialTokensByDefault) {
  DecodeStream stream(tok());
  EXPECT_EQ(*stream.Next(50256), "");
  EXPECT_EQ(*stream.Next(262), " the");
  DecodeStream raw(tok(), /*skip_special_tokens=*/false);
  EXPECT_EQ(*raw.Next(50256), "<|endoftext|>");
}

TEST_F(Gpt2TokenizerTest, SpecialTokenTextIsPlainText) {
  auto ids = tok().Encode("<|endoftext|>");
  ASSERT_TRUE(ids.ok());
  EXPECT_THAT(*ids, ::testing::Not(::testing::Contains(50256)));
  EXPECT_EQ(*tok().Decode(*ids), "<|endoftext|>");
}

TEST_F(Gpt2TokenizerTest, InvalidUtf8TextIsInvalidArgumentWithOffset) {
  struct Bad {
    std::string text;
    size_t offset;
  };
  const Bad bad[] = {
      {"ab\x80", 2},            // lone continuation byte
      {"\xC0\xAF", 0},          // overlong '/'
      {"x\xED\xA0\x80", 1},     // UTF-16 surrogate D800
      {"ok \xE2\x82", 3},       // truncated 3-byte sequence at the end
      {"\xF5\x80\x80\x80", 0},  // past U+10FFFF
      {"\xF4\x90\x80\x80", 0},  // U+110000
      {std::string("a\xFF", 2), 1},
  };
  for (const Bad& b : bad) {
    auto ids = tok().Encode(b.text);
    ASSERT_FALSE(ids.ok());
    EXPECT_EQ(ids.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(ids.status().message(), HasSubstr("offset " + std::to_string(b.offset)));
    EXPECT_EQ(FindInvalidUtf8(b.text), b.offset);
  }
  // NUL is valid UTF-8 and encodes.
  auto nul = tok().Encode(std::string("a\0b", 3));
  ASSERT_TRUE(nul.ok());
  EXPECT_EQ(*tok().Decode(*nul), std::string("a\0b", 3));
}

TEST_F(Gpt2TokenizerTest, OutOfRangeIdsAreInvalidArgument) {
  for (int32_t id : {-1, 50257, 1 << 30}) {
    auto text = tok().Decode(std::vector<int32_t>{262, id});
    ASSERT_FALSE(text.ok());
    EXPECT_EQ(text.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(text.status().message(), HasSubstr(std::to_string(id)));
  }
  DecodeStream stream(tok());
  EXPECT_EQ(*stream.Next(64), "a");
  EXPECT_EQ(stream.Next(-5).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(*stream.Next(65), "b");  // the stream goes on unchanged
}

TEST_F(Gpt2TokenizerTest, BosOption) {
  EXPECT_EQ(tok().Encode("hi", /*add_bos=*/true).status().code(),
            absl::StatusCode::kFailedPrecondition);
  TokenizerOptions opt;
  opt.add_bos = true;
  opt.bos_id = 50256;
  auto with_bos = Tokenizer::FromVocabAndMergesFiles(FixtureDir() + "/gpt2-bpe/vocab.json",
                                                     FixtureDir() + "/gpt2-bpe/merges.txt", opt);
  ASSERT_TRUE(with_bos.ok()) << with_bos.status();
  EXPECT_THAT(*(*with_bos)->Encode("Hello world"), ElementsAre(50256, 15496, 995));
  EXPECT_THAT(*(*with_bos)->Encode("Hello world", /*add_bos=*/false), ElementsAre(15496, 995));
  EXPECT_EQ(*(*with_bos)->Decode(std::vector<int32_t>{50256, 15496}, /*skip_special_tokens=*/true),
            "Hello");
  opt.bos_id = 60000;
  EXPECT_EQ(Tokenizer::FromVocabAndMergesFiles(FixtureDir() + "/gpt2-bpe/vocab.json",
                                               FixtureDir() + "/gpt2-bpe/merges.txt", opt)
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
}

// Long runs of one class form one piece; the merge loop must stay near-linear and exact.
TEST_F(Gpt2TokenizerTest, LongPieceRoundTrips) {
  std::string text(200000, 'a');
  text += " " + std::string(50000, '!') + std::string(30000, '7');
  auto ids = tok().Encode(text);
  ASSERT_TRUE(ids.ok());
  EXPECT_LT(ids->size(), text.size() / 2);
  EXPECT_EQ(*tok().Decode(*ids), text);
}

TEST_F(Gpt2TokenizerTest, ConcurrentEncodeAgrees) {
  const auto& encode = cases()["encode"];
  std::vector<std::vector<std::vector<int32_t>>> results(2);
  std::vector<std::thread> threads;
  for (int t = 0; t < 2; ++t) {
    threads.emplace_back([&, t] {
      for (int rep = 0; rep < 3; ++rep) {
        for (const json& c : encode)
          results[t].push_back(*tok().Encode(c["text"].get<std::string>()));
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(results[0], results[1]);
}

// The tokenizer.json loader on the same vocabulary, with merges in both of HF's formats.
TEST_F(Gpt2TokenizerTest, TokenizerJsonFromSameVocabularyAgrees) {
  const json vocab = json::parse(ReadAll(FixtureDir() + "/gpt2-bpe/vocab.json"));
  json merges_strings = json::array(), merges_pairs = json::array();
  std::istringstream merges(ReadAll(FixtureDir() + "/gpt2-bpe/merges.txt"));
  std::string line;
  while (std::getline(merges, line)) {
    if (line.empty() || line.rfind("#version", 0) == 0) continue;
    merges_strings.push_back(line);
    const size_t sp = line.find(' ');
    merges_pairs.push_back(json::array({line.substr(0, sp), line.substr(sp + 1)}));
  }
  for (const json* merge_list : {&merges_strings, &merges_pairs}) {
    json tj = {{"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", *merge_list}}},
               {"pre_tokenizer",
                {{"type", "ByteLevel"},
                 {"add_prefix_space", false},
                 {"trim_offsets", true},
                 {"use_regex", true}}},
               {"normalizer", nullptr},
               {"added_tokens",
                json::array({{{"id", 50256}, {"content", "<|endoftext|>"}, {"special", true}}})}};
    auto t = Tokenizer::FromTokenizerJson(tj.dump());
    ASSERT_TRUE(t.ok()) << t.status();
    for (size_t i = 0; i < cases()["encode"].size(); i += 7) {
      const json& c = cases()["encode"][i];
      EXPECT_EQ(*(*t)->Encode(c["text"].get<std::string>()), c["ids"].get<std::vector<int32_t>>());
    }
  }
}

TEST(TinyBpeTokenizerJsonTest, MatchesHuggingFaceTokenizers) {
  TokenizerOptions opt;
  opt.add_bos = true;  // "</s>" is an added token of this vocabulary
  auto tok = Tokenizer::FromDirectory(FixtureDir() + "/tiny-bpe", opt);
  ASSERT_TRUE(tok.ok()) << tok.status();
  ASSERT_TRUE((*tok)->bos_id().has_value());
  EXPECT_EQ(*(*tok)->bos_id(), 2);
  for (int32_t id : {0, 1, 2, 3}) EXPECT_TRUE((*tok)->IsSpecial(id));
  const json cases = json::parse(ReadAll(FixtureDir() + "/cases.json"));
  ASSERT_GE(cases["tiny_bpe_encode"].size(), 40u);
  for (const json& c : cases["tiny_bpe_encode"]) {
    const std::string text = c["text"].get<std::string>();
    auto ids = (*tok)->Encode(text, /*add_bos=*/false);
    ASSERT_TRUE(ids.ok()) << ids.status();
    EXPECT_EQ(*ids, c["ids"].get<std::vector<int32_t>>()) << "text: '" << text << "'";
    auto with_bos = (*tok)->Encode(text);
    ASSERT_TRUE(with_bos.ok());
    ASSERT_EQ(with_bos->size(), ids->size() + 1);
    EXPECT_EQ(with_bos->front(), 2);
    EXPECT_EQ(*(*tok)->Decode(*with_bos, /*skip_special_tokens=*/true), text);
  }
}

// Added tokens that are not special (added_cases.json, from make_added_cases.py): found in the
// text as HF's tokenizers finds them (leftmost-longest, normalized=false first, single_word,
// lstrip / rstrip).
TEST(AddedTokensTest, TokenizerJsonAddedTokensEncodeAsHuggingFace) {
  const json cases = json::parse(ReadAll(FixtureDir() + "/added_cases.json"))["tiny_bpe_added"];
  json tj = json::parse(ReadAll(FixtureDir() + "/tiny-bpe/tokenizer.json"));
  for (const json& t : cases["added_tokens"]) tj["added_tokens"].push_back(t);
  auto tok = Tokenizer::FromTokenizerJson(tj.dump());
  ASSERT_TRUE(tok.ok()) << tok.status();
  // <L> and <R> take any amount of whitespace beside them: no bytes-per-token bound.
  EXPECT_EQ((*tok)->max_token_bytes(), 0);
  ASSERT_GE(cases["encode"].size(), 25u);
  for (const json& c : cases["encode"]) {
    const std::string text = c["text"].get<std::string>();
    auto ids = (*tok)->Encode(text, /*add_bos=*/false);
    ASSERT_TRUE(ids.ok()) << ids.status();
    EXPECT_EQ(*ids, c["ids"].get<std::vector<int32_t>>()) << "text: '" << text << "'";
  }
  // Added tokens decode as written; invalid UTF-8 is still refused with its offset.
  EXPECT_EQ(*(*tok)->Decode(*(*tok)->Encode("<|user|> hi", false)), "<|user|> hi");
  auto bad = (*tok)->Encode("<|user|>\xff", false);
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("byte offset 8"));
}

// A tokenizer.json field of the wrong JSON type is InvalidArgument naming the field.
TEST(TokenizerLoadTest, TokenizerJsonFieldsOfTheWrongTypeAreNamed) {
  const json good = json::parse(ReadAll(FixtureDir() + "/tiny-bpe/tokenizer.json"));
  ASSERT_TRUE(Tokenizer::FromTokenizerJson(good.dump()).ok());
  struct Case {
    std::function<void(json&)> spoil;
    std::string names;
  };
  const Case cases[] = {
      {[](json& j) { j["model"]["type"] = 7; }, "model.type must be a string"},
      {[](json& j) { j["model"]["ignore_merges"] = "yes"; },
       "model.ignore_merges must be a boolean"},
      {[](json& j) { j["pre_tokenizer"]["use_regex"] = 1; },
       "pre_tokenizer.use_regex must be a boolean"},
      {[](json& j) {
         j["added_tokens"].push_back(
             {{"id", j["model"]["vocab"].size()}, {"content", "<x>"}, {"special", "no"}});
       },
       "added token special must be a boolean"},
      {[](json& j) {
         j["added_tokens"].push_back({{"id", j["model"]["vocab"].size()},
                                      {"content", "<x>"},
                                      {"lstrip", nullptr},
                                      {"rstrip", 0}});
       },
       "added token rstrip must be a boolean"},
  };
  for (const Case& c : cases) {
    json spoiled = good;
    c.spoil(spoiled);
    auto tok = Tokenizer::FromTokenizerJson(spoiled.dump());
    ASSERT_FALSE(tok.ok()) << c.names;
    EXPECT_EQ(tok.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(tok.status().message(), HasSubstr(c.names));
  }
}

// A directory with OPT's vocabulary, an added_tokens.json and OPT's special_tokens_map.json
// (only </s> and <pad> special): transformers' encodings and skip_special_tokens decodings.
TEST(AddedTokensTest, DirectoryWithAddedTokensAndSpecialMapAsTransformers) {
  const json cases = json::parse(ReadAll(FixtureDir() + "/added_cases.json"))["opt_added_dir"];
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / absl::StrCat("llmint8_added_", getpid());
  std::filesystem::create_directories(dir);
  const std::string model = FixtureDir() + "/../../../models/opt-sotu-cpu";
  for (const char* f : {"vocab.json", "merges.txt"}) {
    std::filesystem::copy_file(absl::StrCat(model, "/", f), dir / f,
                               std::filesystem::copy_options::overwrite_existing);
  }
  std::ofstream(dir / "added_tokens.json") << cases["added_tokens_json"].dump();
  std::ofstream(dir / "special_tokens_map.json") << cases["special_tokens_map"].dump();
  auto tok = Tokenizer::FromDirectory(dir.string());
  std::filesystem::remove_all(dir);
  ASSERT_TRUE(tok.ok()) << tok.status();
  for (const json& c : cases["encode"]) {
    const std::string text = c["text"].get<std::string>();
    EXPECT_EQ(*(*tok)->Encode(text, false), c["ids"].get<std::vector<int32_t>>()) << text;
  }
  for (const json& c : cases["decode"]) {
    const auto ids = c["ids"].get<std::vector<int32_t>>();
    EXPECT_EQ(*(*tok)->Decode(ids, /*skip_special_tokens=*/true), c["text"].get<std::string>());
  }
  EXPECT_TRUE((*tok)->IsSpecial(2));
  EXPECT_FALSE((*tok)->IsSpecial(0)) << "<s> is not in OPT's special_tokens_map.json";
}

// added_tokens.json may give a vocabulary token a second id (transformers' slow tokenizer
// loads it so): the text is found as the added id, and both ids decode to it.
TEST(AddedTokensTest, AnAddedTokenThatIsInTheVocabularyUnderAnotherIdGetsBoth) {
  const std::string model = FixtureDir() + "/../../../models/opt-sotu-cpu";
  TokenizerOptions options;
  options.added_tokens = {{"hello", 50265}};  // OPT's vocabulary has "hello" as 31377
  auto tok =
      Tokenizer::FromVocabAndMergesFiles(model + "/vocab.json", model + "/merges.txt", options);
  ASSERT_TRUE(tok.ok()) << tok.status();
  const absl::StatusOr<std::vector<int32_t>> ids = (*tok)->Encode("ahellob", false);
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_THAT(*ids, ::testing::Contains(50265));
  EXPECT_THAT(*ids, ::testing::Not(::testing::Contains(31377)));
  EXPECT_EQ(*(*tok)->Decode(*ids, false), "ahellob");
  EXPECT_EQ(*(*tok)->Decode({31377, 50265}, false), "hellohello");
  // An id that is another token's stays an error.
  options.added_tokens = {{"hello", 2}};
  auto clash =
      Tokenizer::FromVocabAndMergesFiles(model + "/vocab.json", model + "/merges.txt", options);
  ASSERT_FALSE(clash.ok());
  EXPECT_THAT(clash.status().message(), HasSubstr("id 2 is given to two tokens"));
}

// A vocabulary string with a character outside the byte alphabet decodes as its own UTF-8,
// whole (Hugging Face's ByteLevel decoder), not with its byte-alphabet characters mapped.
TEST(TokenizerLoadTest, AVocabularyStringOutsideTheByteAlphabetDecodesAsWritten) {
  json vocab = json::parse(ReadAll(FixtureDir() + "/gpt2-bpe/vocab.json"));
  const std::string mixed = "\u0120a\u00adb";  // "Ġa", a soft hyphen, "b"
  const int32_t id = static_cast<int32_t>(vocab.size());
  vocab[mixed] = id;
  auto tok =
      Tokenizer::FromVocabAndMerges(vocab.dump(), ReadAll(FixtureDir() + "/gpt2-bpe/merges.txt"));
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ(*(*tok)->Decode({id}, false), mixed);
}

// A merge listed twice takes its later rank, as HF's merge map does: " the" is then built from
// the later "Ġ t" and no longer as "Ġt" + "he" -> "Ġthe".
TEST(TokenizerLoadTest, ADuplicateMergeTakesItsLaterRank) {
  const std::string vocab = ReadAll(FixtureDir() + "/gpt2-bpe/vocab.json");
  const std::string merges = ReadAll(FixtureDir() + "/gpt2-bpe/merges.txt");
  auto once = Tokenizer::FromVocabAndMerges(vocab, merges);
  auto twice = Tokenizer::FromVocabAndMerges(vocab, merges + "\u0120 t\n");
  ASSERT_TRUE(once.ok() && twice.ok());
  EXPECT_EQ((*once)->Encode(" the")->size(), 1u);
  EXPECT_GT((*twice)->Encode(" the")->size(), 1u);
}

TEST(TokenizerLoadTest, BadInputsAreErrorsNamingTheProblem) {
  const std::string vocab = ReadAll(FixtureDir() + "/gpt2-bpe/vocab.json");
  struct Bad {
    std::string vocab, merges, what;
  };
  const Bad bad[] = {
      {"{not json", "", "not valid JSON"},
      {"[1, 2]", "", "JSON object"},
      {R"({"a": "x"})", "", "non-integer id"},
      {R"({"a": -1})", "", "outside"},
      {R"({"a": 2097152})", "", "has id 2097152, outside [0, 2097152)"},  // no 64 MiB+ table
      {R"({"a": 1, "b": 1})", "", "two tokens"},
      {R"({"a": 0, "b": 1})", "", "lacks the token for byte"},
      {vocab, "#version: 0.2\nzzzq qqqz\n", "merge 2"},
      {vocab, "#version: 0.2\nabc\n", "merges line 2"},
  };
  for (const Bad& b : bad) {
    auto t = Tokenizer::FromVocabAndMerges(b.vocab, b.merges);
    ASSERT_FALSE(t.ok()) << b.what;
    EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument) << t.status();
    EXPECT_THAT(t.status().message(), HasSubstr(b.what));
  }
  EXPECT_EQ(Tokenizer::FromVocabAndMergesFiles("/nonexistent/vocab.json", "/nonexistent/m.txt")
                .status()
                .code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(Tokenizer::FromDirectory("/nonexistent").status().code(), absl::StatusCode::kNotFound);
  const char* bad_json[] = {
      R"({"model": {"type": "WordPiece", "vocab": {}}})",
      R"({"model": {"type": 7}})",
      R"({"model": {"vocab": {}}, "pre_tokenizer": {"type": "Metaspace"}})",
      R"({"model": {"vocab": {}, "merges": 3}, "pre_tokenizer": {"type": "ByteLevel"}})",
      R"({"model": {"vocab": {}}, "pre_tokenizer": {"type": "ByteLevel", "use_regex": "yes"}})",
      R"(42)",
  };
  for (const char* j : bad_json) {
    auto t = Tokenizer::FromTokenizerJson(j);
    ASSERT_FALSE(t.ok()) << j;
    EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument) << j;
  }
}

TEST(Utf8Test, SanitizeReplacesMaximalInvalidSubparts) {
  const std::string r = "\xEF\xBF\xBD";
  EXPECT_EQ(SanitizeUtf8("abc"), "abc");
  EXPECT_EQ(SanitizeUtf8("\xE2\x82"
                         "A"),
            r + "A");                                  // one subpart of 2 bytes
  EXPECT_EQ(SanitizeUtf8("\xF0\x80\x80"), r + r + r);  // F0 80 is never valid
  EXPECT_EQ(SanitizeUtf8("\xED\xA0\x80"), r + r + r);  // surrogate
  EXPECT_EQ(SanitizeUtf8("\xF0\x9F\xA6"), r);          // truncated 4-byte sequence
  EXPECT_EQ(SanitizeUtf8("\xC3\xA9\xFF\xC3"), "\xC3\xA9" + r + r);
  size_t held = 99;
  EXPECT_EQ(SanitizeUtf8("a\xF0\x9F\xA6", /*hold_back_incomplete=*/true, &held), "a");
  EXPECT_EQ(held, 3u);
  EXPECT_EQ(SanitizeUtf8("a\x80", /*hold_back_incomplete=*/true, &held), "a" + r);
  EXPECT_EQ(held, 0u);
}

}  // namespace
}  // namespace llmint8::coordinator
