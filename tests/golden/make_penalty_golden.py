#!/usr/bin/env python3
"""Greedy continuations with sampling penalties, and top logprobs, from Hugging Face
transformers for the committed tiny OPT checkpoint: the reference of llmint8's
repetition_penalty, frequency_penalty / presence_penalty and top_logprobs (tests/e2e).

Run by hand (needs torch + transformers), not by CI:

  python3 tests/golden/make_penalty_golden.py

For each model directory and each prompt of its expected.json (make_golden.py), in fp32 with no
EOS stop, writes
  <model>/repetition_penalty.json: NUM_NEW_TOKENS greedy tokens of HF generate(
      repetition_penalty=P) for every P in PENALTIES;
  <model>/openai_sampling.json: NUM_NEW_TOKENS greedy tokens of HF generate with the OpenAI
      frequency / presence penalties as a LogitsProcessor (logit[j] -= frequency * c[j] +
      presence * (c[j] > 0), c[j] the count of j among the generated ids, as vLLM applies
      them) for every pair in FREQUENCY_PRESENCE; for plain greedy decoding, the TOP_N
      most likely ids and their logprobs (log_softmax of the raw logits) at each of
      TOP_STEPS steps; and each prompt token's logprob given the tokens before it, with the
      TOP_N of its position (prompt scoring: echo / prompt_logprobs).
Each penalised step's top-1 - top-2 margin of the processed scores is stored too (a forward
error below it cannot flip the choice), and for top logprobs the gap between the TOP_N-th and
the next logit (an error below it cannot reorder the list's membership).
"""

import json
import os

import torch
import transformers
from transformers import LogitsProcessor, LogitsProcessorList, OPTForCausalLM

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = ("tiny-opt",)  # the model the service end-to-end tests serve
PENALTIES = (1.3, 0.8)
FREQUENCY_PRESENCE = ((0.5, 0.0), (0.0, 1.0), (1.5, -0.5), (-0.3, 0.0))
NUM_NEW_TOKENS = 24
TOP_N = 5
TOP_STEPS = 8


class OpenAiPenalties(LogitsProcessor):
    """frequency_penalty and presence_penalty over the ids generated after the prompt."""

    def __init__(self, prompt_len, frequency, presence):
        self.prompt_len, self.frequency, self.presence = prompt_len, frequency, presence

    def __call__(self, input_ids, scores):
        generated = input_ids[:, self.prompt_len:]
        counts = torch.zeros_like(scores).scatter_add_(
            1, generated, torch.ones(generated.shape, dtype=scores.dtype))
        return scores - self.frequency * counts - self.presence * (counts > 0).to(scores.dtype)


@torch.no_grad()
def greedy(model, ids, **kwargs):
    """NUM_NEW_TOKENS greedy tokens and each step's processed top-1 - top-2 margin."""
    out = model.generate(
        torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
        do_sample=False, num_beams=1, max_new_tokens=NUM_NEW_TOKENS,
        min_new_tokens=NUM_NEW_TOKENS, eos_token_id=None, pad_token_id=1,
        output_scores=True, output_logits=True, return_dict_in_generate=True, **kwargs)
    tokens = out.sequences[0, len(ids):].tolist()
    margins = []
    for j, scores in enumerate(out.scores):
        scores = scores[0].float()
        if int(scores.argmax()) != tokens[j]:
            raise RuntimeError(f"step {j}: processed argmax {int(scores.argmax())} != {tokens[j]}")
        top2 = torch.topk(scores, 2).values
        margins.append(round(float(top2[0] - top2[1]), 6))
    return tokens, margins, out.logits


def top_of(row):
    """A logits row's TOP_N ids (ties to the lowest id), their logprobs and the gap to the next."""
    row = row.double()
    logprobs = torch.log_softmax(row, dim=0)
    order = sorted(range(row.numel()), key=lambda i: (-float(row[i]), i))
    return {"ids": order[:TOP_N],
            "logprobs": [round(float(logprobs[i]), 7) for i in order[:TOP_N]],
            "gap": round(float(row[order[TOP_N - 1]] - row[order[TOP_N]]), 6)}, logprobs


def top_logprobs(model, ids):
    """Plain greedy: per step the TOP_N ids by logit and their logprobs."""
    tokens, _, logits = greedy(model, ids)
    return tokens[:TOP_STEPS], [top_of(logits[j][0])[0] for j in range(TOP_STEPS)]


@torch.no_grad()
def prompt_scores(model, ids):
    """Each prompt token after the first: its logprob given those before it, and the TOP_N."""
    logits = model(torch.tensor([ids])).logits[0]
    scores = []
    for k in range(1, len(ids)):
        top, logprobs = top_of(logits[k - 1])
        scores.append(dict(logprob=round(float(logprobs[ids[k]]), 7), **top))
    return scores


def main():
    versions = {"torch": torch.__version__, "transformers": transformers.__version__}
    for name in MODELS:
        d = os.path.join(HERE, name)
        with open(os.path.join(d, "expected.json")) as f:
            prompts = [c["prompt"] for c in json.load(f)["cases"]]
        model = OPTForCausalLM.from_pretrained(d, dtype=torch.float32).eval()

        runs = []
        for penalty in PENALTIES:
            for prompt in prompts:
                tokens, margins, _ = greedy(model, prompt, repetition_penalty=penalty)
                runs.append({"penalty": penalty, "prompt": prompt, "greedy_tokens": tokens,
                             "margins": margins})
        out = {"model": name, "generated_by": "tests/golden/make_penalty_golden.py",
               "versions": versions, "num_new_tokens": NUM_NEW_TOKENS,
               "notes": "greedy with HF repetition_penalty over prompt + generated ids, fp32, "
                        "no EOS stop; margins: top1 - top2 of the penalised scores per step",
               "runs": runs}
        with open(os.path.join(d, "repetition_penalty.json"), "w") as f:
            json.dump(out, f, indent=1)

        penalty_runs = []
        for frequency, presence in FREQUENCY_PRESENCE:
            for prompt in prompts:
                processor = LogitsProcessorList([OpenAiPenalties(len(prompt), frequency, presence)])
                tokens, margins, _ = greedy(model, prompt, logits_processor=processor)
                penalty_runs.append({"frequency_penalty": frequency, "presence_penalty": presence,
                                     "prompt": prompt, "greedy_tokens": tokens,
                                     "margins": margins})
        top_runs = []
        for prompt in prompts:
            tokens, steps = top_logprobs(model, prompt)
            top_runs.append({"prompt": prompt, "greedy_tokens": tokens, "top": steps,
                             "prompt_scores": prompt_scores(model, prompt)})
        out = {"model": name, "generated_by": "tests/golden/make_penalty_golden.py",
               "versions": versions, "num_new_tokens": NUM_NEW_TOKENS, "top_n": TOP_N,
               "notes": "fp32, no EOS stop. penalty_runs: greedy with logit[j] -= frequency * "
                        "c[j] + presence * (c[j] > 0) over the generated ids; margins: top1 - "
                        "top2 of the processed scores. top_logprobs_runs: plain greedy; per "
                        "step the top_n ids by raw logit (ties to the lowest id), their "
                        "log_softmax, and the gap from the top_n-th to the next logit; "
                        "prompt_scores: for prompt tokens 1.. the logprob given those before "
                        "(one full forward) and the same top_n summary of that position",
               "penalty_runs": penalty_runs, "top_logprobs_runs": top_runs}
        with open(os.path.join(d, "openai_sampling.json"), "w") as f:
            json.dump(out, f, indent=1)
        print(f"{name}: {len(runs)} repetition, {len(penalty_runs)} frequency / presence and "
              f"{len(top_runs)} top-logprob runs written")


if __name__ == "__main__":
    main()
