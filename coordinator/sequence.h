// One Generate request as the scheduler sees it, shared by the RPC handler thread (which
// streams its output and may cancel it) and the scheduler thread (which advances it).
//
// The scheduler pushes responses and finally a status into the outbox; the handler takes them
// with WaitOutput. Cancel() may be called from any thread at any time.
#ifndef LLMINT8_COORDINATOR_SEQUENCE_H_
#define LLMINT8_COORDINATOR_SEQUENCE_H_

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <iterator>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/sampling_limits.h"
#include "coordinator/guided_regex.h"
#include "coordinator/output_constraint.h"
#include "coordinator/stop_matcher.h"
#include "llmint8/v1/generation.pb.h"
#include "llmint8/v1/worker.pb.h"

namespace llmint8::coordinator {

// Validated generation parameters (generation_service.cc fills them from a GenerateRequest).
struct GenerationParams {
  int32_t max_new_tokens = 16;
  float temperature = 0.0f;
  int32_t top_k = 0;
  float top_p = 1.0f;
  uint64_t seed = 0;
  std::vector<std::string> stop;
  bool logprobs = false;
  bool ignore_eos = false;
  float repetition_penalty = 1.0f;  // 1: off
  float frequency_penalty = 0.0f;   // 0: off
  float presence_penalty = 0.0f;    // 0: off
  int32_t top_logprobs = 0;         // candidates returned per token
  bool prompt_logprobs = false;     // score the prompt (max_new_tokens may then be 0)
  bool echo_prompt = false;         // return the prompt's tokens, scored or not (likewise)
  float min_p = 0.0f;               // 0: off
  std::vector<std::pair<int32_t, float>> logit_bias;  // (token id, bias), by id
  std::vector<int32_t> stop_token_ids;                // sorted
  int32_t min_tokens = 0;  // no end (eos, stop ids, stop strings) before this many tokens
  int32_t truncate_prompt_tokens = 0;  // keep the prompt's last this many tokens; 0: all
  int32_t priority = 0;                // lower is admitted first (Scheduling::kPriority)
  // Guided decoding (GenerateRequest.guide; checked): the text is one of these choices, or
  // one JSON object; neither: free text.
  std::vector<std::string> guided_choice;
  bool guided_json_object = false;
  // guided_regex, or guided_json written as one (json_schema.h): compiled once, shared by the
  // request's sequences (and by later requests with the same guide, guide_cache.h), which
  // count their automaton work to guided_work, the request's own.
  std::shared_ptr<const CompiledRegex> guided_regex;
  std::shared_ptr<RegexRequestWork> guided_work;

  bool guided() const {
    return guided_json_object || !guided_choice.empty() || guided_regex != nullptr;
  }

  // Whether a penalty counts the sequence's tokens (rank 0 then keeps them).
  bool counts_tokens() const {
    return PenaltiesCountTokens(repetition_penalty, frequency_penalty, presence_penalty);
  }
};

// Turns one sequence's generated token ids into complete UTF-8 text pieces.
class TokenTextStream {
 public:
  virtual ~TokenTextStream() = default;
  virtual std::string Add(int32_t token_id) = 0;
  virtual std::string Flush() = 0;  // text held back at the end (an incomplete sequence)
  // The bytes Add holds back now (part of a character), which a later Add releases.
  virtual size_t held_bytes() const = 0;
  // One token's text alone, valid UTF-8 (special tokens too: "</s>"), and its raw bytes (part
  // of a UTF-8 character stays as it is), from one decode; no state changes.
  struct TextAndBytes {
    std::string text;
    std::string bytes;
  };
  virtual TextAndBytes TokenTextAndBytes(int32_t token_id) const = 0;
  // The text alone (a prompt token's label).
  std::string TokenText(int32_t token_id) const { return TokenTextAndBytes(token_id).text; }
  // The pieces of `ids` decoded as a stream of their own (joined, the decoded text); no state
  // changes.
  virtual std::vector<std::string> Pieces(std::span<const int32_t> ids) const = 0;
  // The pieces of a prompt whose text this stream's tokens continue (an echo): the bytes of a
  // character the prompt leaves incomplete stay held here, for the first token to complete
  // (prompt and tokens joined decode as one text). Default: Pieces.
  virtual std::vector<std::string> StartWith(std::span<const int32_t> ids) { return Pieces(ids); }
};

// Wakes a handler that follows several sequences at once (an OpenAI request with several
// prompts or choices) when any of them has output: each sequence notifies it after it adds a
// response or finishes. Thread-safe.
class OutputSignal {
 public:
  uint64_t version() const;
  void Notify();
  // Waits up to `timeout` for a Notify after version() returned `seen`.
  void WaitPast(uint64_t seen, absl::Duration timeout) const;

 private:
  mutable absl::Mutex mu_;
  uint64_t version_ ABSL_GUARDED_BY(mu_) = 0;
};

// Whether a request's client has gone, for others than its handler: the scheduler asks it
// for a full queue, freeing the places of clients that cancelled since the handler's last
// poll (up to ~50 ms ago). It asks `gone` (ServerContext::IsCancelled: thread-safe) until the
// handler detaches, which it does before it returns (and its context goes); false after.
class ClientProbe {
 public:
  explicit ClientProbe(std::function<bool()> gone) : gone_(std::move(gone)) {}
  bool Gone() const {
    absl::MutexLock lock(&mu_);
    return gone_ != nullptr && gone_();
  }
  void Detach() {
    absl::MutexLock lock(&mu_);
    gone_ = nullptr;
  }

 private:
  mutable absl::Mutex mu_;
  std::function<bool()> gone_ ABSL_GUARDED_BY(mu_);
};

class Sequence {
 public:
  Sequence(uint64_t id, std::vector<int32_t> prompt, GenerationParams params,
           std::unique_ptr<TokenTextStream> text);

  uint64_t id() const { return id_; }
  const std::vector<int32_t>& prompt() const { return prompt_; }
  const GenerationParams& params() const { return params_; }
  // Positions this sequence may occupy in the KV cache.
  int64_t max_tokens() const {
    return static_cast<int64_t>(prompt_.size()) + params_.max_new_tokens;
  }

  // ---- Handler side ----
  // Waits up to `timeout` for output; moves pending responses into `out`. Returns the final
  // status once the scheduler has finished the sequence (after its last response), else
  // nullopt.
  std::optional<absl::Status> WaitOutput(absl::Duration timeout,
                                         std::vector<v1::GenerateResponse>& out);
  void Cancel() { cancelled_.store(true); }
  // The client's deadline (InfiniteFuture when none); a queued sequence past it is dropped.
  void set_deadline(absl::Time deadline) { deadline_ = deadline; }
  // The client's id for its request (x-request-id; set before the sequence is queued), for the
  // request log; may be empty.
  void set_request_id(std::string id) { request_id_ = std::move(id); }
  const std::string& request_id() const { return request_id_; }
  // Who else to wake on output (set before the sequence is queued; may be null).
  void set_signal(std::shared_ptr<OutputSignal> signal) { signal_ = std::move(signal); }
  const std::shared_ptr<OutputSignal>& signal() const { return signal_; }
  // Another sequence of the same prompt and parameters but the seed (choice 0 of n) whose
  // cached prompt this one may start from instead of prefilling it again (set before the
  // sequence is queued).
  void set_prefix_source(std::weak_ptr<Sequence> source) { prefix_source_ = std::move(source); }
  std::shared_ptr<Sequence> prefix_source() const { return prefix_source_.lock(); }
  // Guided decoding (params().guided()): the language the generated text keeps to, and the
  // bytes of the vocabulary's tokens (set before the sequence is queued).
  void set_guide(std::unique_ptr<OutputConstraint> guide,
                 std::shared_ptr<const TokenVocabulary> vocabulary) {
    guide_ = std::move(guide);
    vocabulary_ = std::move(vocabulary);
  }
  // The handler's probe of its client (set before the sequence is queued; may be null).
  void set_client_probe(std::shared_ptr<ClientProbe> probe) { client_probe_ = std::move(probe); }
  bool expired(absl::Time now) const { return now >= deadline_; }
  bool cancelled() const { return cancelled_.load(); }
  // Whether the client is known gone (it cancelled; the handler has not noticed yet, or has).
  bool client_gone() const { return client_probe_ != nullptr && client_probe_->Gone(); }

  // ---- Scheduler side (one thread) ----
  // Appends rank 0's sampled token: detokenizes, applies stop / eos / length rules and pushes
  // the response (the final one with usage and timings), with the logprob and top candidates
  // when the params ask for them. `eos_token_ids`: sorted. Returns true when the sequence
  // finished.
  bool AddToken(const v1::SeqResult& sampled, std::span<const int32_t> eos_token_ids);
  // Appends the output of a step that sampled (`sent`, rank 0's `result`): the draft tokens
  // rank 0 accepted (with their scores, result.drafts) until one ends the sequence, then
  // result's token, as AddToken each. Notes the draft positions the workers cached past the
  // sequence's tokens (not accepted, or after its end: drop_positions) and the drafts it
  // kept. Returns whether it finished, and how many drafts became its output.
  struct StepOutput {
    bool finished = false;
    int32_t drafts_kept = 0;
  };
  StepOutput AddStepOutput(const v1::SeqStep& sent, const v1::SeqResult& result,
                           std::span<const int32_t> eos_token_ids);
  // A guided sequence's next token: the ids rank 0 may sample, with the ids that end the
  // sequence (`eos_token_ids` unless ignore_eos, the stop ids) where the text may end and
  // never elsewhere, as `mask`: the allowed or the banned ids of [0, vocab_size) (the
  // vocabulary's size for 0), in the guide's form of the set (TokenSet: the shorter list, but
  // for the end ids and the ids past the tokenizer); OK, `mask` untouched, when the sequence
  // is not guided. An error (INVALID_ARGUMENT: the scan's cost,
  // or no token may come) is the sequence's: it cannot go on.
  absl::Status FillTokenMask(std::span<const int32_t> eos_token_ids, int32_t vocab_size,
                             v1::TokenMask* mask);
  // Keeps the scores of prompt tokens a prefill step returned (params().prompt_logprobs); the
  // first response carries them. Internal, keeping none of them, when one is NaN: rank 0
  // could not score it (the model's logits there are not finite).
  absl::Status AddPromptScores(const v1::SeqResult& prefilled);
  // A prompt-only request (max_new_tokens 0) once its prompt is scored: pushes its one
  // response, the finish with the prompt's tokens.
  void FinishPromptOnly();
  // Ends the stream with an error (the handler returns it to the client).
  void Fail(const absl::Status& status);
  // Whether it ended with an error (Fail): such a sequence's cache is no prefix for others.
  bool failed() const;
  // The first admission's time (a sequence preempted and admitted again keeps it).
  void MarkAdmitted() { admitted_ = std::min(admitted_, absl::Now()); }
  // SchedulerOptions::resume_on_group_loss: a preempted sequence waits for a lost group to
  // re-form until resume_by() (infinite: no limit, as a request not admitted yet). A running
  // one may be resumed after a loss once, and again only once it generated a token since (one
  // whose steps break every group, its prefill again included, fails instead of stalling the
  // service).
  absl::Time resume_by() const { return resume_by_; }
  void set_resume_by(absl::Time t) { resume_by_ = t; }
  bool may_resume() const { return may_resume_; }
  void MarkResumed() {
    may_resume_ = false;
    resume_mark_ = num_generated();
  }
  // What the workers prefill: the prompt, or after a preemption (Preempt) the prompt and the
  // tokens generated before it, whose positions are computed again.
  std::span<const int32_t> input() const { return resume_.empty() ? prompt_ : resume_; }
  // Chunked prefill: the input goes to the workers in pieces of TakePrompt(limit) tokens
  // (limit >= 1; the rest of the input when it is shorter) until prefilled().
  std::span<const int32_t> TakePrompt(int64_t limit);
  int64_t prompt_remaining() const { return std::ssize(input()) - prompt_sent_; }
  bool prefilled() const { return prompt_remaining() == 0; }
  // Whether any of the input went to the workers (or was copied from a prefix) since the
  // sequence was admitted.
  bool started() const { return prompt_sent_ > 0; }
  // Whether the steps that prefill the input score the prompt (prompt_logprobs, and not a
  // prefill again after a preemption: the first one scored it).
  bool scoring() const { return params_.prompt_logprobs && resume_.empty(); }
  // The input token after those sent so far (none once prefilled).
  std::optional<int32_t> next_prompt_token() const {
    return prefilled() ? std::nullopt : std::optional<int32_t>(input()[prompt_sent_]);
  }
  // Marks the input's first `n` tokens sent without sending them: the workers copy their
  // cache from the prefix source (SeqStep.prefix_from). Only before any is sent.
  void SkipPrompt(int64_t n);
  // The input's tokens whose positions the workers hold: those of the steps that ran
  // (MarkStepRan after each).
  std::span<const int32_t> prompt_on_workers() const {
    return input().first(static_cast<size_t>(prompt_on_workers_));
  }
  void MarkStepRan() { prompt_on_workers_ = prompt_sent_; }
  // The workers refused the step that carried this sequence (and hold nothing of it): the
  // input it sent since the last step that ran goes again, and one that had not started
  // chooses its prefix again.
  void Unsend();
  // Preemption by recompute: the workers dropped this sequence's cache to make room for
  // others. Its output so far stays; when it is admitted again its input is the prompt and
  // the tokens generated so far, and the step that prefills them samples the next token
  // (sample_index num_generated(): a seeded draw is the one it would have been). One that
  // generated nothing yet starts over (the prompt scores it had are dropped: they come
  // again). Only for a sequence off the workers' batch.
  void Preempt();
  // Any thread (the request log reads it while the scheduler may still hold a cancelled one).
  int32_t preemptions() const { return preemptions_.load(std::memory_order_relaxed); }
  // KV positions the scheduler counts for this sequence while it is on the workers.
  int64_t kv_positions() const { return kv_positions_; }
  void set_kv_positions(int64_t n) { kv_positions_ = n; }
  // Whether the workers hold this sequence's cache: from admission until the scheduler retires
  // it (then it is released) or the group is lost.
  bool on_workers() const { return on_workers_; }
  void set_on_workers(bool on) { on_workers_ = on; }
  // The latest generated token; only once there is one (num_generated() >= 1).
  int32_t last_token() const { return generated_.back(); }
  // The tokens whose positions the workers have cached: the input sent so far and every
  // generated token after it but the last (which was never fed back).
  std::vector<int32_t> cached_tokens() const;
  int32_t num_generated() const { return static_cast<int32_t>(generated_.size()); }
  // The prompt and the generated tokens, into `out` (replaced): prompt lookup's text.
  void Tokens(std::vector<int32_t>& out) const;
  // Speculative decoding: positions the workers hold past this sequence's tokens (draft
  // tokens of its last step that rank 0 did not accept), which its next step drops
  // (SeqStep.drop_positions). 0 after a preemption (the cache is gone).
  int32_t drop_positions() const { return drop_positions_; }
  // Draft tokens sent with this sequence, and of them those that became its output (the
  // request log's drafts=); any thread.
  int32_t drafts_sent() const { return drafts_sent_.load(std::memory_order_relaxed); }
  int32_t drafts_accepted() const { return drafts_accepted_.load(std::memory_order_relaxed); }

 private:
  void Finish(v1::GenerateResponse response, v1::FinishReason reason);
  // Adds `response` (if any) to the outbox and sets the final status (if given and none is
  // set yet); wakes the handler.
  void Push(std::optional<v1::GenerateResponse> response, std::optional<absl::Status> final);
  // Moves the prompt's tokens and scores into the first response.
  void AttachPromptTokens(v1::GenerateResponse& response);
  void AddCandidates(const google::protobuf::RepeatedPtrField<v1::TokenCandidate>& top,
                     google::protobuf::RepeatedPtrField<v1::TopLogprob>* out) const;

  const uint64_t id_;
  const std::vector<int32_t> prompt_;
  const GenerationParams params_;
  std::unique_ptr<TokenTextStream> text_;
  // Of the bytes text_ holds back, those already counted in a generated token's
  // decoded_bytes (a prompt's incomplete last character is not: the token that completes it
  // adds it).
  size_t counted_held_bytes_ = 0;
  StopMatcher stop_;
  std::atomic<bool> cancelled_{false};
  absl::Time deadline_ = absl::InfiniteFuture();  // set before the sequence is queued
  std::string request_id_;                        // likewise
  std::shared_ptr<OutputSignal> signal_;          // set before the sequence is queued
  std::weak_ptr<Sequence> prefix_source_;         // likewise
  std::shared_ptr<ClientProbe> client_probe_;     // likewise
  std::unique_ptr<OutputConstraint> guide_;       // likewise (scheduler thread after)
  std::shared_ptr<const TokenVocabulary> vocabulary_;
  TokenSet allowed_;                            // FillTokenMask's scratch
  std::vector<int32_t> merged_;                 // likewise
  std::optional<std::vector<int32_t>> enders_;  // FillTokenMask's end ids, sorted

  // Scheduler thread only.
  int64_t prompt_sent_ = 0;
  int64_t prompt_cached_ = 0;  // of them, skipped (copied from a prefix)
  int64_t prompt_on_workers_ = 0;  // of them, in steps that ran
  bool on_workers_ = false;
  std::vector<int32_t> resume_;  // after a preemption: the prompt and the tokens generated
  std::atomic<int32_t> preemptions_{0};  // written by the scheduler thread only
  std::atomic<int32_t> drafts_sent_{0};  // likewise
  std::atomic<int32_t> drafts_accepted_{0};  // likewise
  int64_t kv_positions_ = 0;
  int32_t drop_positions_ = 0;
  std::vector<v1::PromptScore> prompt_scores_;  // for prompt tokens 1, 2, ...: scored so far
  std::vector<int32_t> generated_;
  absl::Time arrival_ = absl::Now();
  absl::Time admitted_ = absl::InfiniteFuture();
  absl::Time resume_by_ = absl::InfiniteFuture();  // scheduler thread
  bool may_resume_ = true;                         // likewise
  int32_t resume_mark_ = 0;  // num_generated() at the last resume (AddToken re-arms past it)
  absl::Time first_token_ = absl::InfiniteFuture();

  mutable absl::Mutex mu_;
  std::deque<v1::GenerateResponse> outbox_ ABSL_GUARDED_BY(mu_);
  std::optional<absl::Status> final_ ABSL_GUARDED_BY(mu_);
};

}  // namespace llmint8::coordinator

#endif  // LLMINT8_COORDINATOR_SEQUENCE_H_
