#include "coordinator/added_tokens.h"

#include <algorithm>
#include <utility>

#include "unicode/uchar.h"
#include "unicode/utf8.h"

namespace llmint8::coordinator {
namespace {

// A regex \w character (Unicode TR18): Alphabetic, a mark, a decimal digit, connector
// punctuation ("_") or a joiner.
bool IsWordChar(UChar32 c) {
  return u_hasBinaryProperty(c, UCHAR_ALPHABETIC) ||
         (U_GET_GC_MASK(c) & (U_GC_M_MASK | U_GC_ND_MASK | U_GC_PC_MASK)) != 0 ||
         u_hasBinaryProperty(c, UCHAR_JOIN_CONTROL);
}

// Whether the code point ending just before / starting at byte `i` of `s` is a word character
// (false at the ends of the text).
bool WordCharBefore(std::string_view s, size_t i) {
  if (i == 0) return false;
  int32_t at = static_cast<int32_t>(i);
  UChar32 c;
  U8_PREV(reinterpret_cast<const uint8_t*>(s.data()), 0, at, c);
  return c >= 0 && IsWordChar(c);
}
bool WordCharAt(std::string_view s, size_t i) {
  if (i >= s.size()) return false;
  int32_t at = static_cast<int32_t>(i);
  UChar32 c;
  U8_NEXT(reinterpret_cast<const uint8_t*>(s.data()), at, static_cast<int32_t>(s.size()), c);
  return c >= 0 && IsWordChar(c);
}

// Bytes of Unicode White_Space (Rust's char::is_whitespace) that end `s` / start it.
size_t SpaceBytesAtEnd(std::string_view s) {
  int32_t at = static_cast<int32_t>(s.size());
  while (at > 0) {
    int32_t before = at;
    UChar32 c;
    U8_PREV(reinterpret_cast<const uint8_t*>(s.data()), 0, before, c);
    if (c < 0 || !u_isUWhiteSpace(c)) break;
    at = before;
  }
  return s.size() - static_cast<size_t>(at);
}
size_t SpaceBytesAtStart(std::string_view s) {
  int32_t at = 0;
  const auto n = static_cast<int32_t>(s.size());
  while (at < n) {
    int32_t next = at;
    UChar32 c;
    U8_NEXT(reinterpret_cast<const uint8_t*>(s.data()), next, n, c);
    if (c < 0 || !u_isUWhiteSpace(c)) break;
    at = next;
  }
  return static_cast<size_t>(at);
}

}  // namespace

bool AddedTokenSplitter::Contains(std::string_view content) const {
  if (content.empty()) return false;
  for (const Pass* pass : {&verbatim_, &normalized_}) {
    const auto list = pass->find(content.front());
    if (list == pass->end()) continue;
    for (const AddedToken& t : list->second) {
      if (t.content == content) return true;
    }
  }
  return false;
}

void AddedTokenSplitter::Add(AddedToken token) {
  if (token.content.empty()) return;
  Pass& pass = token.normalized ? normalized_ : verbatim_;
  std::vector<AddedToken>& list = pass[token.content.front()];
  auto same = std::find_if(list.begin(), list.end(),
                           [&](const AddedToken& t) { return t.content == token.content; });
  if (same != list.end()) {
    *same = std::move(token);
    return;
  }
  list.push_back(std::move(token));
  std::stable_sort(list.begin(), list.end(), [](const AddedToken& a, const AddedToken& b) {
    return a.content.size() > b.content.size();
  });
  ++count_;
}

void AddedTokenSplitter::Split(std::string_view text,
                               const std::function<void(std::string_view)>& on_text,
                               const std::function<void(int32_t)>& on_token) const {
  if (normalized_.empty()) return SplitPass(verbatim_, text, on_text, on_token);
  SplitPass(
      verbatim_, text,
      [&](std::string_view between) { SplitPass(normalized_, between, on_text, on_token); },
      on_token);
}

void AddedTokenSplitter::SplitPass(const Pass& pass, std::string_view text,
                                   const std::function<void(std::string_view)>& on_text,
                                   const std::function<void(int32_t)>& on_token) {
  size_t emitted = 0;  // text before this is passed on (as text or a token)
  size_t i = 0;
  while (i < text.size()) {
    const auto candidates = pass.find(text[i]);
    const AddedToken* found = nullptr;
    if (candidates != pass.end()) {
      for (const AddedToken& t : candidates->second) {  // longest first
        if (text.substr(i, t.content.size()) == t.content) {
          found = &t;
          break;
        }
      }
    }
    if (found == nullptr) {
      ++i;
      continue;
    }
    // A token that must stand alone and does not is no match, and the search goes on past it
    // (as HF's leftmost-longest scan does).
    if (found->single_word &&
        (WordCharBefore(text, i) || WordCharAt(text, i + found->content.size()))) {
      i += found->content.size();
      continue;
    }
    size_t start = i;
    size_t end = i + found->content.size();
    // The search goes on after the match itself, not after the whitespace rstrip takes: a
    // token that begins in that whitespace is found too, as HF's scan finds it (its span
    // overlaps; no text lies between them).
    i = end;
    if (found->lstrip && start > emitted) {
      start -= SpaceBytesAtEnd(text.substr(emitted, start - emitted));
    }
    if (found->rstrip) end += SpaceBytesAtStart(text.substr(end));
    if (start > emitted) on_text(text.substr(emitted, start - emitted));
    on_token(found->id);
    emitted = end;
  }
  if (emitted < text.size()) on_text(text.substr(emitted));
}

}  // namespace llmint8::coordinator
