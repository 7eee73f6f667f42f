#include "coordinator/scheduler.h"

#include <algorithm>
#include <functional>
#include <ostream>
#include <sstream>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/log.h"
#include "common/sampling_limits.h"

namespace llmint8::coordinator {
namespace {

// The options as the scheduler keeps them: a draft count the workers take.
SchedulerOptions Checked(SchedulerOptions options) {
  options.speculative_tokens = std::clamp(options.speculative_tokens, 0, kMaxSpeculativeTokens);
  return options;
}

}  // namespace

std::string_view SchedulingName(Scheduling s) {
  return s == Scheduling::kPriority ? "priority" : "fcfs";
}

absl::StatusOr<Scheduling> ParseScheduling(std::string_view name) {
  if (name == "fcfs") return Scheduling::kFcfs;
  if (name == "priority") return Scheduling::kPriority;
  return absl::InvalidArgumentError(absl::StrCat(
      "scheduling \"", std::string(name),
      "\": use fcfs (first come, first served) or priority (requests' priority first, lower "
      "first; a request preempts running ones of a lower priority)"));
}

std::string_view PreemptionName(Preemption p) {
  return p == Preemption::kOff ? "off" : "recompute";
}

absl::StatusOr<Preemption> ParsePreemption(std::string_view name) {
  if (name == "recompute") return Preemption::kRecompute;
  if (name == "off") return Preemption::kOff;
  return absl::InvalidArgumentError(absl::StrCat(
      "preemption \"", std::string(name),
      "\": use recompute (admit on the KV positions sequences hold, "
      "preempt the last admitted when they outgrow the budget) or off (reserve prompt + "
      "max_new_tokens at admission)"));
}

Scheduler::Scheduler(SchedulerOptions options, StepGroup* group, ServiceMetrics* metrics)
    : options_(Checked(std::move(options))),
      group_(group),
      metrics_(metrics),
      queue_(options_.scheduling == Scheduling::kPriority),
      prefix_cache_({.max_entries = static_cast<size_t>(std::max(options_.prefix_cache_entries, 0)),
                     .min_prefix = std::max<int64_t>(options_.min_shared_prefix, 1)}) {}

Scheduler::~Scheduler() { Stop(); }

void Scheduler::Start() {
  // Under mu_: Stop may come from another thread at once (the loop waits for mu_ first).
  absl::MutexLock lock(&mu_);
  started_ = true;
  thread_ = std::thread([this] { Loop(); });
}

void Scheduler::Stop() {
  std::vector<std::shared_ptr<Sequence>> queued;
  std::thread loop;  // taken under mu_: one Stop joins it, whichever thread calls
  bool started = false;
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
    queued = queue_.TakeAll();
    loop = std::move(thread_);
    started = started_;
  }
  if (loop.joinable()) {
    // A step the workers are still computing would hold the join (up to the step timeout).
    group_->CancelSteps();
    loop.join();
    loop_ended_.Notify();
  } else if (started) {
    loop_ended_.WaitForNotification();  // another Stop joins it: this one returns after too
  }
  {
    // A step that lost its group while the loop stopped put its unsent sequences back.
    absl::MutexLock lock(&mu_);
    for (auto& seq : queue_.TakeAll()) queued.push_back(std::move(seq));
  }
  const absl::Status down = absl::UnavailableError("the server is shutting down");
  for (auto& seq : queued) seq->Fail(down);
}

bool Scheduler::Drain(absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  {
    absl::MutexLock lock(&mu_);
    draining_ = true;
  }
  while (true) {
    // Without a group the queued requests cannot be served: no use waiting for them.
    const bool group_ready = group_->ready();
    absl::MutexLock lock(&mu_);
    auto idle = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
      return (queue_.empty() && running_count_ == 0) || drain_ended_;
    };
    const absl::Duration left = deadline - absl::Now();
    if (mu_.AwaitWithTimeout(absl::Condition(&idle), std::min(left, absl::Milliseconds(100)))) {
      return !drain_ended_;
    }
    if ((running_count_ == 0 && !group_ready) || absl::Now() >= deadline) return false;
  }
}

void Scheduler::EndDrain() {
  absl::MutexLock lock(&mu_);
  drain_ended_ = true;
}

absl::Status Scheduler::Enqueue(std::shared_ptr<Sequence> seq) { return EnqueueAll({&seq, 1}); }

absl::Status Scheduler::Accepting() const {
  absl::MutexLock lock(&mu_);
  return AcceptingLocked();
}

absl::Status Scheduler::AcceptingLocked() const {
  if (stop_ || draining_) {
    return absl::UnavailableError("the server is shutting down; retry the request");
  }
  return absl::OkStatus();
}

absl::Status Scheduler::EnqueueAll(std::span<const std::shared_ptr<Sequence>> seqs) {
  absl::MutexLock lock(&mu_);
  if (absl::Status accepting = AcceptingLocked(); !accepting.ok()) return accepting;
  // Preempted sequences wait beyond the queue's capacity: they were admitted once, and new
  // requests do not queue behind them for room.
  const auto waiting = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return queue_.CountNotPreempted();
  };
  const auto fits = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return waiting() + seqs.size() <= static_cast<size_t>(options_.queue_capacity);
  };
  if (!fits()) {
    // Make room first from requests whose client is gone or whose deadline has passed
    // (their handlers may not have noticed yet).
    const absl::Time now = absl::Now();
    queue_.RemoveIf([now](Sequence& s) {
      if (!s.cancelled() && s.client_gone()) s.Cancel();
      return s.cancelled() || s.expired(now);
    });
  }
  if (!fits()) {
    if (seqs.size() == 1) {
      return absl::ResourceExhaustedError(
          absl::StrCat("the request queue is full (", options_.queue_capacity,
                       " waiting requests); retry later with backoff"));
    }
    return absl::ResourceExhaustedError(absl::StrCat(
        "the request queue has room for ", options_.queue_capacity - waiting(), " of the ",
        seqs.size(), " sequences this request asks for (", options_.queue_capacity,
        " wait at most); retry later with backoff, or send fewer prompts"));
  }
  for (const std::shared_ptr<Sequence>& seq : seqs) queue_.Push(seq, WaitQueue::Kind::kNew);
  return absl::OkStatus();
}

void Scheduler::Cancel(const std::shared_ptr<Sequence>& seq) {
  seq->Cancel();
  absl::MutexLock lock(&mu_);
  queue_.Remove(seq.get());
  wake_ = true;
}

int Scheduler::queued() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(queue_.size());
}

int Scheduler::running() const {
  absl::MutexLock lock(&mu_);
  return running_count_;
}

int64_t Scheduler::kv_reserved() const {
  absl::MutexLock lock(&mu_);
  return kv_reserved_count_;
}

int64_t Scheduler::kv_budget() const {
  absl::MutexLock lock(&mu_);
  return kv_budget_count_;
}

uint64_t Scheduler::steps() const {
  absl::MutexLock lock(&mu_);
  return steps_;
}

int64_t Scheduler::prefix_cached_positions() const {
  absl::MutexLock lock(&mu_);
  return prefix_cached_count_;
}

int Scheduler::prefix_cached_sequences() const {
  absl::MutexLock lock(&mu_);
  return prefix_cached_sequences_;
}

uint64_t Scheduler::prefix_hit_tokens() const {
  absl::MutexLock lock(&mu_);
  return prefix_hit_tokens_;
}

uint64_t Scheduler::preemptions() const {
  absl::MutexLock lock(&mu_);
  return preemptions_;
}

uint64_t Scheduler::draft_tokens() const {
  absl::MutexLock lock(&mu_);
  return draft_tokens_;
}

uint64_t Scheduler::accepted_draft_tokens() const {
  absl::MutexLock lock(&mu_);
  return accepted_draft_tokens_;
}

void Scheduler::FailRunning(const absl::Status& status, bool requeue_unsent) {
  std::vector<std::shared_ptr<Sequence>> unsent, preempted;
  const bool resume = requeue_unsent && options_.resume_on_group_loss > absl::ZeroDuration() &&
                      options_.preemption == Preemption::kRecompute;
  const absl::Time resume_by = absl::Now() + options_.resume_on_group_loss;
  int resumed = 0;
  for (auto& seq : running_) {
    seq->set_on_workers(false);
    // Nothing of it went to this group: a request not started, or one preempted and admitted
    // again whose prefill had not begun (its stream waits, as it did in the queue). (A
    // sequence with output that was never preempted has started.)
    const bool sent = seq->started();
    if (requeue_unsent && !sent && !seq->cancelled()) {
      (seq->preemptions() > 0 ? preempted : unsent).push_back(std::move(seq));
    } else if (resume && !seq->cancelled() && seq->may_resume()) {
      seq->Preempt();
      seq->MarkResumed();
      preempted.push_back(std::move(seq));
      ++resumed;
    } else {
      seq->Fail(status);
    }
  }
  running_.clear();
  for (auto& source : held_sources_) source->set_on_workers(false);
  held_sources_.clear();
  if (resumed > 0) {
    if (metrics_ != nullptr) metrics_->RecordPreemptions(resumed);
    LLMINT8_LOG(WARNING) << "scheduler: the worker group was lost (" << status.message()
                         << "): " << resumed << " running sequence(s) wait up to "
                         << absl::FormatDuration(options_.resume_on_group_loss)
                         << " (--resume_on_group_loss) for it to re-form, to be prefilled again";
  }
  if (!unsent.empty() || !preempted.empty() || resume) {
    absl::MutexLock lock(&mu_);
    preemptions_ += static_cast<uint64_t>(resumed);
    for (auto& seq : unsent) queue_.Push(std::move(seq), WaitQueue::Kind::kUnsent);
    for (auto& seq : preempted) queue_.Push(std::move(seq), WaitQueue::Kind::kPreempted);
    // Every stream with output waits for the group at most that long from this loss: those
    // resumed now, and those preempted before (for room) or resumed after an earlier loss.
    if (resume) {
      queue_.ForEachPreempted([resume_by](Sequence& s) {
        if (s.resume_by() == absl::InfiniteFuture()) s.set_resume_by(resume_by);
      });
    }
  }
  kv_in_use_ = 0;
  ForgetGroupState();
}

void Scheduler::FailUnresumed() {
  const absl::Time now = absl::Now();
  std::vector<std::shared_ptr<Sequence>> overdue;
  {
    absl::MutexLock lock(&mu_);
    overdue = queue_.RemoveIf([now](Sequence& s) { return s.resume_by() <= now; });
  }
  for (const std::shared_ptr<Sequence>& seq : overdue) {
    seq->Fail(absl::UnavailableError(absl::StrCat(
        "the worker group was lost while this request was being served, and it did not "
        "re-form within --resume_on_group_loss=",
        absl::FormatDuration(options_.resume_on_group_loss), "; retry the request")));
  }
}

void Scheduler::ForgetGroupState() {
  to_release_.clear();
  prefix_cache_.Clear();
  absl::MutexLock lock(&mu_);
  PublishLocked();
}

void Scheduler::FailQueued(const absl::Status& status) {
  std::vector<std::shared_ptr<Sequence>> queued;
  {
    absl::MutexLock lock(&mu_);
    queued = queue_.TakeAll();
  }
  for (auto& seq : queued) seq->Fail(status);
}

void Scheduler::ReleaseFinished() {
  // Drop cancelled sequences from the batch.
  std::vector<Exit> exits(running_.size(), Exit::kStays);
  for (size_t i = 0; i < running_.size(); ++i) {
    if (running_[i]->cancelled()) exits[i] = Exit::kRelease;
  }
  Retire(exits);
  if (!to_release_.empty()) {
    absl::Status s = group_->Release(to_release_);
    if (!s.ok()) {
      FailRunning(absl::UnavailableError(s.message()), /*requeue_unsent=*/true);
    }
    to_release_.clear();
  }
  absl::MutexLock lock(&mu_);
  PublishLocked();
}

void Scheduler::Retire(const std::vector<Exit>& exits) {
  // The sources that staying choices have yet to copy (ChoosePrefix): their first step is ahead.
  absl::flat_hash_set<const Sequence*> awaited;
  for (size_t i = 0; i < running_.size(); ++i) {
    const Sequence& seq = *running_[i];
    if (exits[i] != Exit::kStays || seq.started()) continue;
    if (std::shared_ptr<Sequence> source = seq.prefix_source()) awaited.insert(source.get());
  }
  std::vector<std::shared_ptr<Sequence>> staying;
  staying.reserve(running_.size());
  for (size_t i = 0; i < running_.size(); ++i) {
    if (exits[i] == Exit::kStays) {
      staying.push_back(std::move(running_[i]));
    } else if (exits[i] == Exit::kPark && awaited.contains(running_[i].get())) {
      held_sources_.push_back(std::move(running_[i]));  // e.g. it ended at its first token
    } else {
      RetireOne(*running_[i], exits[i]);
    }
  }
  running_.swap(staying);
  std::erase_if(held_sources_, [&](const std::shared_ptr<Sequence>& source) {
    if (awaited.contains(source.get())) return false;
    RetireOne(*source, Exit::kPark);
    return true;
  });
  // Parked sequences hold whole KV granules, more than the positions they reserved while they
  // ran: the budget holds them too, the least recently used going first.
  EvictParkedAbove(kv_budget_ - kv_in_use_);
}

bool Scheduler::EvictParkedAbove(int64_t positions) {
  bool evicted = false;
  while (prefix_cache_.positions() > positions) {
    const std::optional<uint64_t> id = prefix_cache_.EvictOldest();
    if (!id.has_value()) break;
    to_release_.push_back(*id);
    evicted = true;
  }
  return evicted;
}

void Scheduler::RetireOne(Sequence& seq, Exit exit) {
  seq.set_on_workers(false);
  kv_in_use_ -= seq.kv_positions();
  seq.set_kv_positions(0);
  if (exit == Exit::kPark) {
    // Its cache stays for later prompts that start alike (what it evicts goes instead).
    for (uint64_t id : prefix_cache_.Park(seq.id(), seq.cached_tokens(),
                                          seq.params().counts_tokens(), seq.drop_positions())) {
      to_release_.push_back(id);
    }
    return;
  }
  to_release_.push_back(seq.id());
}

void Scheduler::PublishLocked() {
  prefix_cached_count_ = prefix_cache_.positions();
  prefix_cached_sequences_ = static_cast<int>(prefix_cache_.size());
  running_count_ = static_cast<int>(running_.size());
  kv_reserved_count_ = kv_in_use_;
  kv_budget_count_ = kv_budget_;
}

int64_t Scheduler::KvBudget() const {
  const int64_t most = int64_t{options_.max_batch} * options_.max_context;
  // A reported 0 stays 0: one sequence at a time (AdmitLocked always admits into an empty
  // batch; the worker refuses a step that does not fit).
  const std::optional<int64_t> reported = group_->kv_capacity_tokens();
  int64_t budget = options_.kv_budget_tokens;
  if (budget <= 0) {
    budget = reported.has_value() ? *reported : options_.default_kv_budget_tokens;
    if (!reported.has_value() && budget <= 0) budget = most;
  }
  budget = std::min(budget, most);
  if (options_.kv_budget_tokens > 0 && reported.has_value() && budget > *reported) {
    LLMINT8_LOG(WARNING) << "scheduler: --kv_budget_tokens=" << options_.kv_budget_tokens
                         << " is more than the " << *reported
                         << " positions the workers report they hold; a step they cannot hold "
                         << "is refused, and then "
                         << (options_.preemption == Preemption::kRecompute
                                 ? "the budget comes down and sequences are preempted"
                                 : "its prompts fail (RESOURCE_EXHAUSTED)");
  }
  LLMINT8_LOG(INFO) << "scheduler: KV budget " << budget << " positions (up to "
                    << options_.max_batch << " sequences of " << options_.max_context
                    << "), preemption " << PreemptionName(options_.preemption);
  return budget;
}

bool Scheduler::Speculates(const Sequence& seq) const {
  return options_.speculative_tokens > 0 && !seq.params().guided();
}

void Scheduler::RecoverBudgetWhenDue() {
  if (kv_budget_ >= group_kv_budget_ || absl::Now() < budget_recovery_at_) return;
  LLMINT8_LOG(INFO) << "scheduler: no step was refused for memory for "
                    << absl::FormatDuration(budget_recovery_wait_) << "; the KV budget goes back "
                    << "from " << kv_budget_ << " to " << group_kv_budget_
                    << " positions (a refusal brings it down again, for twice as long)";
  kv_budget_ = group_kv_budget_;
  budget_recovery_at_ = absl::InfiniteFuture();
  budget_recovered_ = true;
  absl::MutexLock lock(&mu_);
  PublishLocked();
}

int64_t Scheduler::KvNeed(const Sequence& seq) const {
  if (options_.preemption == Preemption::kOff) return seq.max_tokens();
  // A prefilling sequence counts its whole input (the prompt, and after a preemption the
  // tokens generated before it: num_generated() of them); a generating one what its cache
  // holds after the coming step's token: the prompt and every generated token, and with
  // speculative decoding room for the step's drafts (the workers hold their positions until
  // the next step drops those not accepted).
  const int64_t drafts = seq.prefilled() && Speculates(seq) ? options_.speculative_tokens : 0;
  return std::min(seq.max_tokens(), std::ssize(seq.prompt()) + seq.num_generated() + drafts);
}

void Scheduler::PreemptForStep() {
  // Sequences cancelled since ReleaseFinished leave now rather than hold room, be preempted
  // and queued, or take one more step for a client that left (whatever the preemption).
  std::erase_if(running_, [this](const std::shared_ptr<Sequence>& seq) {
    if (!seq->cancelled()) return false;
    RetireOne(*seq, Exit::kRelease);
    return true;
  });
  if (options_.preemption != Preemption::kRecompute) return;
  for (const std::shared_ptr<Sequence>& seq : running_) {
    const int64_t need = KvNeed(*seq);
    kv_in_use_ += need - seq->kv_positions();
    seq->set_kv_positions(need);
  }
  EvictParkedAbove(kv_budget_ - kv_in_use_);
  // The last admitted first (vLLM's order): they have the least to compute again; by
  // priority, the last to arrive of the lowest priority (NextVictim).
  TakenBack taken;
  while (kv_in_use_ > kv_budget_ && running_.size() > 1) TakeForPreemption(NextVictim(), taken);
  absl::MutexLock lock(&mu_);
  RequeueLocked(taken, [&](std::ostream& log) {
    log << "the KV cache is full: " << taken.preempted.size()
        << " sequence(s) preempted, to be prefilled again when there is room. More memory per "
           "worker, int8, a higher TP degree or a lower --max_batch avoid this";
  });
  PublishLocked();
}

size_t Scheduler::NextVictim() const {
  size_t victim = running_.size() - 1;
  if (options_.scheduling != Scheduling::kPriority) return victim;
  for (size_t i = 0; i < running_.size(); ++i) {
    if (VictimKey(*running_[i]) > VictimKey(*running_[victim])) victim = i;
  }
  return victim;
}

std::pair<int32_t, uint64_t> Scheduler::VictimKey(const Sequence& seq) {
  return {seq.params().priority, seq.id()};
}

void Scheduler::TakeForPreemption(size_t i, TakenBack& taken) {
  std::shared_ptr<Sequence> seq = std::move(running_[i]);
  running_.erase(running_.begin() + static_cast<std::ptrdiff_t>(i));
  seq->set_on_workers(false);
  kv_in_use_ -= seq->kv_positions();
  seq->set_kv_positions(0);
  // Nothing of it on the workers yet (admitted this round, or its step was refused): it only
  // goes back to the queue, neither released nor counted.
  if (!seq->started()) {
    taken.unstarted.push_back(std::move(seq));
    return;
  }
  seq->Preempt();
  to_release_.push_back(seq->id());
  taken.preempted.push_back(std::move(seq));
}

void Scheduler::RequeueLocked(const TakenBack& taken,
                              const std::function<void(std::ostream&)>& why) {
  const size_t n = taken.preempted.size();
  if (n > 0) {
    if (metrics_ != nullptr) metrics_->RecordPreemptions(static_cast<int>(n));
    // The first preemption and then one in a hundred are logged (a full cache preempts often).
    if (preemptions_ == 0 || preemptions_ / 100 != (preemptions_ + n) / 100) {
      std::ostringstream line;
      why(line);
      LLMINT8_LOG(WARNING) << "scheduler: " << line.str() << " (" << preemptions_ + n
                           << " since start; llmint8_preemptions_total counts them)";
    }
    preemptions_ += n;
  }
  for (const std::shared_ptr<Sequence>& seq : taken.preempted) {
    queue_.Push(seq, WaitQueue::Kind::kPreempted);
  }
  for (const std::shared_ptr<Sequence>& seq : taken.unstarted) {
    queue_.Push(seq,
                seq->preemptions() > 0 ? WaitQueue::Kind::kPreempted : WaitQueue::Kind::kUnsent);
  }
}

int64_t Scheduler::AdmissionNeed(const Sequence& seq, size_t running) const {
  if (options_.preemption != Preemption::kRecompute) return KvNeed(seq);
  // With preemption the running sequences each grow a position a step (and up to
  // speculative_tokens more when their drafts are accepted), over every step of the new
  // sequence's prefill (chunks of prefill_chunk), and it grows by as much once prefilled: room
  // for that keeps it from being preempted (the latest admitted goes first) before its
  // prefill ends, which would throw the chunks away, or from preempting another at once.
  const int64_t growth = 1 + options_.speculative_tokens;
  const int64_t left = seq.prompt_remaining();
  const int64_t steps =
      options_.prefill_chunk > 0
          ? std::max<int64_t>(1, (left + options_.prefill_chunk - 1) / options_.prefill_chunk)
          : 1;
  return KvNeed(seq) + static_cast<int64_t>(running) * growth * steps + growth;
}

bool Scheduler::RoomFor(const Sequence& seq, size_t running, int64_t kv_in_use) const {
  return static_cast<int64_t>(running) < options_.max_batch &&
         (running == 0 || kv_in_use + AdmissionNeed(seq, running) <= kv_budget_);
}

bool Scheduler::PreemptLowerPriorityLocked(const Sequence& seq) {
  if (options_.scheduling != Scheduling::kPriority ||
      options_.preemption != Preemption::kRecompute) {
    return false;
  }
  // The running sequences of a lower priority (not those cancelled: they leave anyway), the
  // lowest and then the last to arrive first, until `seq` fits; none when all of them would not
  // make room.
  std::vector<size_t> lower;
  for (size_t i = 0; i < running_.size(); ++i) {
    const Sequence& other = *running_[i];
    if (other.params().priority > seq.params().priority && !other.cancelled()) {
      lower.push_back(i);
    }
  }
  std::sort(lower.begin(), lower.end(), [this](size_t a, size_t b) {
    return VictimKey(*running_[a]) > VictimKey(*running_[b]);
  });
  size_t running = running_.size();
  int64_t kv_in_use = kv_in_use_;
  size_t taken = 0;
  while (!RoomFor(seq, running, kv_in_use) && taken < lower.size()) {
    kv_in_use -= running_[lower[taken]]->kv_positions();
    --running;
    ++taken;
  }
  if (!RoomFor(seq, running, kv_in_use)) return false;
  lower.resize(taken);
  // Of the last one's priority, those taken before it stay when `seq` fits without them (a
  // small one taken first need not go when the larger one after it made room alone).
  const int32_t last = running_[lower.back()]->params().priority;
  for (size_t j = lower.size() - 1; j-- > 0;) {
    const Sequence& kept = *running_[lower[j]];
    if (kept.params().priority == last &&
        RoomFor(seq, running + 1, kv_in_use + kept.kv_positions())) {
      ++running;
      kv_in_use += kept.kv_positions();
      lower.erase(lower.begin() + static_cast<std::ptrdiff_t>(j));
    }
  }
  std::sort(lower.begin(), lower.end(), std::greater<>());  // erase from the back
  TakenBack back;
  for (size_t i : lower) TakeForPreemption(i, back);
  RequeueLocked(back, [&](std::ostream& log) {
    log << back.preempted.size() << " sequence(s) of a lower priority preempted for a request "
        << "of priority " << seq.params().priority << ", to be prefilled again when there is room";
  });
  return true;
}

void Scheduler::AdmitLocked(bool preempted_only) {
  int64_t prefill_tokens = 0;
  const absl::Time now = absl::Now();
  // A draining group takes back what it preempted (its running work), nothing new.
  while (const std::shared_ptr<Sequence>* head = queue_.Next(preempted_only)) {
    std::shared_ptr<Sequence> next = *head;
    // Its handler ends it (DEADLINE_EXCEEDED) within a poll: no KV room or prefill for it.
    if (next->cancelled() || next->expired(now)) {
      queue_.Remove(next.get());
      continue;
    }
    if (next->params().guided() && !token_masks_) {
      // Workers older than guided decoding would sample it freely: refused, not garbled.
      next->Fail(absl::FailedPreconditionError(
          "the workers do not take token masks (built before guided decoding): update them to "
          "serve guided outputs (choices, regular expressions, JSON schemas, JSON mode, tool "
          "calls)"));
      queue_.Remove(next.get());
      continue;
    }
    const int64_t prompt = std::ssize(next->input());
    // Whole prompts: admit what this step can prefill (a prompt to score goes in chunks).
    const bool whole = options_.prefill_chunk == 0 && !next->scoring();
    if (whole && prefill_tokens > 0 && prefill_tokens + prompt > options_.max_prefill_tokens) {
      break;
    }
    // By priority, a request waits only for those of its priority or a higher one.
    if (!RoomFor(*next, running_.size(), kv_in_use_) &&
        (preempted_only || !PreemptLowerPriorityLocked(*next))) {
      break;
    }
    if (whole) prefill_tokens += prompt;
    const int64_t need = AdmissionNeed(*next, running_.size());
    // Parked sequences give their room back, least recently used first (released before the
    // step is sent), but for the one this prompt may start from: looking it up marks it used.
    if (kv_in_use_ + prefix_cache_.positions() + need > kv_budget_ && !next->scoring()) {
      if (const std::optional<PrefixCache::Match> m =
              prefix_cache_.Find(next->input(), next->params().counts_tokens())) {
        prefix_cache_.MarkUsed(m->id);
      }
    }
    EvictParkedAbove(kv_budget_ - kv_in_use_ - need);
    next->set_kv_positions(KvNeed(*next));
    kv_in_use_ += next->kv_positions();
    next->MarkAdmitted();
    next->set_on_workers(true);
    queue_.Remove(next.get());
    // running_ is in admission order, by priority the lower values first (then admission):
    // the order in which FormStep gives the prefill budget, and in which a prompt waits for
    // the prefill of a shared start ahead of it, so a request admitted for its priority is not
    // left behind the long prompts of lower ones admitted before it.
    auto at = running_.end();
    if (options_.scheduling == Scheduling::kPriority) {
      at = std::upper_bound(running_.begin(), running_.end(), next->params().priority,
                            [](int32_t priority, const std::shared_ptr<Sequence>& s) {
                              return priority < s->params().priority;
                            });
    }
    running_.insert(at, std::move(next));
  }
  PublishLocked();
}

void Scheduler::StepRefused(const StepBatch& batch, const absl::Status& why) {
  const std::vector<size_t>& in_step = batch.in_step;
  const bool memory = why.code() == absl::StatusCode::kResourceExhausted;
  // Refused for memory, the budget is more than the workers hold (--kv_budget_tokens above
  // it, or memory the workers' report did not count). With preemption: parked sequences go
  // at once (the cheapest room), the budget comes down below what the workers held and were
  // asked to add, the next PreemptForStep makes the batch fit it (the last admitted are
  // preempted), and the refused sequences go again; the budget stays lower until the group
  // re-forms or kv_budget_recovery passed without a refusal. A sequence refused alone, nothing left
  // to make room, fails, and the budget goes back to the group's: what did not fit may have been
  // that sequence, not the others beside it (if they were, refusals bring it down again).
  if (memory && options_.preemption == Preemption::kRecompute) {
    // What the workers held and were asked to add: the parked sequences, and the running ones
    // that started (those of the step did: their input was taken for it).
    int64_t counted = kv_in_use_ + prefix_cache_.positions();
    int holding = 0;
    for (const std::shared_ptr<Sequence>& seq : running_) {
      if (seq->started()) {
        ++holding;
      } else {
        counted -= seq->kv_positions();
      }
    }
    const bool evicted = EvictParkedAbove(0);
    if (holding > 1 || evicted) {
      const int64_t lowered = std::clamp<int64_t>(counted - 1, 0, kv_budget_);
      // Refused again after the budget went back up: the shortage lasts, wait longer.
      if (budget_recovered_ && kv_budget_ == group_kv_budget_) {
        budget_recovery_wait_ =
            std::min(budget_recovery_wait_ * 2, options_.kv_budget_recovery * 64);
      }
      const bool recovers = options_.kv_budget_recovery > absl::ZeroDuration();
      budget_recovery_at_ = recovers ? absl::Now() + budget_recovery_wait_ : absl::InfiniteFuture();
      LLMINT8_LOG(WARNING) << "scheduler: the workers refused a step for memory with " << counted
                           << " KV positions counted (" << why.message()
                           << "); the KV budget comes down from " << kv_budget_ << " to " << lowered
                           << " positions "
                           << (recovers ? absl::StrCat("for ",
                                                       absl::FormatDuration(budget_recovery_wait_),
                                                       " without another refusal")
                                        : std::string("until the group re-forms"))
                           << ", and sequences are preempted to fit it. Leave "
                              "--kv_budget_tokens 0 (what the workers report they hold) or set it "
                              "lower";
      kv_budget_ = lowered;
      for (size_t i : in_step) running_[i]->Unsend();
      absl::MutexLock lock(&mu_);
      PublishLocked();
      return;
    }
    if (kv_budget_ < group_kv_budget_) {
      LLMINT8_LOG(WARNING) << "scheduler: a sequence alone was refused (" << why.message()
                           << "): it fails, and the KV budget goes back to " << group_kv_budget_
                           << " positions";
      kv_budget_ = group_kv_budget_;
      budget_recovery_at_ = absl::InfiniteFuture();
      absl::MutexLock lock(&mu_);
      PublishLocked();  // before the sequence's failure reaches its client
    }
  } else {
    // A cached prefix the step started from may be what the workers refused: it goes.
    for (const v1::SeqStep& s : batch.request.seqs()) {
      if (s.prefix_length() > 0 && prefix_cache_.Evict(s.prefix_from())) {
        to_release_.push_back(s.prefix_from());
      }
    }
  }
  // Else every rank rejected the batch alike: its sequences fail (not those the step
  // skipped), the group stays.
  LLMINT8_LOG(ERROR) << "step rejected by the workers: " << why;
  // Out of memory beside prompts: what grew is the prompts' KV and activations, so they fail,
  // and the decoding sequences (untouched: a refused step changes nothing on the workers) go
  // on at the next step. Else every sequence of the step fails.
  const size_t decodes = std::count(batch.decoding.begin(), batch.decoding.end(), true);
  const bool spare_decodes = memory && decodes > 0 && decodes < in_step.size();
  // A batch the workers reject for another reason is the coordinator's fault (a request it
  // let through is valid), not the client's: INTERNAL, not the workers' INVALID_ARGUMENT.
  const absl::Status failure =
      memory ? why
             : absl::InternalError(absl::StrCat("the workers rejected a step (a server fault, ",
                                                absl::StatusCodeToString(why.code()), ": ",
                                                why.message(), "); retry the request"));
  std::vector<Exit> exits(running_.size(), Exit::kStays);
  for (size_t j = 0; j < in_step.size(); ++j) {
    const size_t i = in_step[j];
    if (spare_decodes && batch.decoding[j]) continue;
    running_[i]->Fail(failure);
    exits[i] = Exit::kRelease;
  }
  Retire(exits);
}

bool Scheduler::TakeNewGroup() {
  // The running sequences fail (or go back to the queue), and parked sequences and
  // pending releases went with the group, idle or not.
  FailRunning(
      absl::UnavailableError("a worker was lost while this request was running; the group is "
                             "re-forming, retry the request"),
      /*requeue_unsent=*/true);
  if (absl::Status refused = group_->refusal(); !refused.ok()) FailQueued(refused);
  if (!group_->WaitReady(absl::Milliseconds(100))) {
    FailUnresumed();
    return false;
  }
  running_epoch_ = group_->epoch();
  {
    // The group is back: what waited for it waits for room now, as other requests do.
    absl::MutexLock lock(&mu_);
    queue_.ForEachPreempted([](Sequence& s) { s.set_resume_by(absl::InfiniteFuture()); });
  }
  kv_budget_ = KvBudget();
  group_kv_budget_ = kv_budget_;
  budget_recovery_at_ = absl::InfiniteFuture();
  budget_recovery_wait_ = options_.kv_budget_recovery;
  budget_recovered_ = false;
  token_masks_ = group_->takes_token_masks();
  absl::MutexLock lock(&mu_);
  PublishLocked();  // the new budget, for GetModelInfo and the metrics
  return true;
}

void Scheduler::Loop() {
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      const bool have_running = !running_.empty();
      // A draining group takes nothing new from the queue (those requests wait for the next
      // group), only what it preempted.
      const bool admitting = !group_->draining() || queue_.HasPreempted();
      auto has_work = [this, have_running, admitting]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
        return stop_ || wake_ || have_running || (admitting && !queue_.empty());
      };
      mu_.AwaitWithTimeout(absl::Condition(&has_work), absl::Milliseconds(100));
      wake_ = false;
      if (stop_) break;
    }
    if (!group_->ready() || group_->epoch() != running_epoch_) {
      if (!TakeNewGroup()) continue;
    }
    ReleaseFinished();
    RecoverBudgetWhenDue();
    // A release that failed broke the group: queued requests wait for the next one rather
    // than be admitted into a step that cannot run.
    if (!group_->ready() || group_->epoch() != running_epoch_) continue;
    {
      absl::MutexLock lock(&mu_);
      // A member is shutting down once the group holds no sequence: the parked ones go now,
      // the running ones when they finish, and nothing new is admitted. What it preempted
      // comes back as room frees; until then the parked ones stay (admission evicts them as
      // it needs their room), so that the group does not empty and end before.
      if (group_->draining() && !queue_.HasPreempted()) EvictParkedAbove(0);
      AdmitLocked(/*preempted_only=*/group_->draining());
    }
    PreemptForStep();
    // What admission and preemption evicted leaves the workers before the step grows.
    if (!to_release_.empty()) ReleaseFinished();
    if (running_.empty()) continue;

    StepBatch batch = FormStep();
    if (batch.request.seqs_size() == 0) {
      // Every sequence waits (not expected): look again shortly rather than spin a core.
      absl::SleepFor(absl::Milliseconds(1));
      continue;
    }
    {
      absl::MutexLock lock(&mu_);
      batch.request.set_step_id(++steps_);
    }
    const absl::Time step_start = absl::Now();
    absl::StatusOr<v1::StepResponse> response = group_->Step(batch.request, running_epoch_);
    if (response.ok() && metrics_ != nullptr) {
      metrics_->RecordStep(batch.request.seqs_size(), absl::Now() - step_start);
    }
    if (!response.ok()) {
      if (response.status().code() == absl::StatusCode::kCancelled) {
        // Stop cancelled the step: its sequences fail with the others, as the server's end.
        absl::MutexLock lock(&mu_);
        if (stop_) break;
      }
      if (!group_->ready() || group_->epoch() != running_epoch_) {
        // A step that reached no worker took nothing there: its input is unsent again, so a
        // sequence it would have started waits for the next group (as one queued does).
        if (StepNotSent(response.status())) {
          for (size_t i : batch.in_step) running_[i]->Unsend();
        }
        FailRunning(absl::UnavailableError(response.status().message()), /*requeue_unsent=*/true);
      } else {
        StepRefused(batch, response.status());
      }
      continue;
    }
    // Results pair with sequences by position: one out of order would stream another
    // request's token to each client.
    int mismatched = -1;
    for (int j = 0; j < response->results_size() && j < batch.request.seqs_size(); ++j) {
      if (response->results(j).seq_id() != batch.request.seqs(j).seq_id()) {
        mismatched = j;
        break;
      }
    }
    if (response->results_size() != batch.request.seqs_size() || mismatched >= 0) {
      // The group stays: first free what it holds for this scheduler.
      for (const std::shared_ptr<Sequence>& seq : running_) to_release_.push_back(seq->id());
      for (const std::shared_ptr<Sequence>& seq : held_sources_) to_release_.push_back(seq->id());
      EvictParkedAbove(0);
      group_->Release(to_release_).IgnoreError();
      FailRunning(
          absl::InternalError(
              mismatched < 0 ? absl::StrCat("rank 0 returned ", response->results_size(),
                                            " tokens for a batch of ", batch.request.seqs_size())
                             : absl::StrCat("rank 0 returned result ", mismatched, " for sequence ",
                                            response->results(mismatched).seq_id(), ", sent ",
                                            batch.request.seqs(mismatched).seq_id())),
          /*requeue_unsent=*/false);
      continue;
    }
    TakeResults(batch, *response);
    ReleaseFinished();
  }
  FailRunning(absl::UnavailableError("the server is shutting down"), /*requeue_unsent=*/false);
}

}  // namespace llmint8::coordinator
