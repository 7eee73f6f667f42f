// Two ranks of one group whose memory limits differ (rank 0: none; rank 1: its loaded shard +
// 96 KiB) first agree on a step of three 1-token sequences (KV pages, no larger activation
// buffers) and release them, then step the same three batches, each a new sequence: 100
// tokens (only rank 0 has room), 40 tokens (within what rank 0 may have grown for the refused
// step and within the KV pages already held, beyond rank 1's limit), 5 tokens (fits both). The
// ranks must agree every time (model/shard_backend.h AgreeOnRoom): the first is ResourceExhausted
// on both, the second ends alike on both, the third is served by both with the same logits, and no
// step waits anywhere near the communicator's timeout. Without the vote the ranks fall out of step
// on their collectives: a hang, or a rank that finishes a step on another step's data.
#ifndef LLMINT8_TESTS_TP_TP_MEMORY_VOTE_H_
#define LLMINT8_TESTS_TP_TP_MEMORY_VOTE_H_

#include "tests/tp/tp_harness.h"

namespace llmint8::model::testing {

// Records gtest failures for any disagreement (ranks in forked processes, as tp_harness.h).
void ExpectMemoryVoteAgrees(const TpBackend& backend, Precision precision);

// The same two ranks: a kept sequence at a KV capacity boundary decodes next to a new 100-token
// prompt only rank 0 has room for (refused on both), then alone, twice. A rank that allocated
// before the failed vote grows nothing on the next step while its peer does: both must vote
// all the same, and both serve the decodes.
void ExpectKeptDecodeVoteAgrees(const TpBackend& backend, Precision precision);

}  // namespace llmint8::model::testing

#endif  // LLMINT8_TESTS_TP_TP_MEMORY_VOTE_H_
