#include "coordinator/wait_queue.h"

#include <algorithm>
#include <iterator>
#include <tuple>
#include <utility>

namespace llmint8::coordinator {

bool WaitQueue::Before(const Entry& a, const Entry& b) const {
  auto key = [this](const Entry& e) {
    return std::make_tuple(by_priority_ ? e.seq->params().priority : 0, e.kind,
                           e.kind == Kind::kNew ? 0 : e.seq->id());
  };
  return key(a) < key(b);
}

void WaitQueue::Push(std::shared_ptr<Sequence> seq, Kind kind) {
  Entry entry{std::move(seq), kind};
  const auto at = std::upper_bound(entries_.begin(), entries_.end(), entry,
                                   [this](const Entry& a, const Entry& b) { return Before(a, b); });
  if (entry.kind == Kind::kPreempted) ++preempted_;
  entries_.insert(at, std::move(entry));
}

const std::shared_ptr<Sequence>* WaitQueue::Next(bool preempted_only) const {
  for (const Entry& e : entries_) {
    if (!preempted_only || e.kind == Kind::kPreempted) return &e.seq;
  }
  return nullptr;
}

bool WaitQueue::Remove(const Sequence* seq) {
  const auto it = std::find_if(entries_.begin(), entries_.end(),
                               [seq](const Entry& e) { return e.seq.get() == seq; });
  if (it == entries_.end()) return false;
  if (it->kind == Kind::kPreempted) --preempted_;
  entries_.erase(it);
  return true;
}

std::vector<std::shared_ptr<Sequence>> WaitQueue::RemoveIf(
    const std::function<bool(Sequence&)>& drop) {
  std::vector<std::shared_ptr<Sequence>> removed;
  std::erase_if(entries_, [&](const Entry& e) {
    if (!drop(*e.seq)) return false;
    if (e.kind == Kind::kPreempted) --preempted_;
    removed.push_back(e.seq);
    return true;
  });
  return removed;
}

void WaitQueue::ForEachPreempted(const std::function<void(Sequence&)>& fn) {
  for (Entry& e : entries_) {
    if (e.kind == Kind::kPreempted) fn(*e.seq);
  }
}

std::vector<std::shared_ptr<Sequence>> WaitQueue::TakeAll() {
  std::vector<std::shared_ptr<Sequence>> out;
  out.reserve(entries_.size());
  for (Entry& e : entries_) out.push_back(std::move(e.seq));
  entries_.clear();
  preempted_ = 0;
  return out;
}

}  // namespace llmint8::coordinator
