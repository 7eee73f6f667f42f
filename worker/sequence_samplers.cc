#include "worker/sequence_samplers.h"

#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"

namespace llmint8::worker {

SequenceSamplers::State SequenceSamplers::MakeState(const v1::SamplingParams& params) {
  State s;
  s.params = ToKernelParams(params);
  s.min_tokens = params.min_tokens();
  if (s.min_tokens > 0 && params.min_tokens_banned_size() > 0) {
    s.early = s.params;
    for (int32_t id : params.min_tokens_banned()) {
      s.early.logit_bias.push_back({id, -std::numeric_limits<float>::infinity()});
    }
  } else {
    s.min_tokens = 0;  // nothing to ban: `early` is never used
  }
  s.keep_tokens = CountsTokens(s.params);
  return s;
}

void SequenceSamplers::Observe(const v1::SeqStep& step) {
  auto it = states_.find(step.seq_id());
  if (it == states_.end() || step.has_sampling()) {
    State fresh = MakeState(step.sampling());
    if (it == states_.end()) {
      if (step.prefix_length() > 0 && fresh.keep_tokens) {
        // The sequence starts from another's first prefix_length positions: their tokens.
        auto from = states_.find(step.prefix_from());
        const size_t n = static_cast<size_t>(step.prefix_length());
        // A source whose own tokens are unknown (it started from a prefix rank 0 did not keep)
        // has `seen` without that prefix: not the start of its token list.
        if (from != states_.end() && from->second.tokens_unknown.empty() &&
            from->second.seen.size() >= n) {
          fresh.seen.assign(from->second.seen.begin(), from->second.seen.begin() + n);
        } else {
          fresh.tokens_unknown = absl::StrCat(
              "sequence ", step.seq_id(), " needs its prefix's tokens for a penalty, but rank 0 ",
              "has not kept them for sequence ", step.prefix_from(), " (it has no penalty)");
        }
      }
      it = states_.emplace(step.seq_id(), std::move(fresh)).first;
    } else {
      State& old = it->second;
      fresh.seen = std::move(old.seen);  // the tokens stay the sequence's
      fresh.tokens_unknown = std::move(old.tokens_unknown);
      if (fresh.keep_tokens && !old.keep_tokens && old.observed && fresh.tokens_unknown.empty()) {
        fresh.tokens_unknown =
            absl::StrCat("sequence ", step.seq_id(), " was given a penalty after its first step; ",
                         "rank 0 did not keep the tokens before it");
      }
      fresh.observed = old.observed;
      fresh.pending_drop = old.pending_drop;  // and so are its cached positions
      fresh.drop_error = std::move(old.drop_error);
      it->second = std::move(fresh);
    }
  }
  State& s = it->second;
  if (step.drop_positions() != s.pending_drop && s.drop_error.empty()) {
    s.drop_error = absl::StrCat("sequence ", step.seq_id(), " drops ", step.drop_positions(),
                                " positions; its last step left ", s.pending_drop,
                                " draft positions not accepted");
  }
  s.pending_drop = 0;
  s.observed = true;
  if (s.keep_tokens) s.seen.insert(s.seen.end(), step.token_ids().begin(), step.token_ids().end());
}

absl::StatusOr<SampledToken> SequenceSamplers::SampleAt(State& s, const v1::SeqStep& step,
                                                        std::span<const float> logits,
                                                        int32_t sample_index) {
  kernels::SamplingParams& params = sample_index < s.min_tokens ? s.early : s.params;
  // A logprob costs an exp per vocabulary entry (a log-sum-exp over the row): only when asked.
  params.return_logprob = step.logprobs();
  params.top_logprobs = step.top_logprobs();
  if (!step.has_mask()) return SampleToken(logits, params, sample_index, s.seen);
  kernels::SamplingParams masked = params;  // the mask is a view of this step's message
  masked.mask = kernels::TokenMask{
      .allow = step.mask().allow(),
      .ids = std::span<const int32_t>(step.mask().token_ids().data(),
                                      static_cast<size_t>(step.mask().token_ids().size()))};
  return SampleToken(logits, masked, sample_index, s.seen);
}

absl::StatusOr<SampledToken> SequenceSamplers::Sample(const v1::SeqStep& step,
                                                      std::span<const float> logits) {
  absl::StatusOr<Verified> v = SampleDrafts(step, [logits](int) { return logits; });
  if (!v.ok()) return v.status();
  return std::move(v->token);
}

absl::StatusOr<SequenceSamplers::Verified> SequenceSamplers::SampleDrafts(
    const v1::SeqStep& step, absl::FunctionRef<std::span<const float>(int)> row) {
  auto it = states_.find(step.seq_id());
  if (it == states_.end()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "sequence ", step.seq_id(), " has no sampling parameters on rank 0 (never stepped)"));
  }
  State& s = it->second;
  if (s.keep_tokens && !s.tokens_unknown.empty()) {
    return absl::InvalidArgumentError(s.tokens_unknown);  // a penalty would count too few
  }
  if (!s.drop_error.empty()) return absl::InvalidArgumentError(s.drop_error);
  // Each accepted draft samples at the next index: they must stay int32 (and >= 0).
  if (step.sample_index() < 0 ||
      step.sample_index() > std::numeric_limits<int32_t>::max() - step.draft_token_ids_size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("sequence ", step.seq_id(), ": sample_index ", step.sample_index(), " with ",
                     step.draft_token_ids_size(), " drafts is out of range"));
  }
  Verified v;
  while (true) {
    absl::StatusOr<SampledToken> token =
        SampleAt(s, step, row(v.accepted), step.sample_index() + v.accepted);
    if (!token.ok()) return token.status();
    v.token = *std::move(token);
    if (v.accepted == step.draft_token_ids_size() ||
        v.token.token_id != step.draft_token_ids(v.accepted)) {
      s.pending_drop = step.draft_token_ids_size() - v.accepted;
      return v;
    }
    if (s.keep_tokens) s.seen.push_back(v.token.token_id);  // its position is cached now
    v.drafts.push_back(std::move(v.token));
    ++v.accepted;
  }
}

}  // namespace llmint8::worker
