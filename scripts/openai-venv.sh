#!/usr/bin/env bash
# A virtualenv with the official OpenAI Python SDK, for the compatibility test of the HTTP API
# (tests/e2e/http_e2e_test.cc runs tests/e2e/openai_client.py with its interpreter). Kept at
# ${LLMINT8_TEST_VENV:-~/.cache/llmint8/test-venv}; made once per pinned version.
set -euo pipefail
version=3.57.0
venv=${LLMINT8_TEST_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/llmint8/test-venv}
if [ -x "$venv/bin/python" ] &&
   [ "$("$venv/bin/python" -c 'import openai; print(openai.__version__)' 2>/dev/null)" = "$version" ]; then
  echo "openai-venv: openai $version in $venv"
  exit 0
fi
echo "openai-venv: installing openai==$version into $venv"
rm -rf "$venv"
mkdir -p "$(dirname "$venv")"
python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --disable-pip-version-check "openai==$version"
