"""Perplexity with strided windows, as in the LLM.int8() paper's evaluation and Hugging Face's
"Perplexity of fixed-length models" guide; the same windows as llmint8's model/perplexity.h.

For ids of length N, window L and stride S (1 <= S <= L, L >= 2):
  windows begin at 0, S, 2S, ... and end at min(begin + L, N); the last window is the first
  that reaches N. A window scores the tokens at indices [max(prev_end, begin + 1), end) (prev_end
  is the previous window's end, 0 for the first), each predicted from ids[begin:i] only.
So every token after the first is scored exactly once when S < L, each with at least L - S
tokens of context (except near the start); with S == L, a window's first token is not scored.
Result: nll_sum (natural log), tokens scored, ppl = exp(nll_sum / tokens).

(HF's guide weights each window's mean loss by num_valid - batch_size tokens, one fewer than each
later window scores; this is the exact mean over the scored tokens.)
"""

import math


def windows(n, window, stride):
    """[(begin, first_target, end)] of the windows over n ids (first_target < end)."""
    if window < 2:
        raise ValueError(f"window {window} must be >= 2")
    if not 1 <= stride <= window:
        raise ValueError(f"stride {stride} must be in [1, window={window}]")
    if n < 2:
        raise ValueError(f"need at least 2 token ids, got {n}")
    out = []
    prev_end = 0
    begin = 0
    while True:
        end = min(begin + window, n)
        first = max(prev_end, begin + 1)
        if first < end:
            out.append((begin, first, end))
        prev_end = end
        if end == n:
            return out
        begin += stride


def strided_nll(model, ids, window, stride, device="cpu", log_every=0):
    """(nll_sum, tokens) of `ids` (a list of ints) under a causal LM (HF OPTForCausalLM).

    The model's logits are taken in fp32 and the log-softmax in fp64.
    """
    import torch
    positions = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if positions is not None and window - 1 > positions:
        raise ValueError(f"window {window} feeds {window - 1} positions; the model has "
                         f"{positions} (max_position_embeddings): use a window <= {positions + 1}")
    nll_sum = 0.0
    tokens = 0
    ws = windows(len(ids), window, stride)
    with torch.no_grad():
        for k, (begin, first, end) in enumerate(ws):
            x = torch.tensor([ids[begin:end - 1]], dtype=torch.long, device=device)
            logits = model(input_ids=x).logits[0]            # [end - 1 - begin, vocab]
            rows = logits[first - 1 - begin:].double()        # rows predicting ids[first:end]
            targets = torch.tensor(ids[first:end], dtype=torch.long, device=device)
            logp = torch.log_softmax(rows, dim=-1)
            nll = float(-logp.gather(1, targets[:, None]).sum())
            if not math.isfinite(nll):  # as model/perplexity.cc: an error, not a NaN ppl
                raise ValueError(f"window {k + 1} ({begin}..{end}): non-finite log-likelihood "
                                 f"{nll} (non-finite logits: an fp16 overflow?)")
            nll_sum += nll
            tokens += end - first
            if log_every and (k + 1) % log_every == 0:
                print(f"  window {k + 1}/{len(ws)}: ppl so far {math.exp(nll_sum / tokens):.3f}",
                      flush=True)
    return nll_sum, tokens


def perplexity(model, ids, window, stride, device="cpu", log_every=0):
    nll_sum, tokens = strided_nll(model, ids, window, stride, device, log_every)
    mean = nll_sum / tokens
    return {"nll_sum": nll_sum, "tokens": tokens,
            "ppl": math.exp(mean) if mean < 709 else math.inf,  # exp overflows past ~709.78
            "window": window, "stride": stride, "num_ids": len(ids)}
