#!/usr/bin/env bash
# The test suite under AddressSanitizer + UndefinedBehaviorSanitizer (run by hand, not by CI: a
# cold build takes ~35 minutes on 2 cores; test timeouts are tripled). CPU only: CUDA code is
# not instrumented, so the GPU tests are left out of this build. Memory errors, leaks (at each
# process's exit, the coordinator's and workers' in the end-to-end tests included) and
# undefined behaviour fail the test that hits them; the tests' process logs ($TMPDIR or /tmp,
# llmint8_* and llmint8-*) are searched for reports afterwards, as a worker's report would
# otherwise sit in its log.
#   bash scripts/sanitize.sh                 # build into build-sanitize/, run every test
#   bash scripts/sanitize.sh -R tokenizer    # extra arguments go to ctest
set -euo pipefail
cd "$(dirname "$0")/.."
build=${LLMINT8_SANITIZE_BUILD_DIR:-build-sanitize}
bash scripts/install-deps.sh
# -O1 keeps the stacks readable and the run bearable; Debug alone would be -O0. (These flags
# replace CXXFLAGS from the environment in this build directory.)
LLMINT8_BUILD_DIR="$build" bash scripts/build.sh -DLLMINT8_CUDA=OFF \
  -DLLMINT8_SANITIZE=address,undefined -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS=-O1
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:strict_string_checks=1:detect_stack_use_after_return=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1}
tmp=${TMPDIR:-/tmp}
stamp=$(mktemp)
status=0
ctest --test-dir "$build" --output-on-failure -j "${LLMINT8_TEST_JOBS:-2}" "$@" || status=$?
# The tests' process logs: llmint8_* / llmint8-* files and directories under the temp dir.
reports=$(find "$tmp" -maxdepth 3 -path "$tmp/llmint8[-_]*" -type f -newer "$stamp" \
  -exec grep -l -E 'ERROR: (Address|Leak)Sanitizer|runtime error:' {} + 2>/dev/null || true)
rm -f "$stamp"
if [ -n "$reports" ]; then
  echo "sanitize: reports in process logs:" >&2
  echo "$reports" >&2
  status=1
fi
[ "$status" -eq 0 ] && echo "sanitize: no sanitizer reports; every test passed"
exit "$status"
