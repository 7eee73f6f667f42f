#!/usr/bin/env bash
# Packs what the GPU checks run (scripts/gpu-check.sh) for a GPU machine that has the CUDA 13
# runtime, cuBLAS and NCCL but none of the Debian -dev libraries: every GPU test binary, the
# kernel benchmark and the llmint8 binary (CUDA build, stripped) with the shared libraries they
# need from this machine (gRPC, abseil, protobuf, Gloo, oneDNN, ICU, ...; not the C/C++ runtime
# and not CUDA/cuBLAS/NCCL, which the GPU machine provides), as .bundle/gpu.tar.xz.
#
#   bash scripts/gpu-bundle.sh          # build (CUDA on) + pack; prints the sizes
#
# The device tool sends the working tree plus carried paths, 64 MiB in all: the bundled model is
# ~35 MiB of the tree, so the archive is xz-compressed (~16 MiB; ICU's data library is left
# out, see below) and this script refuses to leave an archive that would not fit. Then, with the
# device tool, the two calls of docs/gpu-checks.md (scripts/gpu-check.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${LLMINT8_BUILD_DIR:-build}
stage=.bundle/gpu
limit_mib=64

bash scripts/install-deps.sh  # a fresh machine: what the build and the bundled libraries need
bash scripts/build.sh -DLLMINT8_CUDA=ON
# The GPU tests are the ctest label `gpu`; each test's executable is llmint8_<test name>.
mapfile -t tests < <(ctest --test-dir "$build" -N -L gpu | awk '/Test +#/ {print $3}')
[ ${#tests[@]} -gt 0 ] || { echo "gpu-bundle: no GPU tests in $build (CUDA off?)" >&2; exit 1; }

rm -rf "$stage" .bundle/gpu.tar.xz
mkdir -p "$stage/bin" "$stage/lib"
bins=("$build/bench/llmint8_kernel_bench" "$build/tools/llmint8")
for t in "${tests[@]}"; do
  bins+=("$(find "$build" -type f -name "llmint8_$t" -perm -u+x | head -1)")
done
cp "${bins[@]}" "$stage/bin/"
strip "$stage"/bin/*
printf '%s\n' "${tests[@]}" > "$stage/gpu-tests.txt"

# Shared libraries, minus the C/C++ runtime every Linux host has and the CUDA stack.
for b in "$stage"/bin/*; do
  ldd "$b" | awk '/=>/ {print $3}'
done | sort -u \
  | grep -vE '/(libc|libm|libstdc\+\+|libgcc_s|ld-linux[^/]*|libpthread|libdl|librt)\.so' \
  | grep -vE '/(libcuda|libcudart|libcublas|libcublasLt|libnccl|libnvrtc|libnvJitLink)[^/]*\.so' \
  | while read -r lib; do cp -L "$lib" "$stage/lib/"; done
# ICU's data library is 30 MB (7 MB compressed) of which the tokenizer reads nothing: an empty
# one stands in (scripts/icu-empty-data.c), checked with the tokenizer tests, which compare
# encodings of unicode text with Hugging Face's.
for icudata in "$stage"/lib/libicudata.so.*; do
  [ -e "$icudata" ] || continue
  soname=$(basename "$icudata")
  gcc -O2 -shared -fPIC -Wall -Wextra -Werror -Wl,-soname,"$soname" -o "$icudata" \
    scripts/icu-empty-data.c
  LD_LIBRARY_PATH="$stage/lib" "$build/coordinator/llmint8_tokenizer_test" --gtest_brief=1 \
    >/dev/null || { echo "gpu-bundle: the tokenizer fails with the empty ICU data" >&2; exit 1; }
done

tar -C .bundle -cf - gpu | xz -9 -T"$(nproc)" > .bundle/gpu.tar.xz
rm -rf "$stage"

# What the device tool would send: tracked + untracked-not-ignored files, plus the archive.
# (A tracked file deleted in the working tree is not sent: stat fails on it, which is fine.)
tree_bytes=$( (git ls-files -z --cached --others --exclude-standard \
  | xargs -0 stat -c %s 2>/dev/null || true) | awk '{s += $1} END {print s + 0}')
archive_bytes=$(stat -c %s .bundle/gpu.tar.xz)
total_mib=$(( (tree_bytes + archive_bytes) / 1048576 ))
echo "gpu-bundle: .bundle/gpu.tar.xz $(( archive_bytes / 1048576 )) MiB (${#bins[@]} binaries);" \
     "working tree $(( tree_bytes / 1048576 )) MiB; together ${total_mib} MiB of ${limit_mib}"
if [ "$total_mib" -ge "$limit_mib" ]; then
  echo "gpu-bundle: over the device tool's ${limit_mib} MiB: send less" >&2
  exit 1
fi
