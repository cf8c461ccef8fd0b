#!/usr/bin/env bash
# gpu_run.sh — everything issue 3 needs from the GPU machine, in one command, from the repository root:
# kernel and network parity tests, `yolact bench` f32/f16 for ++R50 and ++R101, the PyTorch reference.
#
#   tools/gpu_run.sh [OUT_DIR]        (default: $OUT when set, else target/gpu-run)
#
# Needs (carried from the build machine): target/cuda/cuda-dist/yolact-cuda.tar.xz (tools/build_cuda.sh)
# and, for the reference, a dbolya/yolact checkout in target/yolact-src. Every step's output is kept in
# OUT_DIR; a failing step is reported and the others still run; the exit status is the first failure.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${1:-${OUT:-target/gpu-run}}
mkdir -p "$OUT_DIR"
BIN=$(mktemp -d)
tar -xJf target/cuda/cuda-dist/yolact-cuda.tar.xz -C "$BIN" || { echo "no target/cuda/cuda-dist/yolact-cuda.tar.xz: run tools/build_cuda.sh and carry it" >&2; exit 1; }
ITERS=${ITERS:-200}
IMG=tests/fixtures/parity/test_image.png
rc=0
step() {  # step NAME CMD...
  local name=$1; shift
  echo "== $name" >&2
  if "$@" > "$OUT_DIR/$name.out" 2> "$OUT_DIR/$name.err"; then
    echo "   ok" >&2
  else
    local r=$?
    echo "   FAILED ($r), see $OUT_DIR/$name.err" >&2
    tail -5 "$OUT_DIR/$name.err" >&2
    [ "$rc" = 0 ] && rc=$r
  fi
}
nvidia-smi > "$OUT_DIR/nvidia-smi.txt" 2>&1
step cuda_kernels env YOLACT_REQUIRE_NVRTC=1 tools/run-on-gpu.sh "$BIN/cuda_kernels" --nocapture
step cuda_gpu env YOLACT_REQUIRE_GPU=1 tools/run-on-gpu.sh "$BIN/cuda_gpu" --nocapture --test-threads 1
for cfg in yolact_plus_resnet50 yolact_plus_base; do
  step "bench_${cfg}_f32" tools/run-on-gpu.sh "$BIN/yolact" bench --weights synthetic --config "$cfg" \
    --device cuda --iters "$ITERS" --warmup 20 --json "$IMG"
  step "bench_${cfg}_f16" tools/run-on-gpu.sh "$BIN/yolact" bench --weights synthetic --config "$cfg" \
    --device cuda --half --iters "$ITERS" --warmup 20 --json "$IMG"
  if [ -d target/yolact-src ]; then
    step "reference_${cfg}" python3 tools/bench_reference.py --yolact-src target/yolact-src \
      --config "$cfg" --device cuda --iters "$ITERS" --json --image "$IMG"
  fi
done
echo "results in $OUT_DIR" >&2
exit $rc
