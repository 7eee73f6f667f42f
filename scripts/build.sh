#!/usr/bin/env bash
# Configures and builds llmint8 into ${LLMINT8_BUILD_DIR:-build} (Ninja, ccache, RelWithDebInfo).
# Extra arguments go to cmake's configure step, e.g. -DLLMINT8_CUDA=OFF.
# LLMINT8_TARGETS="llmint8_cli ..." builds only those targets (default: everything).
# LLMINT8_WARNINGS_FATAL=1 fails the build when a compiler printed a warning (the code is
# -Wall -Wextra clean; ccache replays a cached compile's warnings, so a clean clone sees all).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${LLMINT8_BUILD_DIR:-build}
jobs=${LLMINT8_JOBS:-$(nproc)}
export CCACHE_DIR=${CCACHE_DIR:-$HOME/.cache/ccache}
export CCACHE_MAXSIZE=${CCACHE_MAXSIZE:-5G}
# Clones in other folders (CI) hit the same cache: paths relative to the checkout, cwd not hashed.
export CCACHE_BASEDIR=${CCACHE_BASEDIR:-$PWD}
export CCACHE_NOHASHDIR=${CCACHE_NOHASHDIR:-1}
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@"
targets=()
for t in ${LLMINT8_TARGETS:-}; do targets+=(--target "$t"); done
log="$build/build.log"
cmake --build "$build" -j "$jobs" "${targets[@]}" 2>&1 | tee "$log"
if [ "${LLMINT8_WARNINGS_FATAL:-0}" = 1 ] &&
    grep -E 'warning( #[0-9]+-D)?:|nvcc warning' "$log" >"$build/build-warnings.log"; then
  echo "build: the compilers printed warnings (fix them; the code is -Wall -Wextra clean):" >&2
  cat "$build/build-warnings.log" >&2
  exit 1
fi
ccache -s 2>/dev/null | grep -E 'Hits|Misses' | head -2 || true
