// Finds stop sequences in streamed text. Text is released only when no stop sequence can
// still start inside it: a tail that is a prefix of some stop string is held back until the
// next piece decides it.
//
//   StopMatcher m({"\n\n"});
//   m.Append("Hello\n")   -> "Hello"     ("\n" held back)
//   m.Append("\nBye")     -> ""          stopped() == true: the output is "Hello"
//
// Not thread-safe (one per sequence, used by the scheduler thread).
#ifndef LLMINT8_COORDINATOR_STOP_MATCHER_H_
#define LLMINT8_COORDINATOR_STOP_MATCHER_H_

#include <cstddef>
#include <string>
#include <vector>

namespace llmint8::coordinator {

class StopMatcher {
 public:
  // Empty strings among `stops` are ignored.
  explicit StopMatcher(std::vector<std::string> stops);

  // Adds newly decoded text; returns the text that is now final. After a stop sequence
  // completes, returns the text before it and stopped() becomes true; later calls return "".
  // With `may_stop` false (a sequence before its min_tokens) no stop sequence may end inside
  // `text`, but one that ends in later text may start there (as vLLM matches them), so a
  // possible start is still held back.
  std::string Append(const std::string& text, bool may_stop = true);
  // At the end of generation: the held-back text (empty once stopped).
  std::string Flush();
  bool stopped() const { return stopped_; }

 private:
  std::vector<std::string> stops_;
  std::string pending_;
  size_t settled_ = 0;  // leading bytes of pending_ that no stop sequence may end in
  bool stopped_ = false;
};

}  // namespace llmint8::coordinator

#endif  // LLMINT8_COORDINATOR_STOP_MATCHER_H_
