#!/usr/bin/env python3
"""The parity check behind docs/model.md's lm-evaluation-harness table: the same scoring
windows sent to a running llmint8 server (OpenAI API, echo) and to Hugging Face transformers
(fp32), every token's logprob compared.

Usage (by hand; needs torch + transformers and a server started with --http_listen):
  python3 train/lm_eval/compare_windows.py [COMPLETIONS_URL] [MODEL_DIR]
Windows: BOS + 253 ids of the first held-out address, then the next 253 ids after BOS (what
lm-evaluation-harness's local-completions model sends with max_length 255). Prints per window
the number of scored tokens, both sums and the largest per-token difference.
"""
import json
import os
import sys
import urllib.request

import torch
from transformers import AutoTokenizer, OPTForCausalLM

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main():
    url = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8000/v1/completions"
    model_dir = sys.argv[2] if len(sys.argv) > 2 else os.path.join(ROOT, "models/opt-sotu-cpu")
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = OPTForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with open(os.path.join(ROOT, "tests/data/heldout/sotu-2010-2021.txt"), encoding="utf-8") as f:
        first_address = f.read().split("\n\n")[0].strip()
    ids = tok.encode(first_address, add_special_tokens=False)
    bos = tok.bos_token_id
    for window in ([bos] + ids[:253], [bos] + ids[253:506]):
        body = json.dumps({"model": os.path.basename(os.path.normpath(model_dir)),
                           "prompt": [window], "max_tokens": 1, "logprobs": 1, "echo": True,
                           "temperature": 0}).encode()
        request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
        answer = json.load(urllib.request.urlopen(request))
        served = answer["choices"][0]["logprobs"]["token_logprobs"][1:-1]  # prompt tokens 1..
        with torch.no_grad():
            logprobs = torch.log_softmax(model(torch.tensor([window])).logits[0].double(), -1)
        reference = [float(logprobs[k - 1, window[k]]) for k in range(1, len(window))]
        worst = max(abs(a - b) for a, b in zip(served, reference))
        print(f"{len(served)} tokens: server {sum(served):.5f}, transformers "
              f"{sum(reference):.5f}, max |diff| {worst:.2e}")


if __name__ == "__main__":
    main()
