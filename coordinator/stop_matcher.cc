#include "coordinator/stop_matcher.h"

#include <algorithm>
#include <utility>

namespace llmint8::coordinator {

StopMatcher::StopMatcher(std::vector<std::string> stops) {
  for (std::string& s : stops) {
    if (!s.empty()) stops_.push_back(std::move(s));
  }
}

std::string StopMatcher::Append(const std::string& text, bool may_stop) {
  if (stopped_) return "";
  pending_ += text;
  if (!may_stop) settled_ = pending_.size();
  // Earliest complete stop sequence that ends past the settled text.
  size_t first = std::string::npos;
  for (const std::string& stop : stops_) {
    if (!may_stop) break;
    const size_t from = settled_ >= stop.size() ? settled_ - stop.size() + 1 : 0;
    first = std::min(first, pending_.find(stop, from));
  }
  if (first != std::string::npos) {
    stopped_ = true;
    std::string out = pending_.substr(0, first);
    pending_.clear();
    return out;
  }
  // Longest tail of pending_ that is a proper prefix of a stop sequence stays back.
  size_t hold = 0;
  for (const std::string& stop : stops_) {
    for (size_t len = std::min(stop.size() - 1, pending_.size()); len > hold; --len) {
      if (pending_.compare(pending_.size() - len, len, stop, 0, len) == 0) {
        hold = len;
        break;
      }
    }
  }
  std::string out = pending_.substr(0, pending_.size() - hold);
  pending_.erase(0, out.size());
  settled_ -= std::min(settled_, out.size());
  return out;
}

std::string StopMatcher::Flush() {
  if (stopped_) return "";
  return std::exchange(pending_, std::string());
}

}  // namespace llmint8::coordinator
