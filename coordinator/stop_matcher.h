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

#include <string>
#include <vector>

namespace llmint8::coordinator {

class StopMatcher {
 public:
  // Empty strings among `stops` are ignored.
  explicit StopMatcher(std::vector<std::string> stops);

  // Adds newly decoded text; returns the text that is now final. After a stop sequence
  // completes, returns the text before it and stopped() becomes true; later calls return "".
  std::string Append(const std::string& text);
  // At the end of generation: the held-back text (empty once stopped).
  std::string Flush();
  bool stopped() const { return stopped_; }

 private:
  std::vector<std::string> stops_;
  std::string pending_;
  bool stopped_ = false;
};

}  // namespace llmint8::coordinator

#endif  // LLMINT8_COORDINATOR_STOP_MATCHER_H_
