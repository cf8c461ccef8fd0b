#!/usr/bin/env bash
# nvcc-lint.sh — the nvcc that .ci/run's `cargo clippy --features cuda` hands to candle-kernels' build
# script (through NVCC=). A lint build never links, so the one thing it does not need is
# candle-kernels' static `libmoe.a`: its quantized mixture-of-experts / GGUF kernels (16 heavy
# template files compiled to SASS, most of the ~8 minutes that build script takes on 2 cores), which
# YOLACT never calls. Their object files and archive are written empty; every other call (version
# queries, candle's regular kernels to PTX) goes to the real nvcc, $NVCC_REAL.
#
# Not for building binaries: tools/build_cuda.sh uses the real nvcc throughout (and links libmoe).
set -euo pipefail
real=${NVCC_REAL:?set NVCC_REAL to the real nvcc}
out=""
mode=real
prev=""
for a in "$@"; do
  case "$a" in
    -c) mode=object ;;
    --lib|-lib) mode=archive ;;
  esac
  [ "$prev" = "-o" ] && out=$a
  prev=$a
done
case "$mode" in
  object)
    [ -n "$out" ] || { echo "nvcc-lint: -c without -o" >&2; exit 2; }
    : > "$out"
    ;;
  archive)
    [ -n "$out" ] || { echo "nvcc-lint: --lib without -o" >&2; exit 2; }
    rm -f "$out"
    ar rcs "$out"
    ;;
  *) exec "$real" "$@" ;;
esac
