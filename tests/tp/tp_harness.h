// One synthetic OPT run at TP = 1, 2 and 4, every rank in its own forked process, and the
// groups compared: the harness of the Gloo (CPU) and the NCCL (GPU) tensor-parallel tests.
//
// The model has outlier dims and a vocabulary that TP 4 must pad (510 = 4 * 128 - 2). Each rank
// decodes greedily from three prompts and writes its tokens and logits to a file; the parent
// (which never computes, so it starts no OpenMP, Gloo or CUDA state before fork) checks that
// every rank of a group saw the same logits and that TP 2 and TP 4 agree with TP 1.
#ifndef LLMINT8_TESTS_TP_TP_HARNESS_H_
#define LLMINT8_TESTS_TP_TP_HARNESS_H_

#include <functional>
#include <string>

#include "model/shard_model.h"

namespace llmint8::model::testing {

struct TpBackend {
  Device device = Device::kCpu;
  std::string comm = "gloo";  // communicator of the TP > 1 groups ("local" at TP 1)
  // Runs first in every rank's process (e.g. a per-rank NCCL_HOSTID); may be empty.
  std::function<void(int rank)> rank_setup;
};

struct TpCase {
  Precision precision;
  // Max |logit difference| between TP 2 or 4 and TP 1 at any step (the flip margin below too).
  double logit_tol;
  // TP 2 / 4 decode TP 1's greedy tokens (teacher forcing), so a token flipped by rounding or
  // int8 noise does not make the later steps incomparable; a flip is accepted only where TP 1's
  // own top-1 margin is below logit_tol (an argmax the noise may legitimately change). Without
  // it every greedy token must be equal.
  bool teacher_forced;
  // The backend keeps activations in fp16 between ops (CUDA): logit_tol is widened by
  // F16RoundingBound, the worst-case effect of the roundings in which the groups may differ.
  bool fp16_activations = false;
};

// Worst-case first-order |logit difference| between two forwards of a `layers`-layer model that
// keep fp16 activations, one at TP 1 and one at TP `tp`, for logits of magnitude <= max_logit.
// Each fp16 rounding moves a value by at most u = 2^-11 relative. Along the path to a logit a
// forward rounds S = 3 + 8 * layers times (as model/cuda/shard_model_cuda_test.cc counts: embed +
// position, per layer LN / qkv / attention / out_proj / residual / fc1 / act / fc2, final LN,
// head, logit); at TP > 1 every all-reduce (embedding, out_proj, fc2) rounds each of its tp - 1
// partial sums again. Either forward is within S_i * u * max_logit of exact, so the two are
// within (S_1 + S_tp) * u * max_logit of each other.
double F16RoundingBound(int layers, int tp, double max_logit);

// Runs TP = 1, 2, 4 on `backend` and records gtest failures for any disagreement; prints the
// observed max |logit diff| and the count of equal tokens.
void ExpectTpDegreesAgree(const TpBackend& backend, const TpCase& tc);

}  // namespace llmint8::model::testing

#endif  // LLMINT8_TESTS_TP_TP_HARNESS_H_
