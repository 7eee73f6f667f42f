// libFuzzer target: the tokenizer of the bundled OPT model (models/opt-sotu-cpu/, loaded once)
// on a prompt's arbitrary bytes and on arbitrary token ids (read from the same bytes, 4 per id,
// mostly near the vocabulary range and sometimes raw: negative, huge). Besides "no crash, no
// sanitizer report", it checks the promises of coordinator/tokenizer.h:
//   Encode:  valid UTF-8 encodes to ids in range, never a special id (special-token text is
//            plain text), BOS first when asked; Decode(Encode(text)) == text; the piece cache
//            does not change the ids; invalid UTF-8 is InvalidArgument naming the byte offset
//            FindInvalidUtf8 finds;
//   Decode:  InvalidArgument for any id outside the vocabulary; otherwise valid UTF-8 equal to
//            SanitizeUtf8(DecodeBytes(ids)), and it encodes back to itself;
//   DecodeStream: every piece is valid UTF-8; a bad id is an error leaving the stream as it
//            was; the pieces and Finish() concatenate to Decode(good ids, skip_special).
// The vocabulary is read from $LLMINT8_SOURCE_DIR/models/opt-sotu-cpu, else from the source
// tree the fuzzer was configured from. Build and run: coordinator/fuzz/README.md.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "coordinator/tokenizer.h"

namespace {

using llmint8::coordinator::DecodeStream;
using llmint8::coordinator::FindInvalidUtf8;
using llmint8::coordinator::SanitizeUtf8;
using llmint8::coordinator::Tokenizer;
using llmint8::coordinator::TokenizerOptions;

void Check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "invariant broken: %s\n", what);
    std::abort();
  }
}

std::unique_ptr<Tokenizer> Load(size_t cache_capacity) {
  const char* src = std::getenv("LLMINT8_SOURCE_DIR");
  const std::string dir =
      std::string(src != nullptr ? src : LLMINT8_DEFAULT_SOURCE_DIR) + "/models/opt-sotu-cpu";
  TokenizerOptions options;
  options.add_bos = true;  // as the service encodes prompts for OPT
  options.cache_capacity = cache_capacity;
  auto tok = Tokenizer::FromVocabAndMergesFiles(dir + "/vocab.json", dir + "/merges.txt", options);
  if (!tok.ok()) {
    std::fprintf(stderr, "cannot load the tokenizer from %s: %s\n", dir.c_str(),
                 tok.status().ToString().c_str());
    std::abort();
  }
  return *std::move(tok);
}

// The served tokenizer (with its piece cache) and one without a cache.
const Tokenizer& Tok() {
  static const Tokenizer* tok = Load(TokenizerOptions().cache_capacity).release();
  return *tok;
}
const Tokenizer& Uncached() {
  static const Tokenizer* tok = Load(0).release();
  return *tok;
}

// Debian's abseil has its own string_view type.
bool Contains(absl::string_view haystack, const std::string& needle) {
  return haystack.find(needle) != absl::string_view::npos;
}

void CheckEncode(const std::string& text) {
  const Tokenizer& tok = Tok();
  const auto ids = tok.Encode(text, /*add_bos=*/false);
  if (const auto bad = FindInvalidUtf8(text); bad.has_value()) {
    Check(!ids.ok() && ids.status().code() == absl::StatusCode::kInvalidArgument,
          "invalid UTF-8 was encoded");
    Check(Contains(ids.status().message(), "offset " + std::to_string(*bad) + " "),
          "the error does not name FindInvalidUtf8's offset");
    Check(!FindInvalidUtf8(SanitizeUtf8(text)).has_value(), "SanitizeUtf8 left invalid UTF-8");
    return;
  }
  Check(ids.ok(), "valid UTF-8 did not encode");
  Check(SanitizeUtf8(text) == text, "SanitizeUtf8 changed valid UTF-8");
  Check(ids->empty() == text.empty(), "empty ids for non-empty text, or the reverse");
  for (int32_t id : *ids) {
    Check(id >= 0 && id < tok.vocab_size(), "Encode gave an id outside the vocabulary");
    Check(!tok.IsSpecial(id), "Encode gave a special id (control-token injection)");
  }
  const auto uncached = Uncached().Encode(text, /*add_bos=*/false);
  Check(uncached.ok() && *uncached == *ids, "the piece cache changed the ids");

  const auto back = tok.Decode(*ids);
  Check(back.ok() && *back == text, "Decode(Encode(text)) != text");
  const auto raw = tok.DecodeBytes(*ids);
  Check(raw.ok() && *raw == text, "DecodeBytes(Encode(text)) != text");

  const auto with_bos = tok.Encode(text);  // options.add_bos
  Check(with_bos.ok() && with_bos->size() == ids->size() + 1 &&
            with_bos->front() == *tok.bos_id() &&
            std::equal(ids->begin(), ids->end(), with_bos->begin() + 1),
        "Encode with BOS is not BOS + Encode without");
  const auto skipped = tok.Decode(*with_bos, /*skip_special_tokens=*/true);
  Check(skipped.ok() && *skipped == text, "Decode(BOS + ids, skip_special) != text");

  DecodeStream stream(tok);
  std::string joined;
  for (int32_t id : *with_bos) {
    const auto piece = stream.Next(id);
    Check(piece.ok() && !FindInvalidUtf8(*piece).has_value(), "a stream piece is not UTF-8");
    joined += *piece;
  }
  joined += stream.Finish();
  Check(joined == text, "the stream of Encode(text) does not concatenate to text");
}

// Ids from 4 bytes each: mostly in [-8, vocab_size + 8), a quarter raw int32.
std::vector<int32_t> IdsOf(const uint8_t* data, size_t size, int32_t vocab_size) {
  std::vector<int32_t> ids;
  for (size_t i = 0; i + 4 <= size; i += 4) {
    uint32_t r;
    std::memcpy(&r, data + i, 4);
    if (r >> 30 == 3) {
      ids.push_back(static_cast<int32_t>(r));
    } else {
      ids.push_back(
          static_cast<int32_t>((r & 0x3FFFFFFF) % static_cast<uint32_t>(vocab_size + 16)) - 8);
    }
  }
  return ids;
}

void CheckDecode(const std::vector<int32_t>& ids) {
  const Tokenizer& tok = Tok();
  std::vector<int32_t> good;
  bool all_good = true;
  std::string bytes;
  for (int32_t id : ids) {
    const int32_t one[1] = {id};
    const auto b = tok.DecodeBytes(one);
    if (b.ok()) {
      Check(id >= 0 && id < tok.vocab_size(), "DecodeBytes took an id outside the vocabulary");
      good.push_back(id);
      bytes += *b;
    } else {
      Check(b.status().code() == absl::StatusCode::kInvalidArgument,
            "a bad id is not InvalidArgument");
      all_good = false;
    }
  }
  for (bool skip : {false, true}) {
    const auto text = tok.Decode(ids, skip);
    const auto raw = tok.DecodeBytes(ids, skip);
    Check(text.ok() == all_good && raw.ok() == all_good, "Decode's verdict differs from its ids'");
    if (!all_good) {
      Check(text.status().code() == absl::StatusCode::kInvalidArgument,
            "Decode of a bad id is not InvalidArgument");
    }
  }
  const auto good_bytes = tok.DecodeBytes(good);
  Check(good_bytes.ok() && *good_bytes == bytes, "DecodeBytes is not the concatenation");
  const auto good_text = tok.Decode(good);
  Check(good_text.ok() && *good_text == SanitizeUtf8(bytes), "Decode is not SanitizeUtf8(bytes)");
  Check(!FindInvalidUtf8(*good_text).has_value(), "Decode gave invalid UTF-8");

  // The decoded text encodes and decodes back to itself.
  const auto again = tok.Encode(*good_text, /*add_bos=*/false);
  Check(again.ok(), "the decoded text did not encode");
  const auto again_text = tok.Decode(*again);
  Check(again_text.ok() && *again_text == *good_text, "Decode(Encode(Decode(ids))) changed");

  for (bool skip : {true, false}) {
    DecodeStream stream(tok, skip);
    std::string joined;
    for (int32_t id : ids) {
      const auto piece = stream.Next(id);
      if (!piece.ok()) {
        Check(piece.status().code() == absl::StatusCode::kInvalidArgument,
              "a bad id in the stream is not InvalidArgument");
        continue;
      }
      Check(!FindInvalidUtf8(*piece).has_value(), "a stream piece is not UTF-8");
      joined += *piece;
    }
    joined += stream.Finish();
    const auto expect = tok.Decode(good, skip);
    Check(expect.ok() && joined == *expect, "the stream does not concatenate to Decode");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  CheckEncode(std::string(reinterpret_cast<const char*>(data), size));
  CheckDecode(IdsOf(data, size, Tok().vocab_size()));
  return 0;
}
