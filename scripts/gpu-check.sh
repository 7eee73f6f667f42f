#!/usr/bin/env bash
# The GPU checks, run on the GPU machine (the device tool) from the archive that
# scripts/gpu-bundle.sh made here. A session has 15 minutes of device time and one command may
# run 10, so the sections go in two calls sent back to back (docs/gpu-checks.md):
#
#   run(carry=[".bundle"], timeout_s=520, command="GPU_CHECK_SECONDS=480 timeout 500 bash scripts/gpu-check.sh tests eval serve bench")
#   run(carry=[".bundle"], timeout_s=S+40, command="GPU_CHECK_SECONDS=S timeout T bash scripts/gpu-check.sh scaleout")
#
# GPU_CHECK_SECONDS (default 560) is this call's whole budget: every timeout below is cut to
# what is left of it (a section or test that cannot start is reported SKIP ... no time, a
# failure), so the results come back before the device tool's limit. For the second call,
# S = the first reply's budget_left_s - 60 (- 180 more when the machine is no longer warm) and
# T = S + 20, both written as numbers. Child timeouts send SIGKILL 10 s after SIGTERM.
#
# Sections, each bounded by its own timeouts, in the order given:
#   tests     every GPU test binary (ctest label gpu), one after another       -> tests.log
#             (a test that skips there, exit 77, counts as a failure: the GPU is the point)
#   eval      held-out perplexity on the GPU: fp16, int8 thr 6, int8 thr 0 at TP 1 and fp16 at
#             TP 2, the four at once                                             -> eval.log
#   serve     llmint8 serve --device=cuda with the bundled model: int8 TP 2 over NCCL (the two
#             ranks share the GPU, each its own NCCL_HOSTID) and fp16 TP 1, the same greedy
#             Generate on both, then a sampled one, then 16-client loadtests, the last one
#             outgrowing --kv_budget_tokens (sequences preempted and prefilled again)
#                                                                               -> serve.log
#   bench     llmint8_kernel_bench --backend=cuda (issue 2's table), then the variants that
#             pick defaults (small-M kernel vs cuBLASLt at M 8..32, chunked vs one-piece GEMM)
#                                                                                -> bench.md, bench.log
#   scaleout  issue 5 item 7: OPT-13B-shaped fp16 TP 4 vs int8 TP 2 under 12 GiB caps (and fp16
#             on 2 refused), OPT-66B-shaped int8 on one GPU capped at 80 GiB    -> scaleout.log
# plus summary.txt (the machine, then one PASS / FAIL line per check, with seconds). Exit
# status: 0 when every check passed. At most 8 files come back from $OUT: keep it that way.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
out=${OUT:-out/gpu}
mkdir -p "$out"
sections=("$@")
[ ${#sections[@]} -gt 0 ] || sections=(tests eval serve bench)

root=/tmp/llmint8-gpu
summary=$out/summary.txt
: > "$summary"
status=0
t0=$SECONDS
deadline=$((SECONDS + ${GPU_CHECK_SECONDS:-560}))
note() { echo "[$((SECONDS - t0)) s] $*" | tee -a "$summary"; }
# lim N: N seconds, or what is left of the budget (keeping 10 s to write the results), >= 1.
lim() {
  local left=$((deadline - SECONDS - 10))
  [ "$left" -lt 1 ] && left=1
  echo $(($1 < left ? $1 : left))
}
# bounded N CMD...: CMD under timeout lim(N), SIGKILL 10 s after SIGTERM.
bounded() {
  local n
  n=$(lim "$1")
  shift
  timeout -k 10 "$n" "$@"
}
# time_for N: whether N seconds of the budget are left (else notes the skip, a failure).
time_for() {
  if [ $((deadline - SECONDS)) -ge "$1" ]; then return 0; fi
  note "SKIP $2 (no time left of GPU_CHECK_SECONDS)"
  status=1
  return 1
}
check() {  # check NAME RC
  if [ "$2" -eq 0 ]; then note "PASS $1"; else note "FAIL $1 (exit $2)"; status=1; fi
}

rm -rf "$root" && mkdir -p "$root"
unpack() {  # xz may be missing on the device image; Python's lzma reads the same stream
  if command -v xz > /dev/null; then
    xz -dc .bundle/gpu.tar.xz
  else
    python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), sys.stdout.buffer)' \
      .bundle/gpu.tar.xz
  fi
}
if ! unpack | tar -C "$root" -xf -; then
  note "FAIL unpack .bundle/gpu.tar.xz (run scripts/gpu-bundle.sh here, carry .bundle)"
  exit 2
fi
bin=$root/gpu/bin
export LD_LIBRARY_PATH=$root/gpu/lib:/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export OMP_WAIT_POLICY=PASSIVE  # as ctest runs the tests
# CUDA runtime, cuBLASLt and NCCL come from the machine. Where the system has no NCCL (or
# cuBLASLt), Python's NVIDIA wheels (torch's) may: their lib folders go last in the path.
if ldd "$bin/llmint8" "$bin/llmint8_kernel_bench" | grep -q 'not found'; then
  wheels=$(timeout 30 python3 -c 'import glob, os, nvidia
for p in nvidia.__path__:
    for d in sorted(glob.glob(os.path.join(p, "*", "lib")) + glob.glob(os.path.join(p, "*", "*", "lib"))):
        print(d)' 2> /dev/null | paste -sd: -)
  [ -n "$wheels" ] && export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:$wheels
fi
export LLMINT8_SOURCE_DIR=$PWD
export NCCL_DEBUG=${NCCL_DEBUG:-WARN}
model=${LLMINT8_MODEL:-models/opt-sotu-cpu}  # the bundled model (tools/bundled_model.h)
{
  date -u +%FT%TZ
  timeout 20 nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv
  nvcc --version 2> /dev/null | tail -1
  df -h /dev/shm | tail -1
  echo "cores: $(nproc)"
} >> "$summary" 2>&1
if ldd "$bin/llmint8" "$bin/llmint8_kernel_bench" | grep 'not found' >> "$summary"; then
  note "FAIL shared libraries missing (above)"
  exit 2
fi
ldd "$bin/llmint8" | grep -E 'cudart|cublas|nccl' >> "$summary"  # which ones were found

# ready ADDRESS SECONDS [PID]: a one-token Generate succeeds within SECONDS (and PID, the
# server, is still running while we wait).
ready() {
  local end=$((SECONDS + $2))
  until "$bin/llmint8" generate --coordinator="$1" --token_ids=2 --max_new_tokens=1 --timeout=5 \
      > /dev/null 2>&1; do
    [ $SECONDS -ge $end ] && return 1
    [ -n "${3:-}" ] && ! kill -0 "$3" 2> /dev/null && return 1
    sleep 1
  done
}
# stop PID...: SIGTERM, then SIGKILL after 20 s.
stop() {
  kill "$@" 2> /dev/null
  for p in "$@"; do timeout 20 tail --pid="$p" -f /dev/null || kill -9 "$p" 2> /dev/null; done
}

prompt="Mr. Speaker, Mr. Vice President, Members of Congress, my fellow Americans: tonight"

for section in "${sections[@]}"; do
  case $section in
  tests)
    log=$out/tests.log
    : > "$log"
    timeouts=0
    while read -r t; do
      time_for 20 "test $t" || continue
      case $t in nccl_* | tp_*) limit=200 ;; *) limit=90 ;; esac
      echo "=== $t (limit $limit s)" >> "$log"
      start=$SECONDS
      bounded $limit "$bin/llmint8_$t" < /dev/null >> "$log" 2>&1
      rc=$?
      echo "=== $t: exit $rc in $((SECONDS - start)) s" >> "$log"
      [ "$rc" -eq 77 ] && note "SKIPPED-ON-GPU $t (a failure here)"
      check "test $t ($((SECONDS - start)) s)" "$rc"
      if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then timeouts=$((timeouts + 1)); else timeouts=0; fi
      if [ "$timeouts" -ge 2 ]; then
        note "FAIL tests: two timed out in a row (a hung GPU?); the rest not run"
        status=1
        break
      fi
    done < "$root/gpu/gpu-tests.txt"
    ;;
  eval)
    time_for 60 "section eval" || continue
    log=$out/eval.log
    : > "$log"
    text=tests/data/heldout/sotu-2010-2021.txt
    runs=("--dtype=fp16" "--dtype=int8 --threshold=6" "--dtype=int8 --threshold=0"
          "--dtype=fp16 --tp=2")
    pids=()
    for i in "${!runs[@]}"; do
      # shellcheck disable=SC2086
      bounded 240 "$bin/llmint8" eval --model="$model" --text=$text --device=cuda ${runs[$i]} \
        --json > "$root/eval$i.out" 2>&1 &
      pids+=($!)
    done
    for i in "${!runs[@]}"; do
      wait "${pids[$i]}"
      rc=$?
      { echo "=== eval ${runs[$i]} --device=cuda (exit $rc)"; cat "$root/eval$i.out"; } >> "$log"
      check "eval ${runs[$i]}" $rc
    done
    # The numbers, not only the exits: fp16 equals transformers' (the model's
    # train/runs/<name>/eval.json, the same windows over the same ids) within 0.1%, int8
    # threshold 6 is within 1% of fp16, and TP 2 equals TP 1 within 0.1%.
    python3 - "$root" "train/runs/$(basename "$model")/eval.json" >> "$log" 2>&1 <<'PY'
import json, sys
root, hf_file = sys.argv[1], sys.argv[2]
def result(i):
    text = open(f"{root}/eval{i}.out").read()
    return json.loads(text[text.index("{"):text.rindex("}") + 1])
hf_result = json.load(open(hf_file))
runs = [result(i) for i in range(4)]
hf = hf_result["ppl"]
fp16, int8_6, int8_0, fp16_tp2 = (r["ppl"] for r in runs)
print(f"ppl transformers {hf:.4f}  fp16 {fp16:.4f}  int8 thr6 {int8_6:.4f}  "
      f"int8 thr0 {int8_0:.4f}  fp16 tp2 {fp16_tp2:.4f}")
bad = []
# Perplexities compare only over the same ids and windows (a tokenizer difference would
# otherwise show as an unexplained gap).
for key in ("num_ids", "tokens", "window", "stride"):
    if any(r[key] != hf_result[key] for r in runs):
        bad.append(f"{key}: transformers {hf_result[key]}, llmint8 {[r[key] for r in runs]}")
if abs(fp16 / hf - 1) > 1e-3: bad.append("fp16 vs transformers > 0.1%")
if abs(int8_6 / fp16 - 1) > 1e-2: bad.append("int8 thr6 vs fp16 > 1%")
if abs(fp16_tp2 / fp16 - 1) > 1e-3: bad.append("fp16 TP 2 vs TP 1 > 0.1%")
print("bounds: " + ("; ".join(bad) if bad else "all within"))
sys.exit(1 if bad else 0)
PY
    check "eval numbers: fp16 = transformers, int8 thr 6 within 1%, TP 2 = TP 1" $?
    ;;
  serve)
    time_for 90 "section serve" || continue
    log=$out/serve.log
    : > "$log"
    port=50051
    # The fp16 run also drafts tokens by prompt lookup (--speculative_tokens): the CUDA
    # workers verify them and drop the rejected ones' KV positions.
    for run in "int8 2 0" "fp16 1 4"; do
      set -- $run
      time_for 60 "serve $1 tp $2" || continue
      echo "=== serve --dtype=$1 --tp=$2 --device=cuda --speculative_tokens=$3 ($model)" >> "$log"
      # --respawn=false: a worker that crashes fails the run instead of loading again.
      # --kv_budget_tokens=1536: the first two loadtests fit (16 x 64 and 8 x 48 positions),
      # the third (16 x 128) preempts sequences, which the CUDA workers release and prefill
      # again.
      first_line=$(($(wc -l < "$log") + 1))
      "$bin/llmint8" serve --model="$model" --dtype="$1" --tp="$2" --device=cuda \
        --respawn=false --kv_budget_tokens=1536 --speculative_tokens="$3" \
        --listen=127.0.0.1:$port >> "$log" 2>&1 &
      server=$!
      ready 127.0.0.1:$port "$(lim 90)" $server
      rc=$?
      check "serve $1 tp $2 ready" $rc
      if [ $rc -eq 0 ]; then
        echo "--- greedy, 64 tokens" >> "$log"
        bounded 90 "$bin/llmint8" generate --coordinator=127.0.0.1:$port --prompt="$prompt" \
          --max_new_tokens=64 --timeout=80 > "$root/greedy-$1-$2.txt" 2>> "$log"
        check "serve $1 tp $2 greedy generate" $?
        cat "$root/greedy-$1-$2.txt" >> "$log"
        echo "--- temperature 0.8, top_p 0.95, seed 7" >> "$log"
        bounded 90 "$bin/llmint8" generate --coordinator=127.0.0.1:$port --prompt="$prompt" \
          --max_new_tokens=64 --temperature=0.8 --top_p=0.95 --seed=7 --timeout=80 >> "$log" 2>&1
        check "serve $1 tp $2 sampled generate" $?
        echo "--- loadtest: 16 clients, 32 requests, 32 prompt + 32 new tokens" >> "$log"
        bounded 30 "$bin/llmint8" loadtest --coordinator=127.0.0.1:$port --requests=32 \
          --concurrency=16 --prompt_tokens=32 --max_new_tokens=32 --seed=1 >> "$log" 2>&1
        check "serve $1 tp $2 loadtest" $?
        # Prompts that share their first 24 tokens: the later ones start from a copy of a
        # cached prefix (PagedKvCache::CopyPrefix, SeqStep.prefix_from) on the device.
        echo "--- loadtest: 8 clients, 16 requests, 32 prompt (24 shared) + 16 new tokens" >> "$log"
        bounded 30 "$bin/llmint8" loadtest --coordinator=127.0.0.1:$port --requests=16 \
          --concurrency=8 --prompt_tokens=32 --shared_prefix_tokens=24 --max_new_tokens=16 \
          --seed=2 >> "$log" 2>&1
        check "serve $1 tp $2 shared-prefix loadtest" $?
        echo "--- loadtest: 16 clients, 32 requests, 32 prompt + 96 new tokens (preempts)" >> "$log"
        bounded 30 "$bin/llmint8" loadtest --coordinator=127.0.0.1:$port --requests=32 \
          --concurrency=16 --prompt_tokens=32 --max_new_tokens=96 --seed=3 >> "$log" 2>&1
        check "serve $1 tp $2 preemption loadtest" $?
        # The scheduler warns at the first preemption (and every 100th): this server's lines.
        tail -n +"$first_line" "$log" | grep -q 'the KV cache is full'
        check "serve $1 tp $2 preempted sequences (a 'KV cache is full' warning)" $?
      fi
      stop $server
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
  bench)
    time_for 60 "section bench" || continue
    table=$out/bench.md
    log=$out/bench.log
    : > "$table"
    : > "$log"
    bounded 200 "$bin/llmint8_kernel_bench" --backend=cuda >> "$table" 2>> "$log"
    check "bench llmint8_kernel_bench --backend=cuda" $?
    # Variants on the fc1 shape: where the small-M kernel should hand over to cuBLASLt, and what
    # the L2-sized GEMM chunks buy over one GEMM whose int32 scratch goes through HBM.
    for flags in "--m=8,16,32 --gemv_max_m=32" "--m=8,16,32 --gemv_max_m=4" \
                 "--m=512,2048 --gemm_chunk_n=0" "--m=512,2048 --gemm_chunk_n=4096" \
                 "--m=512,2048 --gemm_chunk_n=1000000"; do
      time_for 30 "bench variant $flags" || continue
      # shellcheck disable=SC2086
      { echo; echo "llmint8_kernel_bench --backend=cuda --shapes=12288x49152 $flags"; echo; } >> "$table"
      # shellcheck disable=SC2086
      bounded 90 "$bin/llmint8_kernel_bench" --backend=cuda --shapes=12288x49152 $flags \
        >> "$table" 2>> "$log"
      check "bench variant $flags" $?
    done
    ;;
  scaleout)
    time_for 120 "section scaleout" || continue
    log=$out/scaleout.log
    : > "$log"
    # Overridable to rehearse the flow on a CPU machine with small models and caps.
    m13=${LLMINT8_SCALEOUT_13B:-synthetic:13b}
    cap13=${LLMINT8_SCALEOUT_13B_CAP:-12GiB}
    m66=${LLMINT8_SCALEOUT_66B:-synthetic:66b}
    cap66=${LLMINT8_SCALEOUT_66B_CAP:-80GiB}
    dev=${LLMINT8_SCALEOUT_DEVICE:-cuda}
    if [ "$dev" = cuda ]; then tp=nccl devflags=--cuda_device=0; else tp=gloo devflags=; fi
    for spec in "13b fp16 $cap13" "13b int8 $cap13" "66b int8 $cap66" "66b fp16 $cap66"; do
      set -- $spec
      echo "--- llmint8 plan --model=$1 --dtype=$2 --gpu_memory=$3" >> "$log"
      "$bin/llmint8" plan --model="$1" --dtype="$2" --gpu_memory="$3" 2>&1 | head -2 >> "$log"
    done
    # The 66B worker loads first, in the background: ~2 min of CPU weight generation that the
    # 13B runs overlap. Its cap makes the plan that of an 80 GB GPU on this larger one.
    "$bin/llmint8" worker --listen=127.0.0.1:53061 --device=$dev $devflags \
      --memory_limit=$cap66 > "$root/w66.log" 2>&1 &
    w66=$!
    "$bin/llmint8" coordinator --listen=127.0.0.1:53051 --workers=127.0.0.1:53061 \
      --model=$m66 --dtype=int8 --device=$dev --backend=local --group=smallest \
      > "$root/c66.log" 2>&1 &
    c66=$!
    # generate_32 NAME ADDRESS SERVER_PID LIMIT LOGS...: ready within LIMIT s, 32 tokens, the GPU
    # memory per process and what the logs say about the group and the shards.
    generate_32() {
      local name=$1 address=$2 server=$3 limit=$4 rc
      shift 4
      ready "$address" "$(lim "$limit")" "$server"
      rc=$?
      check "scaleout $name ready" $rc
      if [ $rc -eq 0 ]; then
        bounded 120 "$bin/llmint8" generate --coordinator="$address" --token_ids=2,100,200,300 \
          --max_new_tokens=32 --ignore_eos --timeout=110 >> "$log" 2>&1
        rc=$?
        check "scaleout $name generate" $rc
      fi
      timeout 20 nvidia-smi --query-compute-apps=pid,used_memory --format=csv >> "$log" 2>&1
      grep -h -i "group\|loaded\|fits\|needs" "$@" >> "$log"
      if [ $rc -ne 0 ]; then  # the processes' own words: what failed, in the one log that returns
        for f in "$@"; do { echo "--- tail of $(basename "$f")"; tail -n 40 "$f"; } >> "$log"; done
      fi
    }
    workers=127.0.0.1:52061,127.0.0.1:52062,127.0.0.1:52063,127.0.0.1:52064
    start_workers() {  # four ranks on the one GPU, each its own NCCL host and a 12 GiB cap
      wpids=()
      for i in 0 1 2 3; do
        NCCL_HOSTID=llmint8-rank-$i NCCL_SOCKET_IFNAME=lo NCCL_IB_DISABLE=1 NCCL_NET=Socket \
          "$bin/llmint8" worker --listen=127.0.0.1:$((52061 + i)) --device=$dev $devflags \
          --memory_limit=$cap13 > "$root/w$1-$i.log" 2>&1 &
        wpids+=($!)
      done
    }
    for dtype in fp16 int8; do
      start_workers $dtype  # fresh workers: no shard of the other run in their memory
      "$bin/llmint8" coordinator --listen=127.0.0.1:52051 --workers=$workers --model=$m13 \
        --dtype=$dtype --device=$dev --backend=$tp --group=smallest > "$root/c13-$dtype.log" 2>&1 &
      c13=$!
      echo "=== $m13 $dtype on 4 workers capped at $cap13" >> "$log"
      generate_32 "13b $dtype" 127.0.0.1:52051 $c13 150 "$root/c13-$dtype.log" "$root/w$dtype"-*.log
      stop $c13 "${wpids[@]}"
    done
    echo "=== $m13 fp16 on 2 workers capped at $cap13: must be refused" >> "$log"
    start_workers refuse
    "$bin/llmint8" coordinator --listen=127.0.0.1:52051 --workers=127.0.0.1:52061,127.0.0.1:52062 \
      --model=$m13 --dtype=fp16 --device=$dev --backend=$tp --group=smallest \
      > "$root/c13-refuse.log" 2>&1 &
    cref=$!
    # A Generate sent before the refusal waits in the queue and fails with it.
    refused=1
    end=$((SECONDS + $(lim 90)))
    while [ $SECONDS -lt $end ] && kill -0 $cref 2> /dev/null; do
      if bounded 30 "$bin/llmint8" generate --coordinator=127.0.0.1:52051 --token_ids=2 \
           --max_new_tokens=1 --timeout=25 > "$root/refuse.out" 2>&1; then
        break  # served: wrong
      fi
      if grep -q "int8 fits in 2" "$root/refuse.out" "$root/c13-refuse.log"; then
        refused=0
        break
      fi
      sleep 1
    done
    cat "$root/refuse.out" >> "$log"
    stop $cref "${wpids[@]}"
    check "scaleout 13b fp16 on 2 refused" $refused
    [ $refused -ne 0 ] && { echo "--- tail of c13-refuse.log"; tail -n 40 "$root/c13-refuse.log"; } >> "$log"
    echo "=== $m66 int8 on 1 worker capped at $cap66" >> "$log"
    generate_32 "66b int8" 127.0.0.1:53051 $c66 240 "$root/c66.log" "$root/w66.log"
    stop $c66 $w66
    ;;
  *)
    note "FAIL unknown section $section (tests eval serve bench scaleout)"
    status=1
    ;;
  esac
done
note "gpu-check: done; results in $out"
exit $status
