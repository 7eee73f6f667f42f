#!/usr/bin/env bash
# The main job on a fresh Debian 12 machine: install what is missing, build the `llmint8` binary,
# serve the bundled model on CPU (a coordinator + 2 worker processes, int8 weights, Gloo
# all-reduce on loopback) and stream a Generate answer to the terminal.
#
#   LLMINT8_MODEL=DIR  LLMINT8_PROMPT="..."  LLMINT8_DTYPE=fp16|int8  LLMINT8_PORT=50051
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
LLMINT8_TARGETS=llmint8_cli bash scripts/build.sh
bin=${LLMINT8_BUILD_DIR:-build}/tools/llmint8
model=${LLMINT8_MODEL:-models/opt-sotu-cpu}
dtype=${LLMINT8_DTYPE:-int8}
port=${LLMINT8_PORT:-50051}
prompt=${LLMINT8_PROMPT:-"Mr. Speaker, Mr. Vice President, Members of Congress, my fellow Americans: tonight"}

"$bin" serve --model="$model" --dtype="$dtype" --tp=2 --listen="127.0.0.1:$port" &
server=$!
trap 'kill "$server" 2>/dev/null; wait "$server" 2>/dev/null || true' EXIT

# Wait until the coordinator answers and the worker group is formed (a 1-token request succeeds).
for _ in $(seq 1 120); do
  if "$bin" generate --coordinator="127.0.0.1:$port" --token_ids=2 --max_new_tokens=1 \
       --timeout=5 >/dev/null 2>&1; then
    break
  fi
  kill -0 "$server" 2>/dev/null || { echo "demo: llmint8 serve exited" >&2; exit 1; }
  sleep 1
done

echo "--- prompt: $prompt"
# Sampled (seeded: the same text every run), with the repetition penalty small models need and
# min-p 0.05, which cuts the tail a small model's top-p still leaves (stray Moby-Dick words).
"$bin" generate --coordinator="127.0.0.1:$port" --prompt="$prompt" --max_new_tokens=64 \
  --temperature=0.7 --top_p=0.9 --min_p=0.05 --repetition_penalty=1.3 --seed=7
