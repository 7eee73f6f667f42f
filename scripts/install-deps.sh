#!/usr/bin/env bash
# Installs what llmint8 needs on Debian 12 that is not there yet (apt-get), as root or via sudo.
# The CUDA toolkit is optional: with nvcc on the machine the CUDA kernels and NCCL build too.
set -euo pipefail
# ca-certificates: https apt sources (NVIDIA's CUDA repository, deploy/Dockerfile) and pip.
# ocl-icd-opencl-dev: Debian's oneDNN is built with its OpenCL GPU runtime, so dnnl-config.cmake
# does find_package(OpenCL REQUIRED); libdnnl-dev only Recommends it (not installed here).
pkgs=(
  build-essential cmake ninja-build ccache pkg-config git python3 python3-pip
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler libabsl-dev
  libgtest-dev libgmock-dev libbenchmark-dev libgloo-dev libdnnl-dev nlohmann-json3-dev
  ocl-icd-opencl-dev prometheus-cpp-dev libcpp-httplib-dev
  libicu-dev libssl-dev python3-venv python3-grpcio python3-protobuf python3-numpy iproute2
  python3-jsonschema
  xz-utils shellcheck
  ca-certificates
)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#pkgs[@]} Debian packages present"
  exit 0
fi
echo "install-deps: installing ${missing[*]}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
