// The scheduler's queue: the sequences waiting for admission, in the order they are admitted.
// First come, first served: the sequences preempted (by id, the order they arrived), then
// those a lost group gave back before any of them went to it (by id too), then the requests
// never admitted, in the order they came. By priority (the scheduler's Scheduling::kPriority):
// GenerationParams::priority first (lower first, as in vLLM), that order within one priority.
//
//   WaitQueue queue(/*by_priority=*/true);
//   queue.Push(seq, WaitQueue::Kind::kNew);
//   if (const std::shared_ptr<Sequence>* next = queue.Next(/*preempted_only=*/false)) ...
//
// Not thread-safe (the scheduler holds its mutex).
#ifndef LLMINT8_COORDINATOR_WAIT_QUEUE_H_
#define LLMINT8_COORDINATOR_WAIT_QUEUE_H_

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <vector>

#include "coordinator/sequence.h"

namespace llmint8::coordinator {

class WaitQueue {
 public:
  // Why a sequence waits, in the order of admission within one priority.
  enum class Kind : uint8_t {
    kPreempted,  // admitted, then preempted (for room, or by priority)
    kUnsent,     // admitted, but taken back (its group lost, room made) before any of it went
    kNew,        // never admitted
  };

  explicit WaitQueue(bool by_priority) : by_priority_(by_priority) {}

  // Puts `seq` at its place: after those that go before it or alike (but for new ones, by id).
  void Push(std::shared_ptr<Sequence> seq, Kind kind);

  bool empty() const { return entries_.empty(); }
  size_t size() const { return entries_.size(); }
  // Those not preempted: what the queue's capacity counts.
  size_t CountNotPreempted() const { return entries_.size() - preempted_; }
  bool HasPreempted() const { return preempted_ > 0; }
  // The next to admit, or with `preempted_only` the next preempted one; null when none.
  const std::shared_ptr<Sequence>* Next(bool preempted_only) const;
  // Takes `seq` out; false when it is not queued.
  bool Remove(const Sequence* seq);
  // Takes out the sequences `drop` returns true for; returns them.
  std::vector<std::shared_ptr<Sequence>> RemoveIf(const std::function<bool(Sequence&)>& drop);
  // Calls `fn` on each preempted one.
  void ForEachPreempted(const std::function<void(Sequence&)>& fn);
  // Takes out all of them, in order.
  std::vector<std::shared_ptr<Sequence>> TakeAll();

 private:
  struct Entry {
    std::shared_ptr<Sequence> seq;
    Kind kind;
  };
  // Whether `a` is admitted before `b`.
  bool Before(const Entry& a, const Entry& b) const;

  const bool by_priority_;
  std::deque<Entry> entries_;
  size_t preempted_ = 0;  // entries of Kind::kPreempted (the scheduler asks every step)
};

}  // namespace llmint8::coordinator

#endif  // LLMINT8_COORDINATOR_WAIT_QUEUE_H_
