#!/usr/bin/env bash
# gpu_run.sh — everything issue 3 needs from the GPU machine, in one command, from the repository root:
# kernel and network parity tests (and the timing, memory and CUDA-graph tests), `yolact bench` f32/f16
# for ++R50 and ++R101 (CUDA-event stage times, peak GPU memory; eager and `--cuda-graph`), the DCN vs
# conv microbenchmark (`yolact bench-ops` and `bench_reference.py --ops`, f32/f16), the PyTorch
# reference.
#
#   tools/gpu_run.sh [OUT_DIR]        (default: $OUT when set, else target/gpu-run)
#
# ONLY (env, comma-separated, default all) picks what runs, so the work fits the device tool's
# 10-minute limit per call: tests (cuda_kernels, cuda_gpu), bench (yolact bench eager/graph/wall
# clock), ops (bench-ops and its PyTorch counterpart), reference (dbolya/yolact frame timing).
# CONFIGS (env, default "yolact_plus_resnet50 yolact_plus_base") picks the configs. Each step prints
# its wall time.
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
ITERS=${ITERS:-100}    # BENCHMARKS.md: medians of >= 100 frames after 10 warm-up frames
WARMUP=${WARMUP:-10}
IMG=tests/fixtures/parity/test_image.png
ONLY=${ONLY:-tests,bench,ops,reference}
CONFIGS=${CONFIGS:-yolact_plus_resnet50 yolact_plus_base}
want() { [[ ",$ONLY," == *",$1,"* ]]; }
rc=0
step() {  # step NAME CMD...
  local name=$1; shift
  echo "== $name" >&2
  local t0=$SECONDS
  if "$@" > "$OUT_DIR/$name.out" 2> "$OUT_DIR/$name.err"; then
    echo "   ok ($(( SECONDS - t0 )) s)" >&2
  else
    local r=$?
    echo "   FAILED ($r), see $OUT_DIR/$name.err" >&2
    tail -5 "$OUT_DIR/$name.err" >&2
    [ "$rc" = 0 ] && rc=$r
  fi
}
nvidia-smi > "$OUT_DIR/nvidia-smi.txt" 2>&1
if want tests; then
  step cuda_kernels env YOLACT_REQUIRE_NVRTC=1 tools/run-on-gpu.sh "$BIN/cuda_kernels" --nocapture
  step cuda_gpu env YOLACT_REQUIRE_GPU=1 tools/run-on-gpu.sh "$BIN/cuda_gpu" --nocapture --test-threads 1
fi
for cfg in $CONFIGS; do
  if want bench; then
    # JSON: "clock": "cuda_events", "peak_gpu_mem_mib" and "gpu_mem_source"; with --cuda-graph,
    # "cuda_graph": true, or false and "cuda_graph_error" when the capture fell back to eager.
    for half in "" --half; do
      prec=f32; [ -n "$half" ] && prec=f16
      step "bench_${cfg}_${prec}" tools/run-on-gpu.sh "$BIN/yolact" bench --weights synthetic \
        --config "$cfg" --device cuda ${half:+"$half"} --iters "$ITERS" --warmup "$WARMUP" --json "$IMG"
      step "bench_${cfg}_${prec}_graph" tools/run-on-gpu.sh "$BIN/yolact" bench --weights synthetic \
        --config "$cfg" --device cuda ${half:+"$half"} --cuda-graph --iters "$ITERS" --warmup "$WARMUP" --json "$IMG"
      # bench exits 0 when the capture fails (it falls back to eager): say so here.
      grep -q '"cuda_graph":true' "$OUT_DIR/bench_${cfg}_${prec}_graph.out" 2>/dev/null ||
        echo "   NOTE: no CUDA graph in bench_${cfg}_${prec}_graph (see its .err / \"cuda_graph_error\")" >&2
    done
    # The same frames with a synchronize per stage (the wall clock), to see what the syncs cost.
    step "bench_${cfg}_f32_wallclock" tools/run-on-gpu.sh "$BIN/yolact" bench --weights synthetic \
      --config "$cfg" --device cuda --wall-clock --iters "$ITERS" --warmup "$WARMUP" --json "$IMG"
  fi
  if want ops; then
    # DCN vs a plain 3x3 conv of the same shape, per backbone DCN shape (issue 3: DCN within 1.5x of a
    # cuDNN conv). The PyTorch side reads its shapes from our JSON, so both time the same list.
    for half in "" --half; do
      prec=f32; [ -n "$half" ] && prec=f16
      step "bench_ops_${cfg}_${prec}" tools/run-on-gpu.sh "$BIN/yolact" bench-ops --config "$cfg" \
        --device cuda ${half:+"$half"} --iters "$ITERS" --warmup "$WARMUP" --json
      if [ -s "$OUT_DIR/bench_ops_${cfg}_${prec}.out" ]; then
        step "reference_ops_${cfg}_${prec}" python3 tools/bench_reference.py --ops \
          --shapes "$OUT_DIR/bench_ops_${cfg}_${prec}.out" --device cuda ${half:+"$half"} \
          --iters "$ITERS" --warmup "$WARMUP" --json
        # BENCHMARKS.md's "DCN vs conv" rows from the two reports.
        [ -s "$OUT_DIR/reference_ops_${cfg}_${prec}.out" ] && step "ops_table_${cfg}_${prec}" \
          python3 tools/bench_reference.py --ops-table "$OUT_DIR/bench_ops_${cfg}_${prec}.out" \
          "$OUT_DIR/reference_ops_${cfg}_${prec}.out"
      fi
    done
  fi
  if want reference && [ -d target/yolact-src ]; then
    step "reference_${cfg}" python3 tools/bench_reference.py --yolact-src target/yolact-src \
      --config "$cfg" --device cuda --iters "$ITERS" --json --image "$IMG"
  fi
done
echo "results in $OUT_DIR" >&2
exit $rc
