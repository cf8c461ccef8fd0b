#!/usr/bin/env bash
# build_cuda.sh — build the CUDA binary (and the GPU test binaries) on a machine with no GPU and no
# CUDA install, ready to carry to the GPU machine.
#
#   tools/build_cuda.sh [--no-tests]
#
# env:
#   CUDA_COMPUTE_CAP      GPU generation for candle's precompiled kernels (default 90):
#                         90 H100/H200 (Hopper), 87 Jetson AGX Orin, 86 RTX 30xx / A10 / A40,
#                         89 RTX 40xx / L4 / L40, 80 A100. candle embeds PTX as well, so a newer
#                         GPU JIT-compiles it at start-up; our own kernels (kernels/*.cu) are NVRTC-
#                         compiled at run time for whatever GPU is present.
#   CUDA_TOOLCHAIN_PREFIX where tools/cuda-toolchain.sh installs the PyPI CUDA 13.0 wheels
#                         (default ~/.cache/yolact-cuda13; ~1.2 GB, idempotent)
#   CARGO_TARGET_DIR      default target/cuda, so the CPU build in target/release is left alone
#
# Output: target/cuda/cuda-dist/{yolact,cuda_gpu,cuda_kernels} (stripped) and yolact-cuda.tar.xz (all
# three, compressed: the device tool carries at most 64 MiB). On the GPU machine:
#   tar -xJf target/cuda/cuda-dist/yolact-cuda.tar.xz -C target/cuda/cuda-dist
#   tools/run-on-gpu.sh target/cuda/cuda-dist/yolact bench --device cuda ...
set -euo pipefail
cd "$(dirname "$0")/.."
TESTS=1
for a in "$@"; do
  case "$a" in
    --no-tests) TESTS=0 ;;
    -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
    *) echo "unknown argument $a" >&2; exit 2 ;;
  esac
done
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
PREFIX=${CUDA_TOOLCHAIN_PREFIX:-$HOME/.cache/yolact-cuda13}
T0=$(date +%s)
eval "$(tools/cuda-toolchain.sh "$PREFIX")"
echo "[build_cuda] toolchain ready in $(( $(date +%s) - T0 )) s; CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP" >&2

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target/cuda}
TARGET=$CARGO_TARGET_DIR
DIST=$TARGET/cuda-dist
mkdir -p "$DIST"
T1=$(date +%s)
cargo build --release --locked --features cuda --bin yolact
cp "$TARGET/release/yolact" "$DIST/yolact"
files=(yolact)
if [ "$TESTS" = 1 ]; then
  # Test binaries: cargo prints their paths as JSON; pick the two GPU-side ones.
  cargo test --release --locked --features cuda --test cuda_gpu --test cuda_kernels \
    --no-run --message-format=json > "$DIST/.test-artifacts.json"
  while IFS=' ' read -r name exe; do
    cp "$exe" "$DIST/$name"
    files+=("$name")
  done < <(python3 -c '
import json, sys
for line in open(sys.argv[1]):
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and "test" in m["target"]["kind"]:
        print(m["target"]["name"], m["executable"])
' "$DIST/.test-artifacts.json")
fi
echo "[build_cuda] cargo build in $(( $(date +%s) - T1 )) s" >&2
for f in "${files[@]}"; do strip "$DIST/$f"; done
tar -C "$DIST" -cJf "$DIST/yolact-cuda.tar.xz" "${files[@]}"
echo "[build_cuda] stripped sizes:" >&2
( cd "$DIST" && ls -l "${files[@]}" yolact-cuda.tar.xz | awk '{printf "  %-22s %6.1f MiB\n", $NF, $5/1048576}' ) >&2
size=$(stat -c %s "$DIST/yolact-cuda.tar.xz")
if [ "$size" -gt $((64 * 1024 * 1024)) ]; then
  echo "[build_cuda] WARNING: the archive is over the 64 MiB carry limit; build with --no-tests" >&2
fi
echo "[build_cuda] dynamic CUDA libraries needed at run time:" >&2
readelf -d "$DIST/yolact" | awk '/NEEDED/ {print "  " $NF}' | tr -d '[]' >&2
echo "$DIST/yolact-cuda.tar.xz"
