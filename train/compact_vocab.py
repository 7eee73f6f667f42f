"""Training over the tokens the corpus uses, exported as an ordinary full-vocabulary OPT.

The tied embedding / LM head of a small OPT is most of its compute: 50,272 x 256 multiply-adds
per token for the head against 12 x 256^2 per decoder layer. The training text uses only ~28.6k
of the 50,272 ids, so training computes a compact head over

    the S ids that occur in the training stream  +  one "unseen" row shared by the U others,

and adds log(U) to the unseen row's logit. At export every unseen id gets that shared row, so the
full model's softmax is exactly the compact one with the unseen row's mass split evenly over the U
ids: for hidden state h, p_full(u) = exp(h.e_u) / Z = p_compact(unseen) / U. Nothing is
approximated; the exported checkpoint is a standard OPTForCausalLM with 50,272 rows that gives
every id a probability (the unseen ones small, as full training would also learn).

Ids: compact id c < S is full id seen[c]; compact id S is the unseen row.
"""

import math

import numpy as np


class CompactVocab:
    def __init__(self, seen, full_size):
        seen = np.asarray(seen, dtype=np.int64)
        if seen.ndim != 1 or seen.size == 0 or np.any(np.diff(seen) <= 0):
            raise ValueError("seen ids must be a non-empty strictly increasing list")
        if seen[0] < 0 or seen[-1] >= full_size:
            raise ValueError(f"seen ids must lie in [0, {full_size})")
        self.seen = seen
        self.full_size = full_size
        self.unseen_count = full_size - seen.size
        if self.unseen_count == 0:
            raise ValueError("every id occurs: train with the full vocabulary")
        self.size = seen.size + 1  # + the shared unseen row
        self._lut = np.full(full_size, seen.size, dtype=np.int64)
        self._lut[seen] = np.arange(seen.size)

    @classmethod
    def from_stream(cls, stream, full_size):
        return cls(np.unique(np.asarray(stream)), full_size)

    def to_compact(self, full_ids):
        """Full ids (any int array) -> compact ids; ids outside the corpus map to the unseen row."""
        return self._lut[np.asarray(full_ids, dtype=np.int64)]

    def logit_offset(self, torch, device):
        """Added to the compact logits: log(U) on the unseen row, 0 elsewhere."""
        off = torch.zeros(self.size, device=device)
        off[-1] = math.log(self.unseen_count)
        return off

    def expand_embedding(self, compact_weight):
        """[size, d] compact embedding -> [full_size, d]: seen rows in place, the unseen row
        copied to every other id."""
        full = compact_weight[-1:].expand(self.full_size, -1).clone()
        full[self.seen] = compact_weight[:-1]
        return full

    def to_json(self):
        return {"full_size": self.full_size, "seen": int(self.seen.size),
                "unseen": int(self.unseen_count)}


def expand_model(compact_model, vocab, make_model):
    """A full-vocabulary copy of compact_model: make_model(vocab_size) builds the empty model."""
    import torch
    full = make_model(vocab.full_size)
    state = {k: v for k, v in compact_model.state_dict().items()}
    key = "model.decoder.embed_tokens.weight"
    with torch.no_grad():
        state[key] = vocab.expand_embedding(state[key].float())
    state.pop("lm_head.weight", None)  # tied to the embedding
    missing, unexpected = full.load_state_dict(state, strict=False)
    if unexpected or [m for m in missing if m != "lm_head.weight"]:
        raise RuntimeError(f"expand_model: missing {missing}, unexpected {unexpected}")
    full.tie_weights()
    return full
