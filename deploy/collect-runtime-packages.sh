#!/usr/bin/env bash
# Prints the Debian packages that own the shared libraries a binary loads, one per line, sorted:
# what a runtime image must install to run it. Used by deploy/Dockerfile's build stages.
#
#   collect-runtime-packages.sh BINARY > runtime-packages
#
# The GPU driver's libcuda / libnvidia-* are skipped: the NVIDIA container runtime mounts them.
# Fails when a library is missing or no package owns it (a library built by hand would be
# silently absent from the image otherwise).
set -euo pipefail
bin=${1:?usage: collect-runtime-packages.sh BINARY}

# Debian 12 has merged /usr: ldd may say /lib/... while dpkg recorded /usr/lib/... or the
# reverse, and a symlinked .so resolves elsewhere. Try every spelling.
owner() {
  local lib=$1 real candidates
  real=$(readlink -f "$lib")
  candidates=("$lib" "$real" "${lib#/usr}" "/usr${lib}" "${real#/usr}" "/usr${real}")
  for c in "${candidates[@]}"; do
    if pkg=$(dpkg -S "$c" 2>/dev/null | head -n 1); then
      echo "${pkg%%:*}"
      return 0
    fi
  done
  return 1
}

status=0
mapfile -t lines < <(ldd "$bin")
packages=()
for line in "${lines[@]}"; do
  case "$line" in
    *libcuda.so*|*libnvidia-*) continue ;;
    *"=> not found"*) echo "collect-runtime-packages: missing: $line" >&2; status=1; continue ;;
  esac
  lib=$(awk '/=> \// {print $3}' <<<"$line")
  [ -n "$lib" ] || continue
  if pkg=$(owner "$lib"); then
    packages+=("$pkg")
  else
    echo "collect-runtime-packages: no Debian package owns $lib" >&2
    status=1
  fi
done
[ "$status" -eq 0 ] || exit "$status"
printf '%s\n' "${packages[@]}" | sort -u
