#!/usr/bin/env bash
# The GPU checks, in one command on the GPU machine (the device tool), from the archive that
# scripts/gpu-bundle.sh made here:
#
#   run(carry=[".bundle"], command="bash scripts/gpu-check.sh [tests] [bench] [serve] [eval]")
#
# Sections (default: tests bench serve eval), each writing one file under $OUT (or out/gpu):
#   tests  every GPU test binary (ctest label gpu), one after another  -> tests.log
#          (a test that skips there, exit 77, counts as a failure: the GPU is the point)
#   bench  llmint8_kernel_bench --backend=cuda (issue 2's table)       -> bench.md
#   serve  llmint8 serve --device=cuda with the bundled model: int8 TP 2 over NCCL (the two
#          ranks share the GPU, each its own NCCL_HOSTID) and fp16 TP 1, the same greedy
#          Generate on both, then a sampled one                         -> serve.log
#   eval   held-out perplexity on the GPU: fp16, int8 thr 6, int8 thr 0 at TP 1, fp16 at TP 2
#                                                                        -> eval.log
# and summary.txt (one line per check) + nvidia-smi.txt. Exit status: 0 when every check passed.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-out/gpu}
mkdir -p "$out"
sections=("$@")
[ ${#sections[@]} -gt 0 ] || sections=(tests bench serve eval)

root=/tmp/llmint8-gpu
rm -rf "$root" && mkdir -p "$root"
if ! xz -dc .bundle/gpu.tar.xz | tar -C "$root" -xf -; then
  echo "gpu-check: no .bundle/gpu.tar.xz (run scripts/gpu-bundle.sh here, carry .bundle)" >&2
  exit 2
fi
bin=$root/gpu/bin
export LD_LIBRARY_PATH=$root/gpu/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export LLMINT8_SOURCE_DIR=$PWD
model=${LLMINT8_MODEL:-models/opt-sotu-cpu}  # the bundled model (tools/bundled_model.h)
summary=$out/summary.txt
: > "$summary"
status=0
note() { echo "$*" | tee -a "$summary"; }
check() {  # check NAME RC
  if [ "$2" -eq 0 ]; then note "PASS $1"; else note "FAIL $1 (exit $2)"; status=1; fi
}

{ date -u +%FT%TZ; nvidia-smi; nvcc --version 2>/dev/null | tail -2; } > "$out/nvidia-smi.txt" 2>&1

for section in "${sections[@]}"; do
  case $section in
  tests)
    log=$out/tests.log
    : > "$log"
    while read -r t; do
      echo "=== $t" >> "$log"
      start=$(date +%s)
      timeout 600 "$bin/llmint8_$t" >> "$log" 2>&1
      rc=$?
      echo "=== $t: exit $rc in $(( $(date +%s) - start )) s" >> "$log"
      [ "$rc" -eq 77 ] && note "SKIPPED-ON-GPU $t (a failure here)"
      check "test $t" "$rc"
    done < "$root/gpu/gpu-tests.txt"
    ;;
  bench)
    "$bin/llmint8_kernel_bench" --backend=cuda > "$out/bench.md" 2> "$out/bench-progress.txt"
    check "bench llmint8_kernel_bench --backend=cuda" $?
    ;;
  serve)
    log=$out/serve.log
    : > "$log"
    port=50051
    prompt="Mr. Speaker, Mr. Vice President, Members of Congress, my fellow Americans: tonight"
    for run in "int8 2" "fp16 1"; do
      set -- $run
      echo "=== serve --dtype=$1 --tp=$2 --device=cuda ($model)" >> "$log"
      "$bin/llmint8" serve --model="$model" --dtype="$1" --tp="$2" --device=cuda \
        --listen=127.0.0.1:$port >> "$log" 2>&1 &
      server=$!
      ready=1
      for _ in $(seq 1 180); do
        if "$bin/llmint8" generate --coordinator=127.0.0.1:$port --token_ids=2 \
             --max_new_tokens=1 --timeout=5 > /dev/null 2>&1; then ready=0; break; fi
        kill -0 $server 2> /dev/null || break
        sleep 1
      done
      check "serve $1 tp $2 ready" $ready
      if [ $ready -eq 0 ]; then
        echo "--- greedy, 64 tokens" >> "$log"
        "$bin/llmint8" generate --coordinator=127.0.0.1:$port --prompt="$prompt" \
          --max_new_tokens=64 --timeout=60 > "$root/greedy-$1-$2.txt" 2>> "$log"
        check "serve $1 tp $2 greedy generate" $?
        cat "$root/greedy-$1-$2.txt" >> "$log"
        echo "--- temperature 0.8, top_p 0.95, seed 7" >> "$log"
        "$bin/llmint8" generate --coordinator=127.0.0.1:$port --prompt="$prompt" \
          --max_new_tokens=64 --temperature=0.8 --top_p=0.95 --seed=7 --timeout=60 >> "$log" 2>&1
        check "serve $1 tp $2 sampled generate" $?
      fi
      kill $server 2> /dev/null
      wait $server 2> /dev/null
      port=$((port + 100))
    done
    # fp16 TP 1 vs int8 TP 2: greedy texts side by side (equal unless int8 flips a near-tie).
    if [ ! -s "$root/greedy-int8-2.txt" ] || [ ! -s "$root/greedy-fp16-1.txt" ]; then
      note "INFO serve greedy int8 TP 2 vs fp16 TP 1: not compared (a run failed)"
    elif cmp -s "$root/greedy-int8-2.txt" "$root/greedy-fp16-1.txt"; then
      note "INFO serve greedy int8 TP 2 == fp16 TP 1"
    else
      note "INFO serve greedy int8 TP 2 != fp16 TP 1 (see serve.log)"
    fi
    ;;
  eval)
    log=$out/eval.log
    : > "$log"
    text=tests/data/heldout/sotu-2010-2021.txt
    for args in "--dtype=fp16" "--dtype=int8 --threshold=6" "--dtype=int8 --threshold=0" \
                "--dtype=fp16 --tp=2"; do
      echo "=== eval $args --device=cuda" >> "$log"
      # shellcheck disable=SC2086
      "$bin/llmint8" eval --model="$model" --text=$text --device=cuda $args --json \
        >> "$log" 2>&1
      check "eval $args" $?
    done
    ;;
  *)
    note "FAIL unknown section $section (tests bench serve eval)"
    status=1
    ;;
  esac
done
echo "gpu-check: results in $out" >&2
exit $status
