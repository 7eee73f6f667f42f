#!/usr/bin/env bash
# Renders every kustomize overlay under deploy/k8s/overlays and validates it:
#   1. render:      kubectl kustomize <overlay>   (kubectl from the machine, else Debian's
#                   kubernetes-client package, installed here when missing);
#   2. schemas:     every object against the Kubernetes OpenAPI schemas of each version in
#                   $K8S_VERSIONS, strict (unknown fields fail), offline: kubernetes-validate
#                   (PyPI) ships the schemas; it is installed into a virtualenv when missing;
#   3. consistency: deploy/check_manifests.py (selectors, probes, TP == replicas == addresses,
#                   non-root, resources, GPU requests, plan.json agrees with the config);
# and checks deploy/Dockerfile with Docker's own parser (deploy/check_dockerfile.py: stages,
# ARG scoping, COPY sources, non-root USER), since docker itself need not be on the machine.
# Prints a summary; exits non-zero if anything failed (or a tool could not be installed).
#
# Environment: K8S_VERSIONS (default "1.28.0 1.37.0": the oldest with the grpc probe GA
# behaviour we rely on, and the newest the validator ships); LLMINT8_DEPLOY_VENV (virtualenv
# location, default ~/.cache/llmint8/deploy-venv); LLMINT8_BINARY (an llmint8 binary, default
# build/tools/llmint8 when it exists: the containers' command lines must pass its
# --check_flags; without one that check is skipped, and said so).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
overlays_dir="$here/k8s/overlays"
k8s_versions=${K8S_VERSIONS:-"1.28.0 1.37.0"}
validator_version=1.37.0
dockerfile_parser_version=3.4.0
venv=${LLMINT8_DEPLOY_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/llmint8/deploy-venv}

log() { echo "validate: $*"; }
die() { echo "validate: ERROR: $*" >&2; exit 1; }

sudo_cmd() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    die "need root or sudo to run: $*"
  fi
}

apt_install() {
  command -v apt-get >/dev/null || die "apt-get not found; install $* by hand"
  log "installing Debian packages: $*"
  export DEBIAN_FRONTEND=noninteractive
  sudo_cmd apt-get update -qq
  sudo_cmd apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# --- 1. a kubectl with `kustomize` ----------------------------------------------------------
if ! command -v kubectl >/dev/null || ! kubectl kustomize --help >/dev/null 2>&1; then
  # Debian 12: kubernetes-client 1.20 (kustomize v2.0.3; the overlays are written for it too).
  apt_install kubernetes-client
fi
kubectl kustomize --help >/dev/null 2>&1 || die "kubectl has no 'kustomize' subcommand"
kubectl_version=$(kubectl version --client 2>/dev/null | head -n 2 | tr '\n' ' ' || true)
log "renderer: kubectl ${kubectl_version:-(version unknown)}"

# --- 2. kubernetes-validate (and Docker's parser) in a virtualenv ---------------------------
pip_version() { "$venv/bin/python" -m pip show "$1" 2>/dev/null | sed -n 's/^Version: //p'; }
if ! "$venv/bin/python" -c "import kubernetes_validate, yaml, dockerfile" >/dev/null 2>&1 ||
   [ "$(pip_version kubernetes-validate)" != "$validator_version" ] ||
   [ "$(pip_version dockerfile)" != "$dockerfile_parser_version" ]; then
  if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c "import ensurepip" 2>/dev/null; then
    apt_install python3-venv
  fi
  log "installing kubernetes-validate==$validator_version dockerfile==$dockerfile_parser_version into $venv"
  rm -rf "$venv"
  mkdir -p "$(dirname "$venv")"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check \
    "kubernetes-validate==$validator_version" "dockerfile==$dockerfile_parser_version"
fi
log "validator: kubernetes-validate $validator_version, Kubernetes $k8s_versions"
binary=${LLMINT8_BINARY:-$here/../build/tools/llmint8}
binary_args=()
if [ -n "${LLMINT8_BINARY:-}" ] && [ ! -x "$binary" ]; then
  die "LLMINT8_BINARY=$binary is not an executable llmint8"
fi
if [ -x "$binary" ]; then
  binary_args=(--binary "$binary")
  log "command lines: checked with $binary --check_flags"
else
  log "command lines: NOT checked (no llmint8 binary at $binary; set LLMINT8_BINARY)"
fi

# --- 3. render + validate each overlay ------------------------------------------------------
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
summary=()
failed=0
shopt -s nullglob
overlays=("$overlays_dir"/*/)
[ ${#overlays[@]} -gt 0 ] || die "no overlays under $overlays_dir"

for dir in "${overlays[@]}"; do
  name=$(basename "$dir")
  out="$work/$name.yaml"
  status="ok"
  if ! kubectl kustomize "$dir" >"$out" 2>"$work/$name.err"; then
    cat "$work/$name.err" >&2
    summary+=("$(printf '%-14s render FAILED' "$name")")
    failed=1
    continue
  fi
  # Deprecation notes for bases / patchesStrategicMerge are expected (kubectl 1.20 support).
  warnings=$(grep -c 'Warning' "$work/$name.err" || true)
  grep -v "is deprecated" "$work/$name.err" >&2 || true
  objects=$("$venv/bin/python" -c \
    'import sys, yaml; print(sum(1 for d in yaml.safe_load_all(open(sys.argv[1])) if d))' "$out")
  log "$name: rendered $objects objects ($warnings kustomize deprecation warnings)"

  schema="ok"
  for v in $k8s_versions; do
    if ! "$venv/bin/kubernetes-validate" --strict --quiet -k "$v" "$out"; then
      schema="FAILED"
      log "$name: schema validation against Kubernetes $v FAILED"
    fi
  done

  consistency="ok"
  if ! "$venv/bin/python" "$here/check_manifests.py" "$out" --name "$name" --self_test \
      "${binary_args[@]}"; then
    consistency="FAILED"
  fi

  if [ "$schema" != ok ] || [ "$consistency" != ok ]; then status="FAILED"; failed=1; fi
  summary+=("$(printf '%-14s %2d objects  schemas(%s): %-6s  consistency: %-6s  => %s' \
    "$name" "$objects" "${k8s_versions// /,}" "$schema" "$consistency" "$status")")
done

# --- 4. the container recipe ---------------------------------------------------------------
docker_status="ok"
if ! "$venv/bin/python" "$here/check_dockerfile.py" "$here/Dockerfile" "$here/.."; then
  docker_status="FAILED"
  failed=1
fi
summary+=("$(printf '%-14s parsed with Docker'"'"'s parser, stages / ARGs / COPY / USER: %s' \
  Dockerfile "$docker_status")")

echo "validate: summary"
for line in "${summary[@]}"; do echo "  $line"; done
if [ "$failed" -ne 0 ]; then
  echo "validate: FAILED"
  exit 1
fi
echo "validate: all ${#overlays[@]} overlays render and validate; the Dockerfile checks pass"
