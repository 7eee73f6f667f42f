#!/usr/bin/env python3
"""Golden parity fixtures: tiny random OPT models and the logits/tokens Hugging Face computes.

Run by hand (not by CI) from the repository root, with torch (CPU is enough), transformers and
safetensors installed (see tests/golden/README.md for the versions the committed files came from):

    python3 tests/golden/make_golden.py            # rewrites tests/golden/<model>/
    python3 tests/golden/make_golden.py --check    # recomputes and compares with the files

The output is deterministic (fixed seeds, fp32, single thread, eager attention), so a rerun with
the same library versions reproduces the files; --check tells whether it does within 1e-6.

For each model it writes tests/golden/<model>/:
  config.json, generation_config.json, model.safetensors   save_pretrained(safe_serialization=True)
  expected.json             prompts, greedy continuations (fp32 and fp16), per-step top-5 and
                            margins, and an index of the tensors in expected_logits.safetensors
  expected_logits.safetensors   fp32 logits (tensor names listed in expected.json)

Greedy decoding runs for exactly NUM_NEW_TOKENS steps: no EOS stopping, no logits processors,
so the recorded step logits are the raw LM-head output at each decode position.
"""

import argparse
import json
import os
import sys

import numpy as np
import safetensors.numpy
import torch
import transformers
from transformers import OPTConfig, OPTForCausalLM

HERE = os.path.dirname(os.path.abspath(__file__))
NUM_NEW_TOKENS = 32
SEED = 3  # chosen among 0-8: every greedy margin >= 0.01 and fp16 greedy == fp32

# Prompts as token ids (vocab 1000). OPT's tokenizer prepends BOS </s> = 2; prompt 1 has no BOS so
# a runtime that inserts one on its own is caught.
PROMPTS = [
    [2],
    [17, 512, 3, 999, 64],
    [2, 100, 200, 300, 400, 500, 600, 700, 800, 900, 11, 22, 33, 44, 55, 66, 77],
    # 40 ids drawn below from a seeded generator.
    None,
]
ALL_POSITIONS_PROMPT = 2          # logits of every position are stored for this prompt
STEP_LOGITS_PROMPTS = (0, 3)      # logits of every greedy step are stored for these prompts

MODELS = {
    # Pre-LN, relu, word_embed_proj_dim == hidden (the layout of OPT-125m and 1.3b..175b).
    "tiny-opt": dict(
        vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, ffn_dim=256,
        max_position_embeddings=128, word_embed_proj_dim=64, do_layer_norm_before=True,
        activation_function="relu"),
    # The OPT-350m layout: post-LN (no final LayerNorm) and project_in/project_out between the
    # 32-wide embeddings and the 64-wide decoder.
    "tiny-opt-350m-style": dict(
        vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, ffn_dim=256,
        max_position_embeddings=128, word_embed_proj_dim=32, do_layer_norm_before=False,
        activation_function="relu"),
}


def make_prompts():
    g = np.random.default_rng(SEED)
    prompts = list(PROMPTS)
    prompts[3] = [2] + [int(x) for x in g.integers(3, 1000, size=39)]
    return prompts


def build_model(name, spec):
    config = OPTConfig(
        **spec, enable_bias=True, layer_norm_elementwise_affine=True, dropout=0.0,
        attention_dropout=0.0, pad_token_id=1, bos_token_id=2, eos_token_id=2,
        tie_word_embeddings=True, torch_dtype="float32")
    config._attn_implementation = "eager"
    torch.manual_seed(SEED)
    model = OPTForCausalLM(config).eval()
    # Explicit init (independent of transformers' _init_weights, which zeroes biases and sets
    # LayerNorm to identity, so bugs in those would go unseen). Scales keep activations O(1):
    # weights ~ N(0, 1/fan_in) * 1.5^2, biases and LayerNorm offsets ~ N(0, 0.1), gains ~ 1 + N(0,
    # 0.2), embeddings ~ N(0, 0.5) so the tied LM head gives logits with a spread of a few units.
    g = torch.Generator().manual_seed(SEED)
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if "embed" in pname:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
            elif "layer_norm" in pname and pname.endswith(".weight"):
                p.copy_(1.0 + torch.randn(p.shape, generator=g) * 0.2)
            elif pname.endswith(".bias"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
            elif p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=g) * (1.5 / p.shape[1] ** 0.5))
            else:
                raise ValueError(f"unexpected parameter {pname}")
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 1
    model.generation_config.bos_token_id = 2
    return model


@torch.no_grad()
def full_logits(model, ids):
    return model(torch.tensor([ids])).logits[0].float()


@torch.no_grad()
def greedy(model, ids):
    """HF generate (KV cache), cross-checked against a no-cache greedy loop."""
    out = model.generate(
        torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
        do_sample=False, num_beams=1, max_new_tokens=NUM_NEW_TOKENS,
        min_new_tokens=NUM_NEW_TOKENS, eos_token_id=None, pad_token_id=1,
        output_logits=True, return_dict_in_generate=True)
    tokens = out.sequences[0, len(ids):].tolist()
    steps = torch.stack([l[0].float() for l in out.logits])  # [NUM_NEW_TOKENS, vocab]
    assert len(tokens) == NUM_NEW_TOKENS, tokens
    # No-cache reference: step j's logits are the last row of a full forward over prompt+tokens[:j].
    seq = list(ids)
    for j in range(NUM_NEW_TOKENS):
        ref = full_logits(model, seq)[-1]
        tol = 1e-4 if next(model.parameters()).dtype == torch.float32 else 5e-2
        diff = (ref - steps[j]).abs().max().item()
        if diff > tol:
            raise RuntimeError(f"generate vs no-cache forward differ by {diff} at step {j}")
        if int(ref.argmax()) != tokens[j]:
            raise RuntimeError(f"generate picked {tokens[j]}, full forward {int(ref.argmax())}")
        seq.append(tokens[j])
    return tokens, steps


def top_margin(logits):
    top2 = torch.topk(logits, 2).values
    return float(top2[0] - top2[1])


def make_fixture(name, spec, prompts):
    model = build_model(name, spec)
    tensors = {}
    cases = []
    for i, ids in enumerate(prompts):
        logits = full_logits(model, ids)
        tokens, steps = greedy(model, ids)
        assert torch.equal(steps[0], steps[0]) and (steps[0] - logits[-1]).abs().max() < 1e-4
        fp16 = build_model(name, spec).half()
        tokens16, steps16 = greedy(fp16, ids)
        case = {
            "prompt": ids,
            "greedy_tokens": tokens,
            "greedy_tokens_fp16": tokens16,
            "greedy_fp16_agrees_with_fp32": tokens16 == tokens,
            # top1 - top2 logit gap at each greedy step (how much error a forward may make
            # before its argmax can flip).
            "greedy_margins": [round(top_margin(s), 6) for s in steps],
            "greedy_top5": [torch.topk(s, 5).indices.tolist() for s in steps],
            "last_logits_top5": torch.topk(logits[-1], 5).indices.tolist(),
            "fp16_max_abs_diff_first_step": round(
                float((steps16[0].float() - steps[0]).abs().max()), 6),
            "logits": {"last": f"prompt{i}.last"},
        }
        tensors[f"prompt{i}.last"] = logits[-1].numpy()
        if i == ALL_POSITIONS_PROMPT:
            tensors[f"prompt{i}.all"] = logits.numpy()
            case["logits"]["all"] = f"prompt{i}.all"
        if i in STEP_LOGITS_PROMPTS:
            tensors[f"prompt{i}.steps"] = steps.numpy()
            case["logits"]["steps"] = f"prompt{i}.steps"
        cases.append(case)
    expected = {
        "model": name,
        "generated_by": "tests/golden/make_golden.py",
        "versions": {"torch": torch.__version__.split("+")[0],
                     "transformers": transformers.__version__,
                     "safetensors": safetensors.__version__},
        "seed": SEED,
        "dtype": "float32",
        "num_new_tokens": NUM_NEW_TOKENS,
        "notes": ("greedy = argmax of raw logits for num_new_tokens steps, no EOS stop; "
                  "logits tensors are fp32 in expected_logits.safetensors: "
                  "<p>.last [vocab] = last prompt position; <p>.all [len, vocab] = every "
                  "prompt position; <p>.steps [num_new_tokens, vocab] = step j predicts "
                  "greedy_tokens[j] (steps[0] == last). Positions start at 0 (OPT adds its "
                  "offset 2 inside the position embedding)."),
        "cases": cases,
    }
    return model, expected, {k: np.ascontiguousarray(v, dtype=np.float32)
                             for k, v in tensors.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true",
                    help="compare with the committed files instead of writing them")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    prompts = make_prompts()
    ok = True
    for name, spec in MODELS.items():
        model, expected, tensors = make_fixture(name, spec, prompts)
        out = os.path.join(HERE, name)
        if args.check:
            old = json.load(open(os.path.join(out, "expected.json")))
            old_t = safetensors.numpy.load_file(os.path.join(out, "expected_logits.safetensors"))
            same = [c["greedy_tokens"] for c in old["cases"]] == \
                [c["greedy_tokens"] for c in expected["cases"]]
            diff = max(float(np.abs(old_t[k] - v).max()) for k, v in tensors.items())
            print(f"{name}: greedy tokens {'same' if same else 'DIFFER'}, "
                  f"max abs logit diff {diff:.3g}")
            ok &= same and diff <= 1e-6
            continue
        os.makedirs(out, exist_ok=True)
        model.save_pretrained(out, safe_serialization=True)
        safetensors.numpy.save_file(tensors, os.path.join(out, "expected_logits.safetensors"),
                                    metadata={"generated_by": "tests/golden/make_golden.py"})
        with open(os.path.join(out, "expected.json"), "w") as f:
            json.dump(expected, f, indent=1)
            f.write("\n")
        margins = [min(c["greedy_margins"]) for c in expected["cases"]]
        distinct = [len(set(c["greedy_tokens"])) for c in expected["cases"]]
        fp16 = [c["greedy_fp16_agrees_with_fp32"] for c in expected["cases"]]
        print(f"{name}: min greedy margins {margins}, distinct tokens {distinct}, "
              f"fp16 greedy == fp32 {fp16}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
