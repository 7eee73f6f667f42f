#!/usr/bin/env python3
"""Trains a small OPT (transformers' OPTForCausalLM) on the project's public-domain corpus.

Run by hand, not by CI (see docs/model.md for the runs behind the bundled models):

  # the default: the H100 run (bf16 autocast on CUDA), ~39 MB fp16 checkpoint
  python3 train/train_opt.py --name opt-sotu-h100

  # the CPU run behind models/opt-sotu-cpu (2 threads, bf16 autocast, time-boxed; ~1,900 tok/s)
  nice -n 10 python3 train/train_opt.py --device cpu --threads 2 --name opt-sotu-cpu \
      --hidden 256 --layers 6 --heads 4 --context 256 --batch 16 --steps 100000 \
      --max-minutes 150 --schedule-by-time --lr 2e-3 --warmup 100 --dropout 0 \
      --eval-every 250 --eval-tokens 4096 --final-eval-tokens 0 --log-every 25 \
      --checkpoint-minutes 15

Data (train/corpus.py): State of the Union addresses before 2010 + Moby-Dick for training, the
addresses from 2010 on held out. The training stream is every training document as
[</s>] + BPE ids, concatenated, tokenized once and cached as a uint16 memmap under --cache-dir.
Each step draws --batch random windows of --context + 1 tokens from it.

Outputs:
  models/<name>/   config.json, generation_config.json, model.safetensors (fp16), vocab.json,
                   merges.txt, tokenizer_config.json, special_tokens_map.json
  train/runs/<name>/  settings.json (all flags + derived numbers), loss.csv (the loss curve),
                   eval.json (held-out perplexity of the saved fp16 checkpoint), samples.txt
                   (greedy and sampled continuations), train.log when redirected there.
"""

import argparse
import csv
import json
import math
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compact_vocab  # noqa: E402
import corpus  # noqa: E402
import strided_ppl  # noqa: E402

MAX_CHECKPOINT_BYTES = 40_000_000  # the fp16 model.safetensors a bundled model may be

SAMPLE_PROMPTS = [
    "The state of the Union is",
    "My fellow Americans,",
    "Congress should",
    "Call me Ishmael.",
]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--name", default="opt-sotu-h100", help="models/<name>, train/runs/<name>")
    p.add_argument("--data", default=corpus.DEFAULT_DATA, help="holds corpus/ and gpt2-bpe/")
    p.add_argument("--models-dir", default=os.path.join(corpus.REPO, "models"))
    p.add_argument("--runs-dir", default=os.path.join(corpus.HERE, "runs"))
    p.add_argument("--cache-dir", default=os.path.join(corpus.HERE, "cache"),
                   help="tokenized corpus (uint16 memmap); git-ignored")
    p.add_argument("--heldout-from-year", type=int, default=corpus.HELDOUT_FROM_YEAR)
    # Model. Defaults: ~19.4M params (50272 x 256 embedding = 12.9M of them), 38.8 MB in fp16.
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--heads", type=int, default=4, help="TP degree must divide it (4: TP 1/2/4)")
    p.add_argument("--ffn", type=int, default=0, help="0: 4 x hidden")
    p.add_argument("--context", type=int, default=512, help="training window = max positions")
    p.add_argument("--dropout", type=float, default=0.1,
                   help="the corpus is only ~2.3M tokens: the H100 default sees it ~20 times")
    # Optimization.
    p.add_argument("--batch", type=int, default=32, help="windows per step")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--min-lr-ratio", type=float, default=0.1, help="cosine decays to lr * this")
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--beta2", type=float, default=0.95)
    p.add_argument("--grad-clip", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    # Runtime.
    p.add_argument("--device", default="auto", help="auto | cuda | cpu")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    p.add_argument("--max-minutes", type=float, default=0,
                   help="stop training after this wall time (0: no limit)")
    p.add_argument("--schedule-by-time", action="store_true",
                   help="cosine over the --max-minutes budget instead of --steps (then --steps "
                        "is only an upper bound)")
    p.add_argument("--vocab", default="corpus", choices=["corpus", "full"],
                   help="corpus: train the head over the ids the training text uses plus one "
                        "shared row for the rest, exported exactly as the full 50272-row model "
                        "(train/compact_vocab.py; ~1.6x faster on CPU); full: all 50272 rows")
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True,
                   help="bf16 autocast for the forward (CUDA, and CPUs with AVX512-BF16/AMX); "
                        "weights, optimizer and loss stay fp32")
    p.add_argument("--checkpoint-minutes", type=float, default=15,
                   help="every this many minutes: the resumable training state under "
                        "--cache-dir and the fp16 export under models/<name> (0: only at the end)")
    p.add_argument("--resume", action="store_true",
                   help="continue from the training state of an interrupted run of --name")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--eval-tokens", type=int, default=0,
                   help="held-out ids used by the periodic evals (0: all); the final eval "
                        "always uses the whole held-out text")
    p.add_argument("--eval-stride", type=int, default=0, help="0: context / 2")
    p.add_argument("--final-eval-tokens", type=int, default=0,
                   help="limit the final eval to the first N held-out ids (0: all)")
    return p.parse_args(argv)


def pick_device(name):
    import torch
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda but torch sees no GPU")
    return name


def tokenized_stream(args, tok):
    """uint16 memmap of the training stream, built once per (data, split year) and cached."""
    os.makedirs(args.cache_dir, exist_ok=True)
    path = os.path.join(args.cache_dir, f"train-before-{args.heldout_from_year}.u16")
    meta_path = path + ".json"
    docs = corpus.train_documents(os.path.join(args.data, "corpus"), args.heldout_from_year)
    labels = [label for label, _ in docs]
    if os.path.exists(meta_path):
        with open(meta_path) as f:
            meta = json.load(f)
        if meta.get("documents") == labels and os.path.exists(path):
            return np.memmap(path, dtype=np.uint16, mode="r"), meta
    t0 = time.time()
    ids = []
    for _, text in docs:
        ids.extend(corpus.encode(tok, text, add_bos=True))
    arr = np.asarray(ids, dtype=np.uint16)
    assert int(arr.max()) < corpus.VOCAB_SIZE
    arr.tofile(path)
    meta = {"documents": labels, "tokens": int(arr.size),
            "characters": sum(len(t) for _, t in docs), "seconds": round(time.time() - t0, 1)}
    with open(meta_path, "w") as f:
        json.dump(meta, f, indent=1)
    return np.memmap(path, dtype=np.uint16, mode="r"), meta


def make_model(args, vocab_size=corpus.VOCAB_SIZE, pad_token_id=corpus.PAD_ID):
    """pad_token_id is the embedding's padding_idx, a row that gets no gradient as an input:
    OPT's <pad> in the full vocabulary; in the compact one (compact id 1 is a real token, full
    id 4) the shared unseen row, never an input."""
    from transformers import OPTConfig, OPTForCausalLM
    ffn = args.ffn or 4 * args.hidden
    cfg = OPTConfig(
        vocab_size=vocab_size, hidden_size=args.hidden, num_hidden_layers=args.layers,
        ffn_dim=ffn, num_attention_heads=args.heads, max_position_embeddings=args.context,
        word_embed_proj_dim=args.hidden, do_layer_norm_before=True, activation_function="relu",
        dropout=args.dropout, attention_dropout=0.0, layerdrop=0.0, init_std=0.02,
        enable_bias=True, layer_norm_elementwise_affine=True, tie_word_embeddings=True,
        pad_token_id=pad_token_id, bos_token_id=corpus.BOS_ID, eos_token_id=corpus.EOS_ID,
        use_cache=True)
    return OPTForCausalLM(cfg)


def lr_at(step, args, elapsed_s):
    """Linear warmup over --warmup steps, then cosine to lr * --min-lr-ratio: over --steps, or,
    when --schedule-by-time, over whichever ends first of --steps and the --max-minutes
    wall-time budget (a time-boxed run, where the number of steps that fit is not known in
    advance: the schedule ends annealed whether the time or the steps run out)."""
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    t = min(1.0, (step - args.warmup) / max(1, args.steps - args.warmup))
    if args.schedule_by_time:
        t = max(t, min(1.0, elapsed_s / (60 * args.max_minutes)))
    lo = args.lr * args.min_lr_ratio
    return lo + 0.5 * (args.lr - lo) * (1 + math.cos(math.pi * t))


def optimizer_for(model, args):
    import torch
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (decay if p.dim() >= 2 else no_decay).append(p)  # matrices decay; biases / norms do not
    kw = {"fused": True} if next(model.parameters()).is_cuda else {}
    return torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}],
                             lr=args.lr, betas=(0.9, args.beta2), eps=1e-8, **kw)


def heldout_eval(model, ids, args, device, limit, bf16=True):
    """Strided held-out perplexity of a full-vocabulary model; bf16 autocast as in training
    unless bf16=False (the final eval of the saved checkpoint runs in fp32, as
    train/hf_perplexity.py does)."""
    import torch
    ids = ids[:limit] if limit else ids
    stride = args.eval_stride or args.context // 2
    was_training = model.training
    model.eval()
    with torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16,
                        enabled=bf16 and args.bf16):
        r = strided_ppl.perplexity(model, ids, args.context, stride, device)
    model.train(was_training)
    return r


def sample_texts(model_dir, device, max_new_tokens=60):
    """Greedy and temperature-sampled continuations from the saved checkpoint."""
    import torch
    from transformers import AutoTokenizer, OPTForCausalLM
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = OPTForCausalLM.from_pretrained(model_dir, dtype=torch.float32).to(device).eval()
    out = []
    for prompt in SAMPLE_PROMPTS:
        enc = tok(prompt, return_tensors="pt").to(device)
        assert int(enc["input_ids"][0, 0]) == corpus.BOS_ID, "tokenizer must prepend </s>"
        for mode, kw in [("greedy", dict(do_sample=False, repetition_penalty=1.0)),
                         ("temperature 0.8, top-k 40", dict(do_sample=True, temperature=0.8,
                                                             top_k=40))]:
            torch.manual_seed(0)
            with torch.no_grad():
                n = min(max_new_tokens,
                        model.config.max_position_embeddings - enc["input_ids"].shape[1])
                g = model.generate(**enc, max_new_tokens=n, pad_token_id=corpus.PAD_ID, **kw)
            text = tok.decode(g[0], skip_special_tokens=True)
            out.append(f"[{mode}] {text}")
    return "\n\n".join(out) + "\n"


class Trainer:
    """The model being trained (compact or full vocabulary), its optimizer and its progress;
    exports and evaluates the full-vocabulary model, saves and restores the training state."""

    def __init__(self, args, device, vocab):
        import torch
        self.args, self.device, self.vocab = args, device, vocab
        self.model = (make_model(args, vocab.size, pad_token_id=vocab.size - 1) if vocab
                      else make_model(args)).to(device)
        self.opt = optimizer_for(self.model, args)
        self.offset = vocab.logit_offset(torch, device) if vocab else None
        self.step = 0
        self.elapsed_before = 0.0  # training seconds of earlier (resumed) processes
        self.running = None

    def loss(self, x, y):
        import torch
        with torch.autocast(device_type=torch.device(self.device).type, dtype=torch.bfloat16,
                            enabled=self.args.bf16):
            logits = self.model(input_ids=x).logits
        logits = logits.float()
        if self.offset is not None:
            logits = logits + self.offset
        return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)),
                                                 y.reshape(-1))

    def full_model(self):
        """The full-vocabulary model (the trained one itself when --vocab full)."""
        if self.vocab is None:
            return self.model
        return compact_vocab.expand_model(self.model, self.vocab,
                                          lambda n: make_model(self.args, n)).to(self.device)

    def export(self, model_dir):
        """Writes the fp16 full-vocabulary checkpoint + generation_config.json to model_dir."""
        from transformers import GenerationConfig
        full = self.full_model()
        if full is self.model:
            import copy
            full = copy.deepcopy(self.model)
        full.config.use_cache = True
        full.half().save_pretrained(model_dir, safe_serialization=True)
        GenerationConfig(bos_token_id=corpus.BOS_ID, eos_token_id=corpus.EOS_ID,
                         pad_token_id=corpus.PAD_ID, do_sample=True, temperature=0.8, top_k=40,
                         max_new_tokens=64).save_pretrained(model_dir)

    def save_state(self, path, rng, elapsed):
        import torch
        tmp = path + ".tmp"
        torch.save({"model": self.model.state_dict(), "opt": self.opt.state_dict(),
                    "step": self.step, "elapsed": elapsed, "running": self.running,
                    "rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
                    "cuda_rng": (torch.cuda.get_rng_state_all() if torch.cuda.is_available()
                                 else None),
                    "args": vars(self.args)}, tmp)
        os.replace(tmp, path)  # never a half-written state

    def load_state(self, path, rng):
        import torch
        # On the CPU: the RNG states must stay CPU tensors (set_rng_state refuses others);
        # load_state_dict moves the weights and the optimizer's state to their parameters'.
        st = torch.load(path, map_location="cpu", weights_only=False)
        for k in ("hidden", "layers", "heads", "ffn", "context", "vocab", "batch"):
            if st["args"][k] != getattr(self.args, k):
                sys.exit(f"--resume: {path} was trained with --{k} {st['args'][k]}, "
                         f"this run asks for {getattr(self.args, k)}")
        self.model.load_state_dict(st["model"])
        self.opt.load_state_dict(st["opt"])
        self.step, self.elapsed_before, self.running = st["step"], st["elapsed"], st["running"]
        rng.bit_generator.state = st["rng"]
        torch.set_rng_state(st["torch_rng"])
        if st.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(st["cuda_rng"])


def main(argv=None):
    args = parse_args(argv)
    if args.schedule_by_time and not args.max_minutes:
        sys.exit("--schedule-by-time needs --max-minutes")
    if args.steps < 1:
        sys.exit("--steps must be at least 1")
    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)

    model_dir = os.path.join(args.models_dir, args.name)
    run_dir = os.path.join(args.runs_dir, args.name)
    os.makedirs(model_dir, exist_ok=True)
    os.makedirs(run_dir, exist_ok=True)
    state_path = os.path.join(args.cache_dir, f"{args.name}.state.pt")

    # Tokenizer files first: the model directory's vocab.json is what training uses.
    corpus.write_tokenizer_files(args.data, model_dir)
    tok = corpus.load_tokenizer(model_dir)
    stream, stream_meta = tokenized_stream(args, tok)
    heldout_ids = corpus.encode(tok, corpus.heldout_text(os.path.join(args.data, "corpus"),
                                                         args.heldout_from_year))
    print(f"train stream: {stream.size} tokens ({stream_meta['characters']} chars); held-out: "
          f"{len(heldout_ids)} ids", flush=True)
    vocab = None
    train_ids = np.asarray(stream, dtype=np.int64)
    if args.vocab == "corpus":
        vocab = compact_vocab.CompactVocab.from_stream(stream, corpus.VOCAB_SIZE)
        train_ids = vocab.to_compact(train_ids)
        print(f"compact head: {vocab.seen.size} ids of the training text + 1 row shared by the "
              f"other {vocab.unseen_count}", flush=True)

    tr = Trainer(args, device, vocab)
    n_params = sum(p.numel() for p in make_model(args).parameters())
    settings = dict(vars(args), device_used=device, parameters=n_params,
                    fp16_bytes=2 * n_params, train_tokens_available=int(stream.size),
                    heldout_ids=len(heldout_ids), heldout_files=[
                        os.path.basename(p) for p in corpus.heldout_files(
                            os.path.join(args.data, "corpus"), args.heldout_from_year)],
                    tokens_per_step=args.batch * args.context,
                    compact_vocab=vocab.to_json() if vocab else None,
                    torch=torch.__version__, transformers=__import__("transformers").__version__)
    if 2 * n_params > MAX_CHECKPOINT_BYTES:  # issue 6: the bundled checkpoint is <= 40 MB
        sys.exit(f"{n_params} parameters make a {2 * n_params / 1e6:.1f} MB fp16 checkpoint, over "
                 f"{MAX_CHECKPOINT_BYTES / 1e6:.0f} MB: fewer --layers, a smaller --hidden or "
                 f"--context")
    print(f"model: {n_params / 1e6:.2f}M params, {2 * n_params / 1e6:.1f} MB in fp16; device "
          f"{device}; {args.batch} x {args.context} tokens/step", flush=True)
    if args.resume:
        if not os.path.exists(state_path):
            sys.exit(f"--resume: no training state at {state_path}")
        tr.load_state(state_path, rng)
        print(f"resumed at step {tr.step} ({tr.elapsed_before / 60:.1f} min trained)", flush=True)

    loss_path = os.path.join(run_dir, "loss.csv")
    loss_file = open(loss_path, "a" if args.resume else "w", newline="")
    loss_csv = csv.writer(loss_file)
    if not args.resume:
        loss_csv.writerow(["step", "tokens", "lr", "train_loss", "heldout_ppl", "elapsed_s"])
    span = args.context + 1
    hi = train_ids.size - span
    t_start = time.time()
    t_checkpoint = t_start
    tr.model.train()
    while tr.step < args.steps:
        elapsed = tr.elapsed_before + time.time() - t_start
        lr = lr_at(tr.step, args, elapsed)
        for g in tr.opt.param_groups:
            g["lr"] = lr
        starts = rng.integers(0, hi, size=args.batch)
        batch = np.stack([train_ids[s:s + span] for s in starts])
        xy = torch.from_numpy(batch).to(device, non_blocking=True)
        loss = tr.loss(xy[:, :-1], xy[:, 1:])
        tr.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(tr.model.parameters(), args.grad_clip)
        tr.opt.step()
        lv = loss.item()
        tr.running = lv if tr.running is None else 0.9 * tr.running + 0.1 * lv
        tr.step += 1
        done = tr.step
        elapsed = tr.elapsed_before + time.time() - t_start
        ppl = ""
        if args.eval_every and done % args.eval_every == 0 and done < args.steps:
            full = tr.full_model()
            ppl = round(heldout_eval(full, heldout_ids, args, device, args.eval_tokens)["ppl"], 3)
            del full
        if done % args.log_every == 0 or ppl != "" or done == 1:
            loss_csv.writerow([done, done * args.batch * args.context, f"{lr:.3e}", f"{lv:.4f}",
                               ppl, round(elapsed, 1)])
            loss_file.flush()
            rate = (done * args.batch * args.context) / max(elapsed, 1e-9)
            print(f"step {done}/{args.steps} loss {lv:.4f} (avg {tr.running:.4f}) lr {lr:.2e} "
                  f"{'heldout ppl ' + str(ppl) + ' ' if ppl != '' else ''}"
                  f"{rate:.0f} tok/s {elapsed / 60:.1f} min", flush=True)
        stop = args.max_minutes and elapsed > 60 * args.max_minutes
        if stop:
            print(f"stopping at step {done}: --max-minutes {args.max_minutes} reached", flush=True)
        if args.checkpoint_minutes and (stop or time.time() - t_checkpoint
                                        > 60 * args.checkpoint_minutes):
            os.makedirs(args.cache_dir, exist_ok=True)
            tr.save_state(state_path, rng, elapsed)
            tr.export(model_dir)
            t_checkpoint = time.time()
            print(f"checkpoint: {state_path}, fp16 export in {model_dir}", flush=True)
        if stop:
            break
    loss_file.close()
    train_seconds = tr.elapsed_before + time.time() - t_start

    # Save in fp16 (the bundled format) and evaluate what was saved.
    tr.export(model_dir)
    steps_done = tr.step
    running = tr.running
    del tr
    from transformers import OPTForCausalLM
    saved = OPTForCausalLM.from_pretrained(model_dir, dtype=torch.float32).to(device)
    final = heldout_eval(saved, heldout_ids, args, device, args.final_eval_tokens, bf16=False)
    final.update(steps_done=steps_done, tokens_trained=steps_done * args.batch * args.context,
                 epochs=steps_done * args.batch * args.context / stream.size,
                 train_minutes=round(train_seconds / 60, 1),
                 final_train_loss_avg=round(running, 4),
                 checkpoint_bytes=os.path.getsize(os.path.join(model_dir, "model.safetensors")),
                 weights="fp16 checkpoint, evaluated in fp32 (transformers, eager)")
    print(f"held-out perplexity of the saved fp16 checkpoint: {final['ppl']:.3f} over "
          f"{final['tokens']} tokens (window {final['window']}, stride {final['stride']})",
          flush=True)
    settings.update(steps_done=steps_done, train_minutes=final["train_minutes"])
    with open(os.path.join(run_dir, "settings.json"), "w") as f:
        json.dump(settings, f, indent=2)
    with open(os.path.join(run_dir, "eval.json"), "w") as f:
        json.dump(final, f, indent=2)
    del saved
    samples = sample_texts(model_dir, device)
    with open(os.path.join(run_dir, "samples.txt"), "w") as f:
        f.write(samples)
    print(samples, flush=True)


if __name__ == "__main__":
    main()
