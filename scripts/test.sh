#!/usr/bin/env bash
# The whole test suite on a fresh Debian 12 machine: install what is missing, build, run ctest
# (GPU tests skip with a reason when there is no GPU), then validate the Kubernetes manifests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
LLMINT8_WARNINGS_FATAL=${LLMINT8_WARNINGS_FATAL:-1} bash scripts/build.sh "$@"
build=${LLMINT8_BUILD_DIR:-build}
# The official OpenAI client for the HTTP API's compatibility test (which skips without it).
bash scripts/openai-venv.sh || echo "test: could not install the openai client; its test skips"
ctest --test-dir "$build" --output-on-failure -j "${LLMINT8_TEST_JOBS:-2}" --timeout 900
if [ -f deploy/validate.sh ]; then
  LLMINT8_BINARY="$build/tools/llmint8" bash deploy/validate.sh
fi
