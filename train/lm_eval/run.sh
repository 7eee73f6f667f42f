#!/usr/bin/env bash
# Scores the held-out State of the Union text through a running llmint8 server with
# lm-evaluation-harness's local-completions model, which calls the OpenAI completions API
# (echo, logprobs 1, max_tokens 1 per rolling window): the model's word and byte perplexity as
# the server computes it, in any dtype and at any TP degree the server runs.
#
# Usage (by hand; needs `pip install lm-eval` and a server started with --http_listen):
#   train/lm_eval/run.sh [COMPLETIONS_URL] [MODEL_DIR] [OUT_JSON]
# Defaults: http://127.0.0.1:8000/v1/completions, models/opt-sotu-cpu, no file.
# LM_EVAL_BATCH (default 8): windows per request (a batch of prompts; 4 requests in flight).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
url=${1:-http://127.0.0.1:8000/v1/completions}
model_dir=$(cd "${2:-$root/models/opt-sotu-cpu}" && pwd)
out=${3:-}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# One document per address (the file joins them with a blank line).
python3 - "$root/tests/data/heldout/sotu-2010-2021.txt" "$work/sotu_heldout.jsonl" <<'PY'
import json, sys
docs = [d for d in open(sys.argv[1], encoding="utf-8").read().split("\n\n") if d.strip()]
with open(sys.argv[2], "w", encoding="utf-8") as f:
    for d in docs:
        f.write(json.dumps({"text": d.strip()}) + "\n")
PY
cp "$here/sotu_heldout.yaml" "$work/"
# The server's model id is the directory's name; a window plus the one generated token must
# fit the context.
context=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['max_position_embeddings'])" \
  "$model_dir/config.json")
cd "$work"
HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 lm_eval --model local-completions \
  --model_args "model=$(basename "$model_dir"),base_url=$url,tokenizer=$model_dir,tokenizer_backend=huggingface,tokenized_requests=True,max_length=$((context - 1)),num_concurrent=4,max_retries=1" \
  --tasks sotu_heldout --include_path "$work" --batch_size "${LM_EVAL_BATCH:-8}" ${out:+--output_path "$out"}
