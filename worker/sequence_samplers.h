// Rank 0's sampling state of the live sequences: each one's sampling parameters, which the
// coordinator sends once with the sequence's first step (SeqStep.sampling), and the tokens it
// has seen when a penalty needs them. Dropped on Release and with the group.
//
//   SequenceSamplers samplers;
//   samplers.Observe(step);                      // every step, prefill chunks too
//   absl::StatusOr<SampledToken> t = samplers.Sample(step, logits_row);
//   samplers.Release(step.seq_id());             // the sequence is done
//
// Not thread-safe (the worker calls it under its lock).
#ifndef LLMINT8_WORKER_SEQUENCE_SAMPLERS_H_
#define LLMINT8_WORKER_SEQUENCE_SAMPLERS_H_

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "kernels/sampling.h"
#include "llmint8/v1/worker.pb.h"
#include "worker/token_sampler.h"

namespace llmint8::worker {

class SequenceSamplers {
 public:
  // Takes in one step of `step.seq_id()`: its sampling parameters when the step sets them
  // (greedy ones for a sequence that starts without), and its tokens when a penalty counts
  // them; a sequence that starts from another's prefix (SeqStep.prefix_from) takes that
  // one's first prefix_length tokens.
  void Observe(const v1::SeqStep& step);
  // The sequence's next token from its logits row (the step Observe just took in, without
  // draft tokens), with the min_tokens bans while step.sample_index() < min_tokens and the
  // step's token mask (the logprobs are then of the masked row: kernels/sampling.h).
  // InvalidArgument as SampleToken,
  // for a mask id outside the row, for a sequence never observed, and for one whose penalty
  // needs a prefix's tokens that were not kept. SampleDrafts with one row.
  absl::StatusOr<SampledToken> Sample(const v1::SeqStep& step, std::span<const float> logits);
  // A step with draft tokens (SeqStep.draft_token_ids; the worker refuses them with a mask)
  // or without: samples row(0), the position of token_ids' last token, as Sample does, then
  // while each sample equals the next draft token, row(j), that draft's position, at
  // sample_index + j, with the accepted drafts among the sequence's tokens for the
  // penalties. Returns the first sample that differs from its draft (or the one after the
  // last draft), how many drafts were accepted and their samples (logprobs): the tokens
  // Sample would have given one step at a time. Errors as Sample, and InvalidArgument when a
  // step since the last one that sampled (Observe checks each) dropped other than the
  // positions of the drafts rank 0 did not accept (the cache would then hold positions of
  // tokens the sequence does not have; the other ranks cannot tell).
  struct Verified {
    SampledToken token;
    int32_t accepted = 0;
    std::vector<SampledToken> drafts;  // the accepted drafts' samples (their logprobs)
  };
  absl::StatusOr<Verified> SampleDrafts(const v1::SeqStep& step,
                                        absl::FunctionRef<std::span<const float>(int)> row);
  void Release(uint64_t seq_id) { states_.erase(seq_id); }
  void Clear() { states_.clear(); }
  size_t size() const { return states_.size(); }

 private:
  struct State {
    kernels::SamplingParams params;
    kernels::SamplingParams early;  // params with the min_tokens bans
    int32_t min_tokens = 0;
    bool keep_tokens = false;   // a penalty needs `seen`
    std::vector<int32_t> seen;  // prompt and generated tokens, when keep_tokens
    // Why `seen` lacks tokens a penalty needs (its next sample fails), empty when it holds
    // them all: started from a prefix (SeqStep.prefix_from) whose tokens rank 0 did not keep,
    // or given a penalty by a later step after tokens went by uncounted.
    std::string tokens_unknown;
    bool observed = false;  // a step of the sequence has been taken in
    // Draft positions the last step cached that rank 0 did not accept: what the sequence's
    // next step must drop (SeqStep.drop_positions) for the cache to hold its tokens; and
    // why one did not (the sequence's next sample fails), empty when all did.
    int32_t pending_drop = 0;
    std::string drop_error;
  };
  static State MakeState(const v1::SamplingParams& params);
  // Sample at `sample_index` with the state's parameters and the step's logprob requests.
  static absl::StatusOr<SampledToken> SampleAt(State& s, const v1::SeqStep& step,
                                               std::span<const float> logits, int32_t sample_index);

  absl::flat_hash_map<uint64_t, State> states_;
};

}  // namespace llmint8::worker

#endif  // LLMINT8_WORKER_SEQUENCE_SAMPLERS_H_
