// Finds stop sequences in streamed text. Text is released only when no stop sequence can
// still start inside it: a tail that is a prefix of some stop string is held back until the
// next piece decides it.
//
//   StopMatcher m({"\n\n"});
//   m.Append("Hello\n")   -> "Hello"     ("\n" held back)
//   m.Append("\nBye")     -> ""          stopped() == true: the output is "Hello"
//
// Each stop sequence is matched as Knuth-Morris-Pratt does, a byte at a time with the state
// kept between pieces: O(stops) a byte, however the stop strings and the text repeat.
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
  struct Stop {
    std::string text;            // not empty
    std::vector<size_t> border;  // KMP's prefix function of text
    size_t matched = 0;          // the longest tail of the text so far that begins text
  };
  std::vector<Stop> stops_;
  std::string pending_;  // held back: the longest `matched` of the stops
  bool stopped_ = false;
};

}  // namespace llmint8::coordinator

#endif  // LLMINT8_COORDINATOR_STOP_MATCHER_H_
