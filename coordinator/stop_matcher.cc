#include "coordinator/stop_matcher.h"

#include <algorithm>
#include <utility>

namespace llmint8::coordinator {

StopMatcher::StopMatcher(std::vector<std::string> stops) {
  for (std::string& s : stops) {
    if (s.empty()) continue;
    // The prefix function: border[i] is the length of the longest proper prefix of s[0..i]
    // that is also its suffix.
    Stop stop;
    stop.text = std::move(s);
    stop.border.assign(stop.text.size(), 0);
    for (size_t i = 1, k = 0; i < stop.text.size(); ++i) {
      while (k > 0 && stop.text[i] != stop.text[k]) k = stop.border[k - 1];
      if (stop.text[i] == stop.text[k]) ++k;
      stop.border[i] = k;
    }
    stops_.push_back(std::move(stop));
  }
}

std::string StopMatcher::Append(const std::string& text, bool may_stop) {
  if (stopped_) return "";
  const size_t base = pending_.size();
  pending_ += text;
  // Each stop's state advances byte by byte (amortized O(1) a byte); the earliest-starting
  // stop sequence that completes in this text, when it may end here, wins.
  size_t first = std::string::npos;
  for (Stop& stop : stops_) {
    const size_t n = stop.text.size();
    bool found = false;
    for (size_t i = 0; i < text.size(); ++i) {
      const char c = text[i];
      while (stop.matched > 0 && c != stop.text[stop.matched]) {
        stop.matched = stop.border[stop.matched - 1];
      }
      if (c == stop.text[stop.matched]) ++stop.matched;
      if (stop.matched == n) {
        if (may_stop && !found) {
          found = true;
          first = std::min(first, base + i + 1 - n);
        }
        stop.matched = stop.border[n - 1];  // a proper prefix goes on matching
      }
    }
  }
  if (first != std::string::npos) {
    stopped_ = true;
    std::string out = pending_.substr(0, first);
    pending_.clear();
    return out;
  }
  // The longest tail of the text that is a proper prefix of a stop sequence stays back.
  size_t hold = 0;
  for (const Stop& stop : stops_) hold = std::max(hold, stop.matched);
  std::string out = pending_.substr(0, pending_.size() - hold);
  pending_.erase(0, out.size());
  return out;
}

std::string StopMatcher::Flush() {
  if (stopped_) return "";
  for (Stop& stop : stops_) stop.matched = 0;  // nothing is held back any more
  return std::exchange(pending_, std::string());
}

}  // namespace llmint8::coordinator
