#include "coordinator/scheduler.h"

#include <algorithm>
#include <functional>
#include <ostream>
#include <sstream>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/sampling_limits.h"

namespace llmint8::coordinator {
namespace {

// What rank 0 needs to sample a sequence: its parameters, and the ids min_tokens holds back
// (the end-of-sequence tokens unless ignored, and the stop ids).
void FillSampling(const GenerationParams& p, std::span<const int32_t> eos_token_ids,
                  v1::SamplingParams* sp) {
  sp->set_temperature(p.temperature);
  sp->set_top_k(p.top_k);
  sp->set_top_p(p.top_p);
  sp->set_seed(p.seed);
  sp->set_repetition_penalty(p.repetition_penalty);
  sp->set_frequency_penalty(p.frequency_penalty);
  sp->set_presence_penalty(p.presence_penalty);
  sp->set_min_p(p.min_p);
  for (const auto& [id, bias] : p.logit_bias) {
    v1::TokenBias* b = sp->add_logit_bias();
    b->set_token_id(id);
    b->set_bias(bias);
  }
  if (p.min_tokens > 0) {
    sp->set_min_tokens(p.min_tokens);
    if (!p.ignore_eos) {
      sp->mutable_min_tokens_banned()->Add(eos_token_ids.begin(), eos_token_ids.end());
    }
    sp->mutable_min_tokens_banned()->Add(p.stop_token_ids.begin(), p.stop_token_ids.end());
  }
}

struct RunningPrefix {
  // The running sequence whose prompt positions on the workers share the longest start with
  // the prompt (at least min_prefix): a prefix source as a parked one is.
  std::optional<PrefixCache::Match> now;
  // The longest start shared with the whole prompt of a sequence ahead in the batch that is
  // still prefilling it: what waiting for its prefill would give.
  int64_t coming = 0;
};

// Sources among the running sequences for running[index]'s prompt: at most all but its last
// token, from sequences whose tokens rank 0 kept when it counts them.
RunningPrefix FindRunningPrefix(std::span<const std::shared_ptr<Sequence>> running, size_t index,
                                int64_t min_prefix) {
  const Sequence& seq = *running[index];
  const size_t most = seq.input().size() - 1;
  RunningPrefix best;
  for (size_t j = 0; j < running.size(); ++j) {
    const Sequence& other = *running[j];
    if (j == index) continue;  // (the running sequences are all on the workers)
    if (seq.params().counts_tokens() && !other.params().counts_tokens()) continue;
    const int64_t shared = SharedStart(seq.input(), other.prompt_on_workers(), most);
    if (shared >= min_prefix && (!best.now.has_value() || shared > best.now->length)) {
      best.now = PrefixCache::Match{other.id(), shared};
    }
    if (j < index && other.prompt_on_workers().size() < other.input().size()) {
      best.coming = std::max(best.coming, SharedStart(seq.input(), other.input(), most));
    }
  }
  return best;
}

// Whether `seq`'s decode steps may carry draft tokens (SchedulerOptions::speculative_tokens):
// rank 0 verifies them only where each position samples alike (no guide: its mask is the
// position's).
bool Speculates(const SchedulerOptions& options, const Sequence& seq) {
  return options.speculative_tokens > 0 && !seq.params().guided();
}

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
  thread_ = std::thread([this] { Loop(); });
}

void Scheduler::Stop() {
  std::vector<std::shared_ptr<Sequence>> queued;
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
    queued = queue_.TakeAll();
  }
  if (thread_.joinable()) thread_.join();
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

absl::Status Scheduler::EnqueueAll(std::span<const std::shared_ptr<Sequence>> seqs) {
  absl::MutexLock lock(&mu_);
  if (stop_ || draining_) {
    return absl::UnavailableError("the server is shutting down; retry the request");
  }
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

int64_t Scheduler::KvNeed(const Sequence& seq) const {
  if (options_.preemption == Preemption::kOff) return seq.max_tokens();
  // A prefilling sequence counts its whole input (the prompt, and after a preemption the
  // tokens generated before it: num_generated() of them); a generating one what its cache
  // holds after the coming step's token: the prompt and every generated token, and with
  // speculative decoding room for the step's drafts (the workers hold their positions until
  // the next step drops those not accepted).
  const int64_t drafts =
      seq.prefilled() && Speculates(options_, seq) ? options_.speculative_tokens : 0;
  return std::min(seq.max_tokens(), std::ssize(seq.prompt()) + seq.num_generated() + drafts);
}

void Scheduler::AddDrafts(const Sequence& seq, v1::SeqStep& step) {
  if (!Speculates(options_, seq)) return;
  // The accepted drafts and the token after them are generated tokens: never more than
  // max_new_tokens (which also keeps the drafts' positions within the context: validation
  // holds prompt + max_new_tokens to it).
  const int32_t k =
      std::min(options_.speculative_tokens, seq.params().max_new_tokens - seq.num_generated() - 1);
  if (k <= 0) return;
  seq.Tokens(lookup_tokens_);
  ProposeByPromptLookup(lookup_tokens_, options_.prompt_lookup, k, draft_);
  step.mutable_draft_token_ids()->Add(draft_.begin(), draft_.end());
}

void Scheduler::PreemptForStep() {
  if (options_.preemption != Preemption::kRecompute) return;
  // Sequences cancelled since ReleaseFinished leave now rather than hold room, or be
  // preempted and queued.
  std::erase_if(running_, [this](const std::shared_ptr<Sequence>& seq) {
    if (!seq->cancelled()) return false;
    RetireOne(*seq, Exit::kRelease);
    return true;
  });
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
  // With preemption the running sequences each grow a position a step (and up to
  // speculative_tokens more when their drafts are accepted): room for the next step's growth
  // keeps a sequence just admitted from preempting another at once.
  return KvNeed(seq) + (options_.preemption == Preemption::kRecompute
                            ? static_cast<int64_t>(running) * (1 + options_.speculative_tokens)
                            : 0);
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
    running_.push_back(std::move(next));
  }
  PublishLocked();
}

Scheduler::PrefixChoice Scheduler::ChoosePrefix(size_t i) {
  const Sequence& seq = *running_[i];
  // A later choice of a prompt starts from the first choice's cached prompt while the workers
  // hold it, once they do (its steps prefilled it, or after a preemption prefilled it
  // again): all but the last token.
  // A source behind this sequence in the batch that has not started (it was preempted and
  // admitted again) is not waited for: it may be waiting for this one's prefill of the same
  // prompt (FindRunningPrefix), and neither would go.
  const int64_t prompt = std::ssize(seq.prompt());
  if (std::shared_ptr<Sequence> source = seq.prefix_source();
      source != nullptr && source->on_workers() &&
      (source->started() ||
       std::find(running_.begin(), running_.begin() + static_cast<std::ptrdiff_t>(i), source) !=
           running_.begin() + static_cast<std::ptrdiff_t>(i))) {
    if (std::ssize(source->prompt_on_workers()) < prompt - 1) {
      return {.wait = true, .from = std::nullopt};
    }
    return {.wait = false, .from = PrefixCache::Match{source->id(), prompt - 1}};
  }
  // Else the longest cached prefix of a parked or running sequence, for an input not scored.
  if (seq.scoring() || options_.prefix_cache_entries <= 0) return {};
  const int64_t min_prefix = std::max<int64_t>(options_.min_shared_prefix, 1);
  const std::optional<PrefixCache::Match> parked =
      prefix_cache_.Find(seq.input(), seq.params().counts_tokens());
  const RunningPrefix running = FindRunningPrefix(running_, i, min_prefix);
  std::optional<PrefixCache::Match> from = parked;
  if (running.now.has_value() && (!parked.has_value() || running.now->length > parked->length)) {
    from = running.now;
  }
  // A sequence ahead is prefilling at least min_prefix more of this prompt's start (a burst of
  // requests with one system prompt): wait for it rather than compute it too.
  if (running.coming >= (from.has_value() ? from->length : 0) + min_prefix)
    return {.wait = true, .from = std::nullopt};
  if (parked.has_value() && from->id == parked->id) prefix_cache_.MarkUsed(parked->id);
  return {.wait = false, .from = from};
}

void Scheduler::StepRefused(const v1::StepRequest& request, std::span<const size_t> in_step,
                            const std::vector<bool>& decoding, const absl::Status& why) {
  const bool memory = why.code() == absl::StatusCode::kResourceExhausted;
  // Refused for memory, the budget is more than the workers hold (--kv_budget_tokens above
  // it, or memory the workers' report did not count). With preemption: parked sequences go
  // at once (the cheapest room), the budget comes down below what the workers held and were
  // asked to add, the next PreemptForStep makes the batch fit it (the last admitted are
  // preempted), and the refused sequences go again; the budget stays lower until the group
  // re-forms. A sequence refused alone, nothing left to make room, fails, and the budget goes
  // back to the group's: what did not fit may have been that sequence, not the others beside
  // it (if they were, refusals bring it down again).
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
      LLMINT8_LOG(WARNING) << "scheduler: the workers refused a step for memory with " << counted
                           << " KV positions counted (" << why.message()
                           << "); the KV budget comes down from " << kv_budget_ << " to " << lowered
                           << " positions until the group re-forms, and sequences are preempted "
                              "to fit it. Leave --kv_budget_tokens 0 (what the workers report "
                              "they hold) or set it lower";
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
      absl::MutexLock lock(&mu_);
      PublishLocked();  // before the sequence's failure reaches its client
    }
  } else {
    // A cached prefix the step started from may be what the workers refused: it goes.
    for (const v1::SeqStep& s : request.seqs()) {
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
  const size_t decodes = std::count(decoding.begin(), decoding.end(), true);
  const bool spare_decodes = memory && decodes > 0 && decodes < in_step.size();
  std::vector<Exit> exits(running_.size(), Exit::kStays);
  for (size_t j = 0; j < in_step.size(); ++j) {
    const size_t i = in_step[j];
    if (spare_decodes && decoding[j]) continue;
    running_[i]->Fail(why);
    exits[i] = Exit::kRelease;
  }
  Retire(exits);
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
      // The running sequences fail (or go back to the queue), and parked sequences and
      // pending releases went with the group, idle or not.
      FailRunning(
          absl::UnavailableError("a worker was lost while this request was running; the group is "
                                 "re-forming, retry the request"),
          /*requeue_unsent=*/true);
      if (absl::Status refused = group_->refusal(); !refused.ok()) FailQueued(refused);
      if (!group_->WaitReady(absl::Milliseconds(100))) {
        FailUnresumed();
        continue;
      }
      running_epoch_ = group_->epoch();
      {
        // The group is back: what waited for it waits for room now, as other requests do.
        absl::MutexLock lock(&mu_);
        queue_.ForEachPreempted([](Sequence& s) { s.set_resume_by(absl::InfiniteFuture()); });
      }
      kv_budget_ = KvBudget();
      group_kv_budget_ = kv_budget_;
      token_masks_ = group_->takes_token_masks();
      absl::MutexLock lock(&mu_);
      PublishLocked();  // the new budget, for GetModelInfo and the metrics
    }
    ReleaseFinished();
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

    v1::StepRequest request;
    // running_[in_step[j]] is request.seqs(j).
    std::vector<size_t> in_step;
    std::vector<bool> decoding;  // in_step[j] came prefilled: its one token is a decode
    std::vector<absl::Status> mask_errors;  // in_step[j]'s guide could not mask its token
    absl::Duration mask_time;               // finding the guided sequences' masks
    bool guided_in_step = false;
    const int64_t full_prefill_budget = std::max<int64_t>(options_.max_prefill_tokens, 1);
    int64_t prefill_budget = full_prefill_budget;
    // Prompts being scored need every position's logits: at most score_chunk of their tokens
    // go per step, for which the workers keep logits rows.
    int64_t score_budget = std::max<int64_t>(options_.score_chunk, 1);
    uint64_t hit_tokens = 0;
    for (size_t i = 0; i < running_.size(); ++i) {
      const std::shared_ptr<Sequence>& seq = running_[i];
      const bool first_step = !seq->started();
      const bool prefilled = seq->prefilled();
      const bool scored = !prefilled && seq->scoring();
      if (scored ? score_budget <= 0
                 : !prefilled && options_.prefill_chunk > 0 && prefill_budget <= 0) {
        continue;
      }
      std::optional<PrefixCache::Match> prefix;
      if (first_step) {
        const PrefixChoice choice = ChoosePrefix(i);
        if (choice.wait) continue;
        prefix = choice.from;
        // A whole prompt goes alone or within the step's prefill budget. Admission keeps to
        // that budget, but a prompt that waited a step above comes beside the next round's.
        const int64_t whole = seq->prompt_remaining() - (prefix.has_value() ? prefix->length : 0);
        if (!scored && options_.prefill_chunk == 0 && prefill_budget < full_prefill_budget &&
            whole > prefill_budget) {
          continue;
        }
      }
      v1::SeqStep* step = request.add_seqs();
      step->set_seq_id(seq->id());
      if (prefilled) {
        step->add_token_ids(seq->last_token());
        step->set_drop_positions(seq->drop_positions());
        AddDrafts(*seq, *step);
      } else {
        if (prefix.has_value()) {
          seq->SkipPrompt(prefix->length);
          step->set_prefix_from(prefix->id);
          step->set_prefix_length(prefix->length);
          hit_tokens += static_cast<uint64_t>(prefix->length);
        }
        const std::span<const int32_t> piece = seq->TakePrompt(
            scored                       ? score_budget
            : options_.prefill_chunk > 0 ? std::min(options_.prefill_chunk, prefill_budget)
                                         : seq->prompt_remaining());
        prefill_budget -= static_cast<int64_t>(piece.size());
        if (scored) score_budget -= static_cast<int64_t>(piece.size());
        step->mutable_token_ids()->Add(piece.begin(), piece.end());
        // A prompt-only request samples nothing, even after its last chunk.
        step->set_prefill_only(!seq->prefilled() || seq->params().max_new_tokens == 0);
        if (seq->scoring()) {
          step->set_prompt_logprobs(true);
          if (std::optional<int32_t> next = seq->next_prompt_token()) {
            step->set_next_prompt_token(*next);
          }
        }
      }
      in_step.push_back(i);
      decoding.push_back(prefilled);
      // Rank 0 keeps a sequence's sampling parameters from its first step on.
      if (first_step) FillSampling(seq->params(), options_.eos_token_ids, step->mutable_sampling());
      step->set_sample_index(seq->num_generated());
      // A guided sequence samples among the tokens its text may go on with. When its guide
      // cannot say which, its tokens still go (the workers keep the step's shape) but nothing
      // is sampled, and it fails after the step.
      absl::Status mask = absl::OkStatus();
      if (!step->prefill_only() && seq->params().guided()) {
        const absl::Time mask_start = absl::Now();
        mask = seq->FillTokenMask(options_.eos_token_ids, static_cast<int32_t>(options_.vocab_size),
                                  step->mutable_mask());
        mask_time += absl::Now() - mask_start;
        guided_in_step = true;
        if (!mask.ok()) {
          step->clear_mask();
          step->set_prefill_only(true);
        }
      }
      mask_errors.push_back(std::move(mask));
      step->set_logprobs(seq->params().logprobs);
      step->set_top_logprobs(seq->params().top_logprobs);
    }
    if (guided_in_step && metrics_ != nullptr) metrics_->RecordGuidedMasks(mask_time);
    if (request.seqs_size() == 0) continue;  // every sequence waits (not expected)
    {
      absl::MutexLock lock(&mu_);
      request.set_step_id(++steps_);
    }
    const absl::Time step_start = absl::Now();
    absl::StatusOr<v1::StepResponse> response = group_->Step(request, running_epoch_);
    if (response.ok() && metrics_ != nullptr) {
      metrics_->RecordStep(request.seqs_size(), absl::Now() - step_start);
    }
    if (!response.ok()) {
      if (!group_->ready() || group_->epoch() != running_epoch_) {
        FailRunning(absl::UnavailableError(response.status().message()), /*requeue_unsent=*/true);
      } else {
        StepRefused(request, in_step, decoding, response.status());
      }
      continue;
    }
    if (response->results_size() != request.seqs_size()) {
      // The group stays: first free what it holds for this scheduler.
      for (const std::shared_ptr<Sequence>& seq : running_) to_release_.push_back(seq->id());
      for (const std::shared_ptr<Sequence>& seq : held_sources_) to_release_.push_back(seq->id());
      EvictParkedAbove(0);
      group_->Release(to_release_).IgnoreError();
      FailRunning(absl::InternalError(absl::StrCat("rank 0 returned ", response->results_size(),
                                                   " tokens for a batch of ", request.seqs_size())),
                  /*requeue_unsent=*/false);
      continue;
    }
    for (size_t i : in_step) running_[i]->MarkStepRan();
    {
      absl::MutexLock lock(&mu_);
      prefix_hit_tokens_ += hit_tokens;  // the copies of a step that ran
    }
    std::vector<Exit> exits(running_.size(), Exit::kStays);
    int64_t drafts = 0;    // draft tokens of the step
    int64_t accepted = 0;  // of them, those that became output (not past a sequence's end)
    for (size_t j = 0; j < in_step.size(); ++j) {
      const std::shared_ptr<Sequence>& seq = running_[in_step[j]];
      const v1::SeqResult& r = response->results(static_cast<int>(j));
      const v1::SeqStep& sent = request.seqs(static_cast<int>(j));
      Exit& exit = exits[in_step[j]];
      if (seq->cancelled()) {
        exit = Exit::kRelease;
        continue;
      }
      if (sent.prompt_logprobs()) seq->AddPromptScores(r);
      if (!mask_errors[j].ok()) {
        seq->Fail(mask_errors[j]);
        exit = Exit::kRelease;
      } else if (!sent.prefill_only() && !r.sample_error().empty()) {
        // Rank 0 could not sample this sequence's token: it fails alone. A request that
        // passed validation cannot cause this (the model's logits did, e.g. all NaN).
        seq->Fail(absl::InternalError(
            absl::StrCat("the next token could not be sampled: ", r.sample_error())));
        exit = Exit::kRelease;
      } else if (!sent.prefill_only() && options_.vocab_size > 0 &&
                 (r.token_id() < 0 || r.token_id() >= options_.vocab_size)) {
        // Not text the tokenizer could decode (it would stream as nothing): a worker's bug.
        seq->Fail(
            absl::InternalError(absl::StrCat("rank 0 returned token id ", r.token_id(),
                                             " outside the vocabulary of ", options_.vocab_size)));
        exit = Exit::kRelease;
      } else if (r.drafts_accepted() < 0 || r.drafts_accepted() > sent.draft_token_ids_size() ||
                 ((sent.logprobs() || sent.top_logprobs() > 0) &&
                  r.drafts_size() != r.drafts_accepted())) {
        seq->Fail(absl::InternalError(absl::StrCat(
            "rank 0 accepted ", r.drafts_accepted(), " of ", sent.draft_token_ids_size(),
            " draft tokens, with ", r.drafts_size(), " scores")));
        exit = Exit::kRelease;
      } else if (!sent.prefill_only()) {
        const Sequence::StepOutput out = seq->AddStepOutput(sent, r, options_.eos_token_ids);
        drafts += sent.draft_token_ids_size();
        accepted += out.drafts_kept;
        if (out.finished) exit = Exit::kPark;
      } else if (seq->prefilled() && seq->params().max_new_tokens == 0) {
        seq->FinishPromptOnly();
        exit = Exit::kPark;
      }
    }
    if (drafts > 0) {
      {
        absl::MutexLock lock(&mu_);
        draft_tokens_ += static_cast<uint64_t>(drafts);
        accepted_draft_tokens_ += static_cast<uint64_t>(accepted);
      }
      if (metrics_ != nullptr) metrics_->RecordSpeculation(drafts, accepted);
    }
    Retire(exits);
    ReleaseFinished();
  }
  FailRunning(absl::UnavailableError("the server is shutting down"), /*requeue_unsent=*/false);
}

}  // namespace llmint8::coordinator
