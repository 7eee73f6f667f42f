#!/usr/bin/env bash
# Copies the built `llmint8` binary from BUILD_DIR to OUT_DIR/llmint8 and writes
# OUT_DIR/runtime-packages (deploy/collect-runtime-packages.sh). Used by deploy/Dockerfile.
#
#   install-binary.sh BUILD_DIR OUT_DIR
set -euo pipefail
build=${1:?usage: install-binary.sh BUILD_DIR OUT_DIR}
out=${2:?usage: install-binary.sh BUILD_DIR OUT_DIR}
here=$(cd "$(dirname "$0")" && pwd)
# Whatever target builds it (tools/), the executable is named llmint8.
bin=$(find "$build" -type f -name llmint8 -perm -u+x | head -n 1)
if [ -z "$bin" ]; then
  echo "install-binary: no executable named llmint8 under $build" >&2
  exit 1
fi
mkdir -p "$out"
install -m 0755 "$bin" "$out/llmint8"
bash "$here/collect-runtime-packages.sh" "$out/llmint8" > "$out/runtime-packages"
echo "install-binary: $bin -> $out/llmint8; runtime packages: $(tr '\n' ' ' < "$out/runtime-packages")"
