#!/usr/bin/env python3
"""Hugging Face reference for `llmint8 eval`: perplexity of a model directory on a text file, with
the same strided windows as model/perplexity.h (train/strided_ppl.py).

  python3 train/hf_perplexity.py models/opt-sotu-cpu \
      tests/data/heldout/sotu-2010-2021.txt --max-ids 8192

Tokenization: the model directory's own vocab.json + merges.txt (GPT-2 byte-level BPE), with
</s> (2) prepended as OPT's tokenizer does; --max-ids keeps the first N ids (after the BOS).
Weights: the checkpoint as stored (fp16 for the bundled models), computed in --dtype (float32 by
default: the reference the llmint8 fp16 runtime, which accumulates in fp32, is compared with).
Prints one JSON object (also written to --out): ppl, nll_sum, tokens, windows, window, stride,
num_ids, the text's sha256, library versions. --dump-ids writes the ids as a JSON list;
--reference writes result + ids as the fixture model/perplexity_test.cc checks llmint8 against.
"""

import argparse
import hashlib
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import corpus  # noqa: E402
import strided_ppl  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("model_dir")
    p.add_argument("text_file")
    p.add_argument("--window", type=int, default=0, help="0: max_position_embeddings")
    p.add_argument("--stride", type=int, default=0, help="0: window / 2")
    p.add_argument("--max-ids", type=int, default=0, help="evaluate the first N ids (0: all)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out", default="", help="also write the JSON result here")
    p.add_argument("--dump-ids", default="", help="write the evaluated token ids (JSON list)")
    p.add_argument("--reference", default="",
                   help="write the result with the ids under \"ids\" and the model directory "
                        "relative to the repository root: the fixture of model/perplexity_test.cc")
    args = p.parse_args()

    import torch
    import transformers
    from transformers import OPTForCausalLM
    if args.threads:
        torch.set_num_threads(args.threads)
    with open(args.text_file, "rb") as f:
        raw = f.read()
    tok = corpus.load_tokenizer(args.model_dir)
    ids = corpus.encode(tok, raw.decode("utf-8"))
    if args.max_ids:
        ids = ids[:args.max_ids]
    if args.dump_ids:
        with open(args.dump_ids, "w") as f:
            json.dump(ids, f)
    model = OPTForCausalLM.from_pretrained(args.model_dir, dtype=getattr(torch, args.dtype))
    model = model.to(args.device).eval()
    window = args.window or model.config.max_position_embeddings
    stride = args.stride or window // 2
    t0 = time.time()
    r = strided_ppl.perplexity(model, ids, window, stride, args.device)
    r.update(windows=len(strided_ppl.windows(len(ids), window, stride)),
             model_dir=os.path.normpath(args.model_dir), text_file=os.path.normpath(args.text_file),
             text_sha256=hashlib.sha256(raw).hexdigest(), dtype=args.dtype, device=args.device,
             seconds=round(time.time() - t0, 1), torch=torch.__version__,
             transformers=transformers.__version__)
    out = json.dumps(r, indent=2)
    print(out)
    if args.out:
        with open(args.out, "w") as f:
            f.write(out + "\n")
    if args.reference:
        ref = dict(r, model_dir=os.path.relpath(os.path.abspath(args.model_dir), corpus.REPO),
                   text_file=os.path.relpath(os.path.abspath(args.text_file), corpus.REPO),
                   ids=ids)
        with open(args.reference, "w") as f:
            json.dump(ref, f, indent=1)


if __name__ == "__main__":
    main()
