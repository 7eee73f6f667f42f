#!/usr/bin/env python3
"""Checks that the compact head's export (train/compact_vocab.py) is exact: a small random model
with a compact head and its 50,272-row export give the same log-probabilities, seen ids equal,
each unseen id the shared row's mass / U. Run by hand (needs torch + transformers), not by CI:

  python3 train/check_compact_vocab.py      # prints the max differences; exit 1 above 1e-5
"""

import math
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compact_vocab  # noqa: E402
import corpus  # noqa: E402
import train_opt  # noqa: E402

TOLERANCE = 1e-5


def main():
    args = train_opt.parse_args(["--hidden", "32", "--layers", "2", "--heads", "4",
                                 "--context", "64", "--dropout", "0"])
    stream = np.random.default_rng(0).integers(0, 3000, size=5000)
    vocab = compact_vocab.CompactVocab.from_stream(stream, corpus.VOCAB_SIZE)
    torch.manual_seed(0)
    compact = train_opt.make_model(args, vocab.size).eval()
    with torch.no_grad():
        for p in compact.parameters():  # away from init, so every weight matters
            p.add_(torch.randn_like(p) * 0.3)
    full = compact_vocab.expand_model(compact, vocab,
                                      lambda n: train_opt.make_model(args, n)).eval()
    ids = [2, 5, 100, 2999, 40000, 7]  # 40000 never occurs in the stream
    with torch.no_grad():
        lc = torch.log_softmax(
            (compact(input_ids=torch.from_numpy(vocab.to_compact(ids))[None]).logits
             + vocab.logit_offset(torch, "cpu")).double(), -1)[0]
        lf = torch.log_softmax(full(input_ids=torch.tensor([ids])).logits.double(), -1)[0]
    seen = torch.from_numpy(vocab.seen)
    unseen = torch.from_numpy(np.setdiff1d(np.arange(corpus.VOCAB_SIZE), vocab.seen))
    seen_diff = (lc[:, :-1] - lf[:, seen]).abs().max().item()
    unseen_diff = (lc[:, -1:] - math.log(vocab.unseen_count) - lf[:, unseen]).abs().max().item()
    print(f"seen ids: max |log p diff| {seen_diff:.3g}; unseen ids: {unseen_diff:.3g} "
          f"(tolerance {TOLERANCE})")
    return 0 if max(seen_diff, unseen_diff) <= TOLERANCE else 1


if __name__ == "__main__":
    sys.exit(main())
