#include "coordinator/tokenizer.h"

#include <unicode/uchar.h>

#include <algorithm>
#include <array>
#include <filesystem>
#include <optional>
#include <queue>
#include <type_traits>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/file.h"
#include "common/json_text.h"
#include "common/status_macros.h"
#include "coordinator/utf8.h"
#include "nlohmann/json.hpp"

namespace llmint8::coordinator {
namespace {

using json = nlohmann::json;

// Debian's abseil has its own string_view type; the public API uses std::string_view.
absl::string_view Av(std::string_view s) { return absl::string_view(s.data(), s.size()); }

// Pieces up to this many bytes are cached; longer ones (rare, and unbounded in size) are not.
constexpr size_t kMaxCachedPieceBytes = 128;
// Ids beyond this are rejected at load: no real vocabulary is near (the largest have 256 Ki
// tokens), and id_to_bytes_ is dense, so one stray id in a file costs up to 64 MiB, not 512.
constexpr int64_t kMaxVocabId = 1 << 21;
constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD

// ---- GPT-2's byte <-> printable character map ---------------------------------------------------

struct ByteMap {
  std::array<char32_t, 256> to_char;  // byte -> code point (all < 324)
  std::array<int16_t, 324> to_byte;   // code point -> byte, or -1
};

const ByteMap& GetByteMap() {
  static const ByteMap* map = [] {
    auto* m = new ByteMap;
    m->to_byte.fill(-1);
    int next = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
      m->to_char[b] = printable ? b : 256 + next++;
      m->to_byte[m->to_char[b]] = static_cast<int16_t>(b);
    }
    return m;
  }();
  return *map;
}

// Raw bytes of a vocabulary string: each character of the byte alphabet becomes its byte. A
// string with any other character (only special tokens have one) is its own UTF-8, whole, as
// Hugging Face's ByteLevel decoder takes it.
std::string VocabStringToBytes(std::string_view token) {
  const ByteMap& map = GetByteMap();
  std::string out;
  for (size_t i = 0; i < token.size();) {
    const Utf8Seq seq = ReadUtf8(token, i);
    if (seq.kind != Utf8Seq::kValid || seq.cp >= map.to_byte.size() || map.to_byte[seq.cp] < 0) {
      return std::string(token);
    }
    out.push_back(static_cast<char>(map.to_byte[seq.cp]));
    i += seq.len;
  }
  return out;
}

std::string ByteToVocabString(uint8_t b) {
  std::string s;
  AppendUtf8(GetByteMap().to_char[b], s);
  return s;
}

// ---- GPT-2 pre-tokenization ---------------------------------------------------------------------

bool IsLetter(char32_t c) { return (U_GET_GC_MASK(static_cast<UChar32>(c)) & U_GC_L_MASK) != 0; }
bool IsNumber(char32_t c) { return (U_GET_GC_MASK(static_cast<UChar32>(c)) & U_GC_N_MASK) != 0; }
bool IsSpace(char32_t c) { return u_isUWhiteSpace(static_cast<UChar32>(c)); }
bool IsOther(char32_t c) { return !IsSpace(c) && !IsLetter(c) && !IsNumber(c); }

// End (exclusive, in code points) of the match of
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// starting at cps[i], with the alternatives tried in order as a backtracking regex does.
size_t MatchPiece(const std::vector<char32_t>& cps, size_t i) {
  const size_t n = cps.size();
  const char32_t c = cps[i];
  if (c == '\'' && i + 1 < n) {
    const char32_t c1 = cps[i + 1];
    if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd') return i + 2;
    if (i + 2 < n) {
      const char32_t c2 = cps[i + 2];
      if ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') || (c1 == 'l' && c2 == 'l')) {
        return i + 3;
      }
    }
  }
  // " ?X+": an optional U+0020, then a run of one class. A space cannot start any run itself.
  const size_t start = c == ' ' ? i + 1 : i;
  if (start < n) {
    for (bool (*cls)(char32_t) : {&IsLetter, &IsNumber, &IsOther}) {
      if (!cls(cps[start])) continue;
      size_t j = start + 1;
      while (j < n && cls(cps[j])) ++j;
      return j;
    }
  }
  // Whitespace: the whole run if it ends the text, else all but its last character (which then
  // prefixes the next piece), or the single character when the run has one.
  size_t j = i + 1;
  while (j < n && IsSpace(cps[j])) ++j;
  if (j == n || j - i == 1) return j;
  return j - 1;
}

absl::StatusOr<json> ParseJson(std::string_view text, std::string_view what) {
  RETURN_IF_ERROR(CheckUntrustedJson(text, what));
  json j = json::parse(text.begin(), text.end(), /*cb=*/nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded())
    return absl::InvalidArgumentError(absl::StrCat(Av(what), " is not valid JSON"));
  return j;
}

}  // namespace

// Builds a Tokenizer step by step; friend of Tokenizer.
class TokenizerBuilder {
 public:
  explicit TokenizerBuilder(TokenizerOptions options) : tok_(new Tokenizer) {
    tok_->options_ = std::move(options);
  }

  // Adds a vocabulary entry (string form in the byte alphabet, or verbatim when `verbatim`).
  // `second_id`: a token already in the vocabulary under another id may have this one too
  // (added_tokens.json's); its text still encodes to the first id here.
  absl::Status AddToken(const std::string& token, int64_t id, bool verbatim, bool special,
                        bool second_id = false) {
    if (id < 0 || id >= kMaxVocabId) {
      return absl::InvalidArgumentError(
          absl::StrCat("token '", token, "' has id ", id, ", outside [0, ", kMaxVocabId, ")"));
    }
    const auto id32 = static_cast<int32_t>(id);
    if (static_cast<size_t>(id) >= tok_->id_to_bytes_.size()) {
      tok_->id_to_bytes_.resize(id + 1);
      tok_->id_exists_.resize(id + 1, false);
    }
    auto [it, inserted] = tok_->token_to_id_.emplace(token, id32);
    const bool another_id = !inserted && it->second != id32;
    if (another_id && !second_id) {
      return absl::InvalidArgumentError(
          absl::StrCat("token '", token, "' has two ids: ", it->second, " and ", id));
    }
    if (tok_->id_exists_[id] && (inserted || another_id)) {
      return absl::InvalidArgumentError(absl::StrCat("id ", id, " is given to two tokens"));
    }
    tok_->id_exists_[id] = true;
    tok_->id_to_bytes_[id] = verbatim ? token : VocabStringToBytes(token);
    tok_->max_token_bytes_ =
        std::max(tok_->max_token_bytes_, static_cast<int64_t>(tok_->id_to_bytes_[id].size()));
    if (special) tok_->special_ids_.insert(id32);
    return absl::OkStatus();
  }

  absl::Status AddVocab(const json& vocab) {
    if (!vocab.is_object()) {
      return absl::InvalidArgumentError("vocabulary must be a JSON object {token: id}");
    }
    for (const auto& [token, id] : vocab.items()) {
      if (!id.is_number_integer()) {
        return absl::InvalidArgumentError(
            absl::StrCat("token '", token, "' has a non-integer id ", JsonSnippet(id)));
      }
      RETURN_IF_ERROR(AddToken(token, id.get<int64_t>(), /*verbatim=*/false, /*special=*/false));
    }
    return absl::OkStatus();
  }

  absl::Status AddMerge(absl::string_view left, absl::string_view right, size_t line) {
    auto l = tok_->token_to_id_.find(left);
    auto r = tok_->token_to_id_.find(right);
    auto m = tok_->token_to_id_.find(absl::StrCat(left, right));
    if (l == tok_->token_to_id_.end() || r == tok_->token_to_id_.end() ||
        m == tok_->token_to_id_.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("merge ", line, " ('", left, "' + '", right,
                       "'): a part or the merged token is not in the vocabulary"));
    }
    const uint64_t key =
        (static_cast<uint64_t>(l->second) << 32) | static_cast<uint32_t>(r->second);
    // A pair listed twice takes its later rank, as HF's merge map does.
    tok_->merges_.insert_or_assign(key, std::make_pair(static_cast<int32_t>(rank_++), m->second));
    return absl::OkStatus();
  }

  absl::Status AddMergesTxt(absl::string_view merges_txt) {
    size_t line_no = 0;
    for (absl::string_view line : absl::StrSplit(merges_txt, '\n')) {
      ++line_no;
      if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
      if (line.empty() || (line_no == 1 && absl::StartsWith(line, "#version"))) continue;
      std::vector<absl::string_view> parts = absl::StrSplit(line, ' ');
      if (parts.size() != 2 || parts[0].empty() || parts[1].empty()) {
        return absl::InvalidArgumentError(
            absl::StrCat("merges line ", line_no,
                         " must be two tokens separated by one space, got '", line, "'"));
      }
      RETURN_IF_ERROR(AddMerge(parts[0], parts[1], line_no));
    }
    return absl::OkStatus();
  }

  absl::StatusOr<std::unique_ptr<Tokenizer>> Finish() {
    Tokenizer& t = *tok_;
    for (const auto& [content, id] : t.options_.added_tokens) {
      const bool special =
          std::find(t.options_.special_tokens.begin(), t.options_.special_tokens.end(), content) !=
          t.options_.special_tokens.end();
      if (auto it = t.token_to_id_.find(content); it != t.token_to_id_.end() && it->second == id) {
        // Already in the vocabulary (or tokenizer.json's added tokens): still found in the text
        // as an added token, as transformers registers it, unless tokenizer.json's flags for it
        // stand already.
        if (!special && !t.added_.Contains(content)) t.added_.Add({.content = content, .id = id});
        continue;
      }
      // One in the vocabulary under another id gets this id too; the text is found as this
      // one (the added token), as transformers' slow tokenizer loads added_tokens.json.
      if (absl::Status s = AddToken(content, id, /*verbatim=*/true, special, /*second_id=*/true);
          !s.ok()) {
        return absl::InvalidArgumentError(absl::StrCat("added_tokens.json: ", s.message()));
      }
      if (!special) t.added_.Add({.content = content, .id = id});
    }
    for (int b = 0; b < 256; ++b) {
      auto it = t.token_to_id_.find(ByteToVocabString(static_cast<uint8_t>(b)));
      if (it == t.token_to_id_.end()) {
        return absl::InvalidArgumentError(
            absl::StrCat("the vocabulary lacks the token for byte ", b,
                         "; only byte-level BPE vocabularies (all 256 byte tokens) are supported"));
      }
      t.byte_to_id_[b] = it->second;
    }
    for (const std::string& s : t.options_.special_tokens) {
      if (auto it = t.token_to_id_.find(s); it != t.token_to_id_.end()) {
        t.special_ids_.insert(it->second);
      }
    }
    if (t.options_.bos_id.has_value()) {
      const int32_t id = *t.options_.bos_id;
      if (id < 0 || id >= t.vocab_size() || !t.id_exists_[id]) {
        return absl::InvalidArgumentError(absl::StrCat("bos_id ", id, " is not in the vocabulary"));
      }
      t.bos_id_ = id;
    } else if (auto it = t.token_to_id_.find(t.options_.bos_token); it != t.token_to_id_.end()) {
      t.bos_id_ = it->second;
    }
    return std::move(tok_);
  }

  // `obj`'s string or bool field `key` (`where` names obj in errors): `fallback` when it is
  // absent or null, InvalidArgument when it holds another type.
  template <typename T>
  static absl::StatusOr<T> Field(const json& obj, std::string_view where, const char* key,
                                 T fallback) {
    const auto it = obj.find(key);
    if (it == obj.end() || it->is_null()) return fallback;
    const bool fits = std::is_same_v<T, bool> ? it->is_boolean() : it->is_string();
    if (!fits) {
      return absl::InvalidArgumentError(
          absl::StrCat("tokenizer.json ", std::string(where), key, " must be a ",
                       std::is_same_v<T, bool> ? "boolean" : "string", ", got ", JsonSnippet(*it)));
    }
    return it->template get<T>();
  }

  // Everything past JSON parsing; every field's type is checked before it is read.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromTokenizerJson(const json& root,
                                                                      TokenizerOptions options) {
    if (!root.is_object() || !root.contains("model") || !root["model"].is_object()) {
      return absl::InvalidArgumentError("tokenizer.json has no \"model\" object");
    }
    const json& model = root["model"];
    ASSIGN_OR_RETURN(const std::string type, Field<std::string>(model, "model.", "type", "BPE"));
    if (type != "BPE") {
      return absl::InvalidArgumentError(absl::StrCat("tokenizer.json model.type is '", type,
                                                     "'; only byte-level \"BPE\" is supported"));
    }
    for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
      if (model.contains(key) && model[key].is_string() && !model[key].get<std::string>().empty()) {
        return absl::InvalidArgumentError(
            absl::StrCat("tokenizer.json model.", key, " is set; GPT-2 style BPE has none"));
      }
    }
    if (root.contains("normalizer") && !root["normalizer"].is_null()) {
      return absl::InvalidArgumentError(
          "tokenizer.json has a normalizer; GPT-2 style BPE has none");
    }
    const json* pre = root.contains("pre_tokenizer") ? &root["pre_tokenizer"] : nullptr;
    std::string pre_type;
    if (pre != nullptr && pre->is_object()) {
      ASSIGN_OR_RETURN(pre_type, Field<std::string>(*pre, "pre_tokenizer.", "type", ""));
    }
    if (pre_type == "ByteLevel") {
      ASSIGN_OR_RETURN(const bool prefix_space,
                       Field<bool>(*pre, "pre_tokenizer.", "add_prefix_space", false));
      ASSIGN_OR_RETURN(const bool use_regex,
                       Field<bool>(*pre, "pre_tokenizer.", "use_regex", true));
      if (prefix_space || !use_regex) {
        return absl::InvalidArgumentError(
            "tokenizer.json ByteLevel pre_tokenizer must have add_prefix_space=false and "
            "use_regex=true (GPT-2's)");
      }
    } else {
      return absl::InvalidArgumentError(
          "tokenizer.json pre_tokenizer must be {\"type\": \"ByteLevel\"} (GPT-2 byte-level BPE)");
    }
    TokenizerBuilder b(std::move(options));
    ASSIGN_OR_RETURN(b.tok_->ignore_merges_, Field<bool>(model, "model.", "ignore_merges", false));
    if (!model.contains("vocab"))
      return absl::InvalidArgumentError("tokenizer.json lacks model.vocab");
    RETURN_IF_ERROR(b.AddVocab(model["vocab"]));
    if (root.contains("added_tokens")) {
      if (!root["added_tokens"].is_array()) {
        return absl::InvalidArgumentError("tokenizer.json added_tokens must be an array");
      }
      for (const json& t : root["added_tokens"]) {
        if (!t.is_object() || !t.contains("id") || !t["id"].is_number_integer() ||
            !t.contains("content") || !t["content"].is_string()) {
          return absl::InvalidArgumentError(
              absl::StrCat("tokenizer.json added token needs integer id and string content, got ",
                           JsonSnippet(t)));
        }
        ASSIGN_OR_RETURN(const bool special, Field<bool>(t, "added token ", "special", false));
        RETURN_IF_ERROR(b.AddToken(t["content"].get<std::string>(), t["id"].get<int64_t>(),
                                   /*verbatim=*/true, special));
        if (!special) {
          ASSIGN_OR_RETURN(const bool single_word,
                           Field<bool>(t, "added token ", "single_word", false));
          ASSIGN_OR_RETURN(const bool lstrip, Field<bool>(t, "added token ", "lstrip", false));
          ASSIGN_OR_RETURN(const bool rstrip, Field<bool>(t, "added token ", "rstrip", false));
          ASSIGN_OR_RETURN(const bool normalized,
                           Field<bool>(t, "added token ", "normalized", true));
          b.tok_->added_.Add({.content = t["content"].get<std::string>(),
                              .id = static_cast<int32_t>(t["id"].get<int64_t>()),
                              .single_word = single_word,
                              .lstrip = lstrip,
                              .rstrip = rstrip,
                              .normalized = normalized});
          if (lstrip || rstrip) b.tok_->strips_whitespace_ = true;
        }
      }
    }
    const auto merges_it = model.find("merges");
    const json merges = merges_it == model.end() ? json::array() : *merges_it;
    if (!merges.is_array())
      return absl::InvalidArgumentError("tokenizer.json model.merges must be an array");
    size_t n = 0;
    for (const json& m : merges) {
      ++n;
      if (m.is_string()) {
        const std::string s = m.get<std::string>();
        std::vector<absl::string_view> parts = absl::StrSplit(s, ' ');
        if (parts.size() != 2) {
          return absl::InvalidArgumentError(
              absl::StrCat("tokenizer.json merge ", n, " must be \"left right\", got '", s, "'"));
        }
        RETURN_IF_ERROR(b.AddMerge(parts[0], parts[1], n));
      } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
        RETURN_IF_ERROR(b.AddMerge(m[0].get<std::string>(), m[1].get<std::string>(), n));
      } else {
        return absl::InvalidArgumentError(
            absl::StrCat("tokenizer.json merge ", n,
                         " must be \"left right\" or [left, right], got ", JsonSnippet(m)));
      }
    }
    return b.Finish();
  }

 private:
  std::unique_ptr<Tokenizer> tok_;
  size_t rank_ = 0;
};

// ---- Loading ------------------------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromVocabAndMerges(
    std::string_view vocab_json, std::string_view merges_txt, TokenizerOptions options) {
  TokenizerBuilder b(std::move(options));
  ASSIGN_OR_RETURN(json vocab, ParseJson(vocab_json, "vocab.json"));
  RETURN_IF_ERROR(b.AddVocab(vocab));
  RETURN_IF_ERROR(b.AddMergesTxt(Av(merges_txt)));
  return b.Finish();
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromTokenizerJson(
    std::string_view tokenizer_json, TokenizerOptions options) {
  ASSIGN_OR_RETURN(json root, ParseJson(tokenizer_json, "tokenizer.json"));
  return TokenizerBuilder::FromTokenizerJson(root, std::move(options));
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromVocabAndMergesFiles(
    const std::string& vocab_json_path, const std::string& merges_txt_path,
    TokenizerOptions options) {
  ASSIGN_OR_RETURN(std::string vocab, ReadFileToString(vocab_json_path));
  ASSIGN_OR_RETURN(std::string merges, ReadFileToString(merges_txt_path));
  return FromVocabAndMerges(vocab, merges, std::move(options));
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromTokenizerJsonFile(
    const std::string& path, TokenizerOptions options) {
  ASSIGN_OR_RETURN(std::string text, ReadFileToString(path));
  return FromTokenizerJson(text, std::move(options));
}

bool Tokenizer::DirectoryHasFiles(const std::string& dir) {
  const std::filesystem::path d(dir);
  std::error_code ec;
  return std::filesystem::exists(d / "tokenizer.json", ec) ||
         (std::filesystem::exists(d / "vocab.json", ec) &&
          std::filesystem::exists(d / "merges.txt", ec));
}

namespace {

// A special_tokens_map.json token: "</s>" or {"content": "</s>", ...}.
void CollectSpecialToken(const json& v, std::vector<std::string>& out) {
  if (v.is_string()) {
    out.push_back(v.get<std::string>());
  } else if (v.is_object() && v.contains("content") && v["content"].is_string()) {
    out.push_back(v["content"].get<std::string>());
  }
}

// <dir>/<name> when it exists (nullopt when not), which must hold a JSON object.
absl::StatusOr<std::optional<json>> ReadJsonObjectFile(const std::filesystem::path& dir,
                                                       const char* name, const char* shape) {
  std::error_code ec;
  if (!std::filesystem::exists(dir / name, ec)) return std::nullopt;
  ASSIGN_OR_RETURN(const std::string text, ReadFileToString((dir / name).string()));
  ASSIGN_OR_RETURN(json j, ParseJson(text, name));
  if (!j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(name, " must be a JSON object ", shape));
  }
  return j;
}

// The special tokens and added tokens `dir` names besides the vocabulary, into `options`.
absl::Status ReadTokenizerExtras(const std::filesystem::path& dir, TokenizerOptions& options) {
  ASSIGN_OR_RETURN(const std::optional<json> map,
                   ReadJsonObjectFile(dir, "special_tokens_map.json", "{name: token}"));
  if (map.has_value()) {
    std::vector<std::string> special;
    for (const auto& [name, value] : map->items()) {
      // additional_special_tokens: a list of tokens (one level; nothing deeper is read).
      if (value.is_array()) {
        for (const json& e : value) CollectSpecialToken(e, special);
      } else {
        CollectSpecialToken(value, special);
      }
    }
    options.special_tokens = std::move(special);
  }
  ASSIGN_OR_RETURN(const std::optional<json> added,
                   ReadJsonObjectFile(dir, "added_tokens.json", "{token: id}"));
  if (added.has_value()) {
    for (const auto& [content, id] : added->items()) {
      if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() >= kMaxVocabId ||
          content.empty()) {
        return absl::InvalidArgumentError(absl::StrCat("added_tokens.json: token '", content,
                                                       "' needs a non-empty text and an id in [0, ",
                                                       kMaxVocabId, "), got ", JsonSnippet(id)));
      }
      options.added_tokens.emplace_back(content, static_cast<int32_t>(id.get<int64_t>()));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromDirectory(const std::string& dir,
                                                                    TokenizerOptions options) {
  const std::filesystem::path d(dir);
  std::error_code ec;
  RETURN_IF_ERROR(ReadTokenizerExtras(d, options));
  if (std::filesystem::exists(d / "tokenizer.json", ec)) {
    return FromTokenizerJsonFile((d / "tokenizer.json").string(), std::move(options));
  }
  if (!std::filesystem::exists(d / "vocab.json", ec)) {
    return absl::NotFoundError(
        absl::StrCat(dir, " has neither tokenizer.json nor vocab.json + merges.txt"));
  }
  return FromVocabAndMergesFiles((d / "vocab.json").string(), (d / "merges.txt").string(),
                                 std::move(options));
}

// ---- Encoding -----------------------------------------------------------------------------------

std::vector<int32_t> Tokenizer::MergePiece(std::string_view piece) const {
  const size_t n = piece.size();
  std::vector<int32_t> ids(n);
  for (size_t i = 0; i < n; ++i) ids[i] = byte_to_id_[static_cast<uint8_t>(piece[i])];
  if (ignore_merges_) {
    std::string s;
    for (char ch : piece) s += ByteToVocabString(static_cast<uint8_t>(ch));
    if (auto it = token_to_id_.find(s); it != token_to_id_.end()) return {it->second};
  }
  if (n < 2) return ids;
  // Symbols form a linked list; a min-heap holds candidate merges ordered by (rank, position).
  // An entry is stale when either symbol has changed since it was pushed. Lowest rank first and,
  // within a rank, leftmost first: the same result as GPT-2's "merge every occurrence of the
  // best pair" loop, in O(n log n) for long pieces.
  std::vector<int32_t> prev(n), next(n);
  for (size_t i = 0; i < n; ++i) {
    prev[i] = static_cast<int32_t>(i) - 1;
    next[i] = i + 1 < n ? static_cast<int32_t>(i + 1) : -1;
  }
  struct Cand {
    int32_t rank, pos, right, left_id, right_id, merged;
    bool operator>(const Cand& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::priority_queue<Cand, std::vector<Cand>, std::greater<Cand>> heap;
  auto push = [&](int32_t i) {
    if (i < 0 || next[i] < 0) return;
    const int32_t j = next[i];
    const uint64_t key = (static_cast<uint64_t>(ids[i]) << 32) | static_cast<uint32_t>(ids[j]);
    if (auto it = merges_.find(key); it != merges_.end()) {
      heap.push({it->second.first, i, j, ids[i], ids[j], it->second.second});
    }
  };
  for (size_t i = 0; i + 1 < n; ++i) push(static_cast<int32_t>(i));
  std::vector<bool> alive(n, true);
  while (!heap.empty()) {
    const Cand c = heap.top();
    heap.pop();
    if (!alive[c.pos] || next[c.pos] != c.right || ids[c.pos] != c.left_id ||
        ids[c.right] != c.right_id) {
      continue;
    }
    ids[c.pos] = c.merged;
    alive[c.right] = false;
    next[c.pos] = next[c.right];
    if (next[c.pos] >= 0) prev[next[c.pos]] = c.pos;
    push(prev[c.pos]);
    push(c.pos);
  }
  std::vector<int32_t> out;
  for (int32_t i = 0; i >= 0; i = next[i]) out.push_back(ids[i]);
  return out;
}

void Tokenizer::EncodePiece(std::string_view piece, std::vector<int32_t>& out) const {
  const bool cacheable = options_.cache_capacity > 0 && piece.size() <= kMaxCachedPieceBytes;
  if (cacheable) {
    absl::MutexLock lock(&cache_mu_);
    if (auto it = cache_.find(Av(piece)); it != cache_.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int32_t> ids = MergePiece(piece);
  out.insert(out.end(), ids.begin(), ids.end());
  if (cacheable) {
    // A full cache starts over; its entries are freed after the lock (every Encode waits on it).
    absl::flat_hash_map<std::string, std::vector<int32_t>> old;
    absl::MutexLock lock(&cache_mu_);
    if (cache_.size() >= options_.cache_capacity) old.swap(cache_);
    cache_.emplace(std::string(piece), std::move(ids));
  }
}

absl::StatusOr<std::vector<int32_t>> Tokenizer::Encode(std::string_view text) const {
  return Encode(text, options_.add_bos);
}

absl::StatusOr<std::vector<int32_t>> Tokenizer::Encode(std::string_view text, bool add_bos) const {
  std::vector<int32_t> out;
  if (add_bos) {
    if (!bos_id_.has_value()) {
      return absl::FailedPreconditionError(
          absl::StrCat("add_bos is set but the vocabulary has no '", options_.bos_token,
                       "' token; set TokenizerOptions::bos_id"));
    }
    out.push_back(*bos_id_);
  }
  if (added_.empty()) {
    RETURN_IF_ERROR(EncodeWords(text, 0, out));
    return out;
  }
  // Segments in order: the first invalid byte of the text is the first one reported (an added
  // token is valid UTF-8, so none lies inside a match).
  absl::Status status;
  added_.Split(
      text,
      [&](std::string_view between) {
        if (status.ok()) status = EncodeWords(between, between.data() - text.data(), out);
      },
      [&](int32_t id) { out.push_back(id); });
  if (!status.ok()) return status;
  return out;
}

absl::Status Tokenizer::EncodeWords(std::string_view text, size_t offset,
                                    std::vector<int32_t>& out) const {
  std::vector<char32_t> cps;
  std::vector<size_t> offsets;  // byte offset of each code point, plus the end
  cps.reserve(text.size());
  offsets.reserve(text.size() + 1);
  for (size_t i = 0; i < text.size();) {
    const Utf8Seq seq = ReadUtf8(text, i);
    if (seq.kind != Utf8Seq::kValid) {
      return absl::InvalidArgumentError(absl::StrCat(
          "text is not valid UTF-8 at byte offset ", offset + i, " (byte 0x",
          absl::Hex(static_cast<uint8_t>(text[i]), absl::kZeroPad2), "); send UTF-8 text"));
    }
    cps.push_back(seq.cp);
    offsets.push_back(i);
    i += seq.len;
  }
  offsets.push_back(text.size());
  for (size_t i = 0; i < cps.size();) {
    const size_t j = MatchPiece(cps, i);
    EncodePiece(text.substr(offsets[i], offsets[j] - offsets[i]), out);
    i = j;
  }
  return absl::OkStatus();
}

std::optional<int32_t> Tokenizer::TokenToId(std::string_view token) const {
  auto it = token_to_id_.find(Av(token));
  if (it == token_to_id_.end()) return std::nullopt;
  return it->second;
}

// ---- Decoding -----------------------------------------------------------------------------------

absl::StatusOr<std::string> Tokenizer::DecodeBytes(absl::Span<const int32_t> ids,
                                                   bool skip_special_tokens) const {
  std::string out;
  for (size_t k = 0; k < ids.size(); ++k) {
    const int32_t id = ids[k];
    if (id < 0 || id >= vocab_size() || !id_exists_[id]) {
      return absl::InvalidArgumentError(absl::StrCat("token id ", id, " (position ", k,
                                                     ") is not in the vocabulary (ids 0..",
                                                     vocab_size() - 1, ")"));
    }
    if (skip_special_tokens && IsSpecial(id)) continue;
    out += id_to_bytes_[id];
  }
  return out;
}

absl::StatusOr<std::string> Tokenizer::Decode(absl::Span<const int32_t> ids,
                                              bool skip_special_tokens) const {
  ASSIGN_OR_RETURN(std::string bytes, DecodeBytes(ids, skip_special_tokens));
  return SanitizeUtf8(bytes);
}

absl::StatusOr<std::string> DecodeStream::Next(int32_t id) {
  const int32_t one[1] = {id};
  ASSIGN_OR_RETURN(std::string bytes, tokenizer_.DecodeBytes(one, skip_special_tokens_));
  pending_ += bytes;
  size_t held = 0;
  std::string out = SanitizeUtf8(pending_, /*hold_back_incomplete=*/true, &held);
  pending_.erase(0, pending_.size() - held);
  return out;
}

std::string DecodeStream::Finish() {
  std::string out = SanitizeUtf8(pending_);
  pending_.clear();
  return out;
}

std::optional<size_t> FindInvalidUtf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const Utf8Seq seq = ReadUtf8(s, i);
    if (seq.kind != Utf8Seq::kValid) return i;
    i += seq.len;
  }
  return std::nullopt;
}

std::string SanitizeUtf8(std::string_view s, bool hold_back_incomplete, size_t* held_back) {
  std::string out;
  out.reserve(s.size());
  if (held_back != nullptr) *held_back = 0;
  for (size_t i = 0; i < s.size();) {
    const Utf8Seq seq = ReadUtf8(s, i);
    if (seq.kind == Utf8Seq::kValid) {
      out.append(s.substr(i, seq.len));
    } else if (seq.kind == Utf8Seq::kTruncated && hold_back_incomplete) {
      if (held_back != nullptr) *held_back = s.size() - i;
      break;
    } else {
      out.append(kReplacement);
    }
    i += seq.len;
  }
  return out;
}

}  // namespace llmint8::coordinator
