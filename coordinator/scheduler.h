// Continuous batching: one thread forms a batch every step from the running sequences (one
// new token each) and newly admitted ones (their whole prompt: prefill), sends it to every
// worker through the StepGroup (coordinator/step_group.h: the service's WorkerGroup), and feeds
// the sampled tokens back to the sequences.
// Sequences join and leave between steps; a finished or cancelled sequence is released on
// every worker right after the step that finished it (or at the next step boundary).
//
// Admission is in the queue's order (coordinator/wait_queue.h: with Scheduling::kFcfs first
// come, first served; with kPriority by each request's priority, lower first, as vLLM's
// --scheduling-policy=priority, and then first come) from a bounded queue, limited by
// max_batch and by a KV budget in positions:
// kv_budget_tokens when set, else what the group's workers reported they can hold
// (StepGroup::kv_capacity_tokens), else default_kv_budget_tokens; never more than max_batch *
// max_context. What a running sequence counts against it depends on SchedulerOptions::
// preemption: with kRecompute (the default, as in vLLM) the positions it holds after the
// coming step (its whole prompt from admission on, one more per generated token), and a
// sequence is admitted when it fits with room for the running ones' growth over its prefill's
// steps (chunks of prefill_chunk) and its own first token; when the running sequences outgrow
// the budget, parked prefix-cache sequences give their room first,
// then the last admitted ones are preempted (a sequence admitted again is the last admitted;
// with kPriority the last to arrive of the lowest priority; one sequence always stays; a
// cancelled one leaves instead; finished first choices held for later choices are not running
// and stay): the workers drop their cache, they go back to the
// head of the queue (of their priority) with their output so far (in id order, which is the
// order they arrived but for requests that arrive together; before the requests not admitted
// yet; a draining group takes them back too), and once admitted again their prompt and
// generated tokens are prefilled again (recompute) and they go on where they were (on CPU workers
// to the bit: the tokens and logprobs are those of a run never preempted; a seeded draw stays the
// same). With kOff each sequence reserves prompt + max_new_tokens at admission and is never
// preempted, but fewer run at once when max_new_tokens is large. With kPriority and kRecompute a
// request that finds no room (batch slot or KV) preempts running sequences of a lower priority
// until it fits (the lowest, then the last to arrive, first; of the last priority it takes, those
// it does not need stay), when they make room at all. When the workers
// refuse a step for memory (they hold less than the budget: kv_budget_tokens set above it, or
// memory their report did not count), with kRecompute parked sequences go, the budget comes down
// below the positions the workers held and were asked to add (never up), the next step's preemption
// makes the batch fit it and the refused sequences go again; the budget stays lower until the group
// re-forms or, with kv_budget_recovery, until that long passed without a refusal (then it goes
// back up, and a refusal after that doubles the wait). A sequence refused alone, with nothing to
// make room, fails (RESOURCE_EXHAUSTED) and the budget goes back to the group's. With kOff a
// refused step's prompts fail. Other refusals (a batch every rank rejects alike) fail the step's
// sequences. Prompts are prefilled in chunks (chunked prefill): one step carries at most
// max_prefill_tokens prompt tokens, at most prefill_chunk of one sequence, next to the decode
// tokens of the running sequences, so a long prompt delays the other streams by a chunk's compute
// per step rather than by its whole prefill. With prefill_chunk 0 a prompt goes whole (one longer
// than max_prefill_tokens as the step's only prompt; one the budget's remainder left out goes
// first in the next step's: by priority, ahead of the lower values admitted after it, which
// it delays a step at most) and admission also waits for room in the step's prefill budget. Prompts
// to score (prompt_logprobs) need the logits of every position: they go in chunks too, at most
// score_chunk of their tokens per step, beside the other sequences (the workers keep logits room
// for max_batch + score_chunk rows). A sequence that finished normally may stay on the workers in
// the prefix cache (coordinator/prefix_cache.h) while no running sequence needs its KV room: a
// later prompt that starts with its tokens (or with a running sequence's prompt) copies those
// positions (SeqStep.prefix_from) and prefills only the rest; the later choices of a prompt asked
// with n start from the first choice's cached prompt likewise. With speculative_tokens a generating
// sequence's step may carry draft tokens by prompt lookup (coordinator/prompt_lookup.h) that rank 0
// verifies: the accepted ones are its next tokens, the rest are dropped by its next step
// (SeqStep.drop_positions). When the group breaks, running sequences fail with UNAVAILABLE (with
// resume_on_group_loss those that went to the workers are preempted instead and wait that long for
// the next group) and queued ones wait for the group to re-form; while the group is refused (the
// workers cannot hold the model) queued ones fail with its FAILED_PRECONDITION.
//
// Thread-safety: Enqueue / Cancel / counters are safe from any thread.
#ifndef LLMINT8_COORDINATOR_SCHEDULER_H_
#define LLMINT8_COORDINATOR_SCHEDULER_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <ostream>
#include <span>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "coordinator/metrics.h"
#include "coordinator/prefix_cache.h"
#include "coordinator/prompt_lookup.h"
#include "coordinator/sequence.h"
#include "coordinator/step_group.h"
#include "coordinator/wait_queue.h"

namespace llmint8::coordinator {

// SchedulerOptions::scheduling (see above).
enum class Scheduling { kFcfs, kPriority };
std::string_view SchedulingName(Scheduling s);  // "fcfs", "priority"
// InvalidArgument naming the values for anything else.
absl::StatusOr<Scheduling> ParseScheduling(std::string_view name);

// SchedulerOptions::preemption (see above).
enum class Preemption { kRecompute, kOff };
std::string_view PreemptionName(Preemption p);  // "recompute", "off"
// InvalidArgument naming the values for anything else.
absl::StatusOr<Preemption> ParsePreemption(std::string_view name);

struct SchedulerOptions {
  int32_t max_batch = 32;                // sequences per step
  int32_t queue_capacity = 256;          // waiting requests; more get RESOURCE_EXHAUSTED
  int64_t kv_budget_tokens = 0;          // 0: from the group (see above)
  int64_t default_kv_budget_tokens = 0;  // 0: max_batch * max_context
  int64_t max_prefill_tokens = 4096;     // prompt tokens per step
  int64_t prefill_chunk = 512;           // prompt tokens of one sequence per step; 0: whole
  int64_t score_chunk = 256;             // tokens per step of prompts being scored (>= 1)
  int64_t max_context = 2048;
  Preemption preemption = Preemption::kRecompute;
  Scheduling scheduling = Scheduling::kFcfs;
  // After the workers refused a step for memory and the budget came down (see above), it goes
  // back to the group's once this long passed without another such refusal: a shortage that
  // passes (another process's memory on a shared GPU) does not cost the capacity until the
  // group re-forms. A refusal after it went back brings it down again and doubles the wait (up
  // to 64 times this; the group re-forming starts over). Zero: the lowered budget stays until
  // the group re-forms.
  absl::Duration kv_budget_recovery = absl::Minutes(1);
  // Zero: a running sequence whose worker group is lost fails (UNAVAILABLE). Positive (with
  // kRecompute): one that went to the workers is preempted instead and waits up to this long
  // for a group to re-form, then is prefilled again (prompt and output so far) and goes on.
  absl::Duration resume_on_group_loss = absl::ZeroDuration();
  // End-of-sequence ids, sorted: config.json's eos_token_id and generation_config.json's.
  std::vector<int32_t> eos_token_ids = {2};
  // Token ids rank 0 may return: [0, vocab_size); one outside fails its sequence (INTERNAL).
  // 0: unchecked.
  int64_t vocab_size = 0;
  // Automatic prefix caching (coordinator/prefix_cache.h): at most this many finished
  // sequences stay on the workers for later prompts that start with the same tokens (at least
  // min_shared_prefix of them), and prompts start from running sequences' prompts alike; 0:
  // off (but for the choices of one request's prompt). Parked sequences use KV room no
  // running sequence reserves, and give it back, least recently used first, when admission
  // needs it.
  int32_t prefix_cache_entries = 256;
  int64_t min_shared_prefix = 16;
  // Speculative decoding by prompt lookup (coordinator/prompt_lookup.h): a generating
  // sequence whose last tokens occurred before in its prompt or output sends up to this many
  // of the tokens that followed them as drafts beside its next token, and rank 0 keeps those
  // its samples equal (SeqStep.draft_token_ids): one step may then give several tokens, the
  // same tokens (on CPU workers to the bit). 0: off; at most kMaxSpeculativeTokens. Not for
  // guided sequences (a mask is one position's); never past max_new_tokens. Such a sequence
  // counts room for this many drafts against the KV budget as it generates.
  int32_t speculative_tokens = 0;
  PromptLookup prompt_lookup;
  // Finding guided sequences' token masks is scheduler-thread work every step; once a step's
  // masks took this long, its other generating guided sequences wait for the next step (the
  // rest of the batch goes; one generating guided sequence goes every step, round-robin): a
  // few requests whose guides scan slowly (each scan is bounded, coordinator/guided_regex.h)
  // cannot hold every request's step for their sum.
  absl::Duration step_mask_budget = absl::Milliseconds(50);
};

class Scheduler {
 public:
  // `group` and `metrics` (may be null) outlive this.
  Scheduler(SchedulerOptions options, StepGroup* group, ServiceMetrics* metrics = nullptr);
  ~Scheduler();  // Stop()

  void Start();
  // Graceful shutdown, first half: new requests are refused (UNAVAILABLE, so clients retry
  // elsewhere) while the queued and running ones are served; returns when none is left (true),
  // or false after `timeout` or as soon as only queued ones are left and the group is not
  // ready (nothing would serve them). Stop() then fails whatever is left.
  bool Drain(absl::Duration timeout);
  // Makes a Drain in progress (or the next) return false at once: a second shutdown signal.
  void EndDrain();
  // Fails every queued and running sequence with UNAVAILABLE and joins the thread.
  void Stop();

  // RESOURCE_EXHAUSTED when the queue is full (queue_capacity requests wait, preempted
  // sequences not counted), UNAVAILABLE while draining and after Stop.
  absl::Status Enqueue(std::shared_ptr<Sequence> seq);
  // Queues all of `seqs` (in order) or, with the same errors, none: RESOURCE_EXHAUSTED when
  // the queue lacks room for all of them.
  absl::Status EnqueueAll(std::span<const std::shared_ptr<Sequence>> seqs);
  // UNAVAILABLE while draining and after Stop (what EnqueueAll would say then), else OK: a
  // check before the work of making a request's sequences.
  absl::Status Accepting() const;
  // Marks `seq` cancelled; a queued sequence leaves the queue at once, a running one is
  // released on the workers at the next step boundary.
  void Cancel(const std::shared_ptr<Sequence>& seq);

  int queued() const;
  int running() const;
  // KV positions the running sequences count (those they hold after the coming step, or with
  // Preemption::kOff prompt + max_new_tokens each; and finished first choices that later
  // choices still copy), as of the last count, and the budget they may (this group's; 0
  // before the first group).
  int64_t kv_reserved() const;
  int64_t kv_budget() const;
  Preemption preemption() const { return options_.preemption; }
  Scheduling scheduling() const { return options_.scheduling; }
  absl::Duration resume_on_group_loss() const { return options_.resume_on_group_loss; }
  int32_t speculative_tokens() const { return options_.speculative_tokens; }
  const PromptLookup& prompt_lookup() const { return options_.prompt_lookup; }
  uint64_t steps() const;
  // Running sequences preempted since start (Preemption::kRecompute): for KV room, by
  // priority for a request of a higher one, or their group lost (resume_on_group_loss).
  uint64_t preemptions() const;
  // KV positions parked sequences hold (within kv_budget), and prompt positions copied from a
  // cached prefix (a parked or running sequence's, or the first choice's of n) instead of
  // prefilled, in steps that ran, since start.
  int64_t prefix_cached_positions() const;
  int prefix_cached_sequences() const;
  uint64_t prefix_hit_tokens() const;
  // Speculative decoding since start: draft tokens sent, and of them those accepted.
  uint64_t draft_tokens() const;
  uint64_t accepted_draft_tokens() const;

 private:
  void Loop();
  // The group the running sequences went to was lost (or re-formed without them): they fail,
  // or go back to the queue (FailRunning), and what it held for this scheduler is forgotten;
  // queued requests fail when the group is refused. Then waits a while for a group: whether
  // one is ready, this epoch's KV budget and mask support taken from it.
  bool TakeNewGroup();
  // `preempted_only`: the group drains; only sequences it preempted come back.
  void AdmitLocked(bool preempted_only) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Sequences taken off the batch (TakeForPreemption): preempted ones lose what the workers
  // computed for them; unstarted ones had nothing there yet.
  struct TakenBack {
    std::vector<std::shared_ptr<Sequence>> preempted, unstarted;
  };
  // Queues `taken` again; counts the preempted ones and logs the first and then one in a
  // hundred (`why` writes what happened).
  void RequeueLocked(const TakenBack& taken, const std::function<void(std::ostream&)>& why)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // What admitting `seq` next to `running` sequences counts against the budget, and whether
  // it fits beside `running` sequences that count `kv_in_use` (into an empty batch always).
  int64_t AdmissionNeed(const Sequence& seq, size_t running) const;
  bool RoomFor(const Sequence& seq, size_t running, int64_t kv_in_use) const;
  // Scheduling::kPriority with preemption: preempts running sequences of a lower priority than
  // `seq` until it fits (see above); none, and false, when all of them would not make room.
  bool PreemptLowerPriorityLocked(const Sequence& seq) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The running sequence preempted first: the last admitted; by priority, of the lowest
  // priority the last to arrive (VictimKey's largest), as vLLM's priority policy does: one
  // admitted again after a preemption is not the next to go for that alone.
  size_t NextVictim() const;
  static std::pair<int32_t, uint64_t> VictimKey(const Sequence& seq);
  // Takes running_[i] off the batch into `taken`: preempted (Preempt; released at the next
  // ReleaseFinished) once it started, else unstarted.
  void TakeForPreemption(size_t i, TakenBack& taken);
  int64_t KvBudget() const;  // for the group that just became ready
  // kv_budget_recovery: a budget StepRefused lowered goes back to the group's when its wait
  // is over.
  void RecoverBudgetWhenDue();
  // The positions `seq` counts against the budget for its coming step (see above).
  int64_t KvNeed(const Sequence& seq) const;
  // Before a step: cancelled sequences leave; with Preemption::kRecompute each running
  // sequence counts what it will hold after the step, and parked sequences and then the last
  // admitted sequences give their room back while the count is over the budget (one sequence
  // always stays).
  void PreemptForStep();
  // One step's batch (scheduler_step.cc): running_[in_step[j]] is request.seqs(j).
  struct StepBatch {
    v1::StepRequest request;
    std::vector<size_t> in_step;            // (generating guided sequences last: FormStep)
    std::vector<bool> decoding;             // in_step[j] came prefilled: its token is a decode
    std::vector<absl::Status> mask_errors;  // in_step[j]'s guide could not mask its token
    uint64_t hit_tokens = 0;                // prompt positions copied from cached prefixes
  };
  // The next step of the running sequences: each one's decode token (and drafts), or the next
  // chunk of its prompt, but for those that wait (for a prefix another sequence is prefilling,
  // or for room in the step's prefill or score budget). Empty when all of them wait.
  StepBatch FormStep();
  // Rank 0 answered `batch` (a result per sequence): the sequences take their tokens, drafts
  // and prompt scores, or fail alone (a guide that could not mask, a token rank 0 could not
  // sample or outside the vocabulary, drafts it could not have accepted); those that ended
  // leave the batch (Retire).
  void TakeResults(const StepBatch& batch, const v1::StepResponse& response);
  // Every rank refused `batch` (`why`; the group stays and holds what it held before):
  // with preemption, one refused for memory lowers the budget and its sequences go again
  // (see the .cc); else its sequences fail (with a refusal for memory, its decodes stay).
  void StepRefused(const StepBatch& batch, const absl::Status& why);
  // Ends the batch: its sequences fail with `status`, but with `requeue_unsent` (the group was
  // lost) those of which nothing went to the workers yet go back to the head of the queue,
  // for the next group, and with resume_on_group_loss the others are preempted and wait too.
  void FailRunning(const absl::Status& status, bool requeue_unsent);
  // Fails (UNAVAILABLE) the sequences that waited resume_on_group_loss for a group in vain.
  void FailUnresumed();
  // Forgets what the group held for this scheduler (parked sequences, pending releases):
  // the group is gone, or re-formed without them.
  void ForgetGroupState();
  // Fails every queued sequence (the group was refused: waiting would not help).
  void FailQueued(const absl::Status& status);
  void ReleaseFinished();
  // What becomes of running_[i] after a step.
  enum class Exit : uint8_t {
    kStays,
    kRelease,  // released on the workers at the next ReleaseFinished
    kPark,     // finished normally: kept in the prefix cache (what it evicts is released)
  };
  // Takes the running sequences whose exit is not kStays out of the batch, their KV
  // reservation returned. A first choice that finished while later choices of its prompt still
  // wait to copy it stays on the workers (held_sources_) until none waits.
  void Retire(const std::vector<Exit>& exits);
  // Evicts parked sequences, least recently used first, until they hold at most `positions`
  // (0: all of them; released at the next ReleaseFinished); whether any went.
  bool EvictParkedAbove(int64_t positions);
  // `seq` leaves the workers' batch: its reservation returned, parked or to be released.
  void RetireOne(Sequence& seq, Exit exit);
  // Where running_[i]'s first step starts: wait (a source it will copy from is still
  // prefilling), from a copy of another sequence's cached prefix, or (neither) its own prefill.
  struct PrefixChoice {
    bool wait = false;
    std::optional<PrefixCache::Match> from;
  };
  PrefixChoice ChoosePrefix(size_t i);
  // Whether `seq`'s decode steps may carry draft tokens (SchedulerOptions::speculative_tokens):
  // rank 0 verifies them only where each position samples alike (no guide: its mask is the
  // position's).
  bool Speculates(const Sequence& seq) const;
  // Speculative decoding: the draft tokens `seq` (generating; `step` carries its last token)
  // sends beside it, into `step` (KvNeed counted their room).
  void AddDrafts(const Sequence& seq, v1::SeqStep& step);
  // Mirrors the batch's size and KV figures for the counters.
  void PublishLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status AcceptingLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const SchedulerOptions options_;
  StepGroup* const group_;
  ServiceMetrics* const metrics_;

  mutable absl::Mutex mu_;
  WaitQueue queue_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
  bool drain_ended_ ABSL_GUARDED_BY(mu_) = false;  // EndDrain: stop draining now
  bool wake_ ABSL_GUARDED_BY(mu_) = false;
  // Owned by the scheduler thread; mirrored under mu_ for the counters. In admission order;
  // by priority, the lower values first, then admission order (AdmitLocked).
  std::vector<std::shared_ptr<Sequence>> running_;
  int running_count_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t kv_reserved_count_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t kv_budget_count_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t steps_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t prefix_cached_count_ ABSL_GUARDED_BY(mu_) = 0;
  int prefix_cached_sequences_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t prefix_hit_tokens_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t preemptions_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t draft_tokens_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t accepted_draft_tokens_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<int32_t> lookup_tokens_, draft_;  // AddDrafts' scratch (scheduler thread)
  // The generating guided sequence the last step's mask budget stopped at (0: none): the next
  // step's masks start there (FormStep; scheduler thread).
  uint64_t next_masked_ = 0;
  // With prefill_chunk 0, the whole prompt the prefill budget's remainder left out of a step
  // (0: none): the next steps keep it room before the prompts ahead of it (FormStep; scheduler
  // thread).
  uint64_t whole_prompt_claim_ = 0;
  PrefixCache prefix_cache_;  // scheduler thread; mirrored in prefix_cached_count_
  int64_t kv_in_use_ = 0;
  int64_t kv_budget_ = 0;        // this epoch's (set when the group becomes ready)
  int64_t group_kv_budget_ = 0;  // kv_budget_ before refusals lowered it (StepRefused)
  bool token_masks_ = false;     // this epoch's workers take SeqStep.mask (likewise)
  // When a lowered kv_budget_ goes back to group_kv_budget_ (kv_budget_recovery), the wait a
  // lowering sets, and whether it went back up in this epoch (a refusal after that doubles it).
  absl::Time budget_recovery_at_ = absl::InfiniteFuture();
  absl::Duration budget_recovery_wait_;
  bool budget_recovered_ = false;
  int64_t running_epoch_ = 0;
  std::vector<uint64_t> to_release_;
  // First choices that finished (parked) while later choices of their prompt wait to copy
  // them: still on the workers and counted in kv_in_use_ (scheduler thread).
  std::vector<std::shared_ptr<Sequence>> held_sources_;
  std::thread thread_ ABSL_GUARDED_BY(mu_);
  bool started_ ABSL_GUARDED_BY(mu_) = false;  // Start was called
  absl::Notification loop_ended_;              // the Stop that joined the loop thread: joined
};

}  // namespace llmint8::coordinator

#endif  // LLMINT8_COORDINATOR_SCHEDULER_H_
