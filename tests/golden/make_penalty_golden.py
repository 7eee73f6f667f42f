#!/usr/bin/env python3
"""Greedy continuations with a repetition penalty from Hugging Face transformers, for the
committed tiny OPT checkpoint: the reference of llmint8's repetition_penalty (tests/e2e).

Run by hand (needs torch + transformers), not by CI:

  python3 tests/golden/make_penalty_golden.py

For each model directory and each prompt of its expected.json (make_golden.py), generates
NUM_NEW_TOKENS greedy tokens with HF generate(repetition_penalty=P, no EOS stop) in fp32 for every
P in PENALTIES, and writes <model>/repetition_penalty.json. Each step's penalised top-1 - top-2
margin is stored too: a forward error below it cannot flip the choice.
"""

import json
import os

import torch
import transformers
from transformers import OPTForCausalLM, RepetitionPenaltyLogitsProcessor

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = ("tiny-opt",)  # the model the service end-to-end tests serve
PENALTIES = (1.3, 0.8)
NUM_NEW_TOKENS = 24


@torch.no_grad()
def penalised_greedy(model, ids, penalty):
    out = model.generate(
        torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
        do_sample=False, num_beams=1, max_new_tokens=NUM_NEW_TOKENS,
        min_new_tokens=NUM_NEW_TOKENS, eos_token_id=None, pad_token_id=1,
        repetition_penalty=penalty, output_logits=True, return_dict_in_generate=True)
    tokens = out.sequences[0, len(ids):].tolist()
    # Margins of the penalised scores, recomputed with HF's own processor.
    proc = RepetitionPenaltyLogitsProcessor(penalty)
    margins = []
    seq = list(ids)
    for j, logits in enumerate(out.logits):
        scores = proc(torch.tensor([seq]), logits.float().clone())[0]
        top2 = torch.topk(scores, 2).values
        if int(scores.argmax()) != tokens[j]:
            raise RuntimeError(f"step {j}: processor argmax {int(scores.argmax())} != {tokens[j]}")
        margins.append(round(float(top2[0] - top2[1]), 6))
        seq.append(tokens[j])
    return tokens, margins


def main():
    for name in MODELS:
        d = os.path.join(HERE, name)
        with open(os.path.join(d, "expected.json")) as f:
            prompts = [c["prompt"] for c in json.load(f)["cases"]]
        model = OPTForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
        runs = []
        for penalty in PENALTIES:
            for prompt in prompts:
                tokens, margins = penalised_greedy(model, prompt, penalty)
                runs.append({"penalty": penalty, "prompt": prompt, "greedy_tokens": tokens,
                             "margins": margins})
        out = {"model": name, "generated_by": "tests/golden/make_penalty_golden.py",
               "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
               "num_new_tokens": NUM_NEW_TOKENS,
               "notes": "greedy with HF repetition_penalty over prompt + generated ids, fp32, "
                        "no EOS stop; margins: top1 - top2 of the penalised scores per step",
               "runs": runs}
        with open(os.path.join(d, "repetition_penalty.json"), "w") as f:
            json.dump(out, f, indent=1)
        print(f"{name}: {len(runs)} runs written")


if __name__ == "__main__":
    main()
