#!/usr/bin/env bash
# gpu_run.sh — the GPU machine's work (issues 3 and 16), from the repository root, ordered so that a
# plain first call does what matters most inside the device tool's 10-minute limit per command:
#
#   1. cuda_gpu: kernel and network parity GPU vs CPU, f16 accuracy, fused stages, empty frames,
#      timing, memory and CUDA-graph replay
#   2. `yolact bench --device cuda` for yolact_plus_resnet50: f32, f32 --cuda-graph, f16,
#      f16 --cuda-graph (CUDA-event stage times, peak GPU memory)
#   3. the PyTorch reference (dbolya/yolact) on the same GPU, same config and image
#
#   tools/gpu_run.sh [OUT_DIR]        (default: $OUT when set, else target/gpu-run)
#
# ONLY (env, comma-separated; default "tests,bench,reference") picks groups, in this order:
# tests (cuda_gpu), bench, reference, then the ones a later call can add: kernels (cuda_kernels:
# NVRTC/ptxas on the GPU host, also run in CI without a GPU), wallclock (bench with a synchronize per
# stage), ops (bench-ops DCN vs conv and its PyTorch counterpart).
# CONFIGS (env, default "yolact_plus_resnet50"; e.g. "yolact_plus_resnet50 yolact_plus_base").
# BUDGET (env, seconds, default 570): the whole run's limit. Each step also has its own limit
# (STEP_S, default 240 for cuda_gpu, 75 for a bench, 120 for the reference) and never runs past the
# budget: a step that hits its limit is reported as timed out (124) and the next one starts, so one
# hang cannot eat the call. Each step prints its wall time.
#
# Needs (carried from the build machine): target/cuda/cuda-dist/yolact-cuda.tar.xz (tools/build_cuda.sh;
# this script builds nothing) and, for the reference, a dbolya/yolact checkout in target/yolact-src.
# Every step's output is kept in OUT_DIR; a failing step is reported and the others still run; the
# exit status is the first failure.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${1:-${OUT:-target/gpu-run}}
mkdir -p "$OUT_DIR"
BIN=$(mktemp -d)
tar -xJf target/cuda/cuda-dist/yolact-cuda.tar.xz -C "$BIN" || { echo "no target/cuda/cuda-dist/yolact-cuda.tar.xz: run tools/build_cuda.sh and carry it" >&2; exit 1; }
ITERS=${ITERS:-100}    # BENCHMARKS.md: medians of >= 100 frames after 10 warm-up frames
WARMUP=${WARMUP:-10}
IMG=tests/fixtures/parity/test_image.png
ONLY=${ONLY:-tests,bench,reference}
CONFIGS=${CONFIGS:-yolact_plus_resnet50}
BUDGET=${BUDGET:-570}
want() { [[ ",$ONLY," == *",$1,"* ]]; }
rc=0
step() {  # step NAME LIMIT_S CMD...
  local name=$1 limit=$2; shift 2
  local left=$(( BUDGET - SECONDS ))
  if [ "$left" -lt 10 ]; then
    echo "== $name: SKIPPED, the ${BUDGET} s budget is spent" >&2
    [ "$rc" = 0 ] && rc=124
    return
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "== $name (limit ${limit} s)" >&2
  local t0=$SECONDS
  if timeout --kill-after=5 "$limit" "$@" > "$OUT_DIR/$name.out" 2> "$OUT_DIR/$name.err"; then
    echo "   ok ($(( SECONDS - t0 )) s)" >&2
  else
    local r=$?
    if [ "$r" = 124 ] || [ "$r" = 137 ]; then
      echo "   TIMED OUT after $(( SECONDS - t0 )) s, see $OUT_DIR/$name.err" >&2
    else
      echo "   FAILED ($r) after $(( SECONDS - t0 )) s, see $OUT_DIR/$name.err" >&2
    fi
    tail -5 "$OUT_DIR/$name.err" >&2
    [ "$rc" = 0 ] && rc=$r
  fi
}
nvidia-smi > "$OUT_DIR/nvidia-smi.txt" 2>&1
if want tests; then
  step cuda_gpu "${STEP_S:-240}" env YOLACT_REQUIRE_GPU=1 tools/run-on-gpu.sh "$BIN/cuda_gpu" --nocapture --test-threads 1
fi
for cfg in $CONFIGS; do
  if want bench; then
    # JSON: "clock": "cuda_events", "peak_gpu_mem_mib" and "gpu_mem_source"; with --cuda-graph,
    # "cuda_graph": true, or false and "cuda_graph_error" when the capture fell back to eager.
    for half in "" --half; do
      prec=f32; [ -n "$half" ] && prec=f16
      step "bench_${cfg}_${prec}" "${STEP_S:-75}" tools/run-on-gpu.sh "$BIN/yolact" bench --weights synthetic \
        --config "$cfg" --device cuda ${half:+"$half"} --iters "$ITERS" --warmup "$WARMUP" --json "$IMG"
      step "bench_${cfg}_${prec}_graph" "${STEP_S:-75}" tools/run-on-gpu.sh "$BIN/yolact" bench --weights synthetic \
        --config "$cfg" --device cuda ${half:+"$half"} --cuda-graph --iters "$ITERS" --warmup "$WARMUP" --json "$IMG"
      # bench exits 0 when the capture fails (it falls back to eager): say so here.
      grep -q '"cuda_graph":true' "$OUT_DIR/bench_${cfg}_${prec}_graph.out" 2>/dev/null ||
        echo "   NOTE: no CUDA graph in bench_${cfg}_${prec}_graph (see its .err / \"cuda_graph_error\")" >&2
    done
  fi
  if want reference && [ -d target/yolact-src ]; then
    step "reference_${cfg}" "${STEP_S:-120}" python3 tools/bench_reference.py --yolact-src target/yolact-src \
      --config "$cfg" --device cuda --iters "$ITERS" --json --image "$IMG"
  elif want reference; then
    echo "== reference_${cfg}: SKIPPED, no dbolya/yolact checkout in target/yolact-src" >&2
  fi
done
# What a later call adds (ONLY=kernels,wallclock,ops).
if want kernels; then
  step cuda_kernels "${STEP_S:-120}" env YOLACT_REQUIRE_NVRTC=1 tools/run-on-gpu.sh "$BIN/cuda_kernels" --nocapture
fi
for cfg in $CONFIGS; do
  if want wallclock; then
    # The same frames with a synchronize per stage (the wall clock), to see what the syncs cost.
    step "bench_${cfg}_f32_wallclock" "${STEP_S:-75}" tools/run-on-gpu.sh "$BIN/yolact" bench --weights synthetic \
      --config "$cfg" --device cuda --wall-clock --iters "$ITERS" --warmup "$WARMUP" --json "$IMG"
  fi
  if want ops; then
    # DCN vs a plain 3x3 conv of the same shape, per backbone DCN shape (issue 3: DCN within 1.5x of a
    # cuDNN conv). The PyTorch side reads its shapes from our JSON, so both time the same list.
    for half in "" --half; do
      prec=f32; [ -n "$half" ] && prec=f16
      step "bench_ops_${cfg}_${prec}" "${STEP_S:-120}" tools/run-on-gpu.sh "$BIN/yolact" bench-ops --config "$cfg" \
        --device cuda ${half:+"$half"} --iters "$ITERS" --warmup "$WARMUP" --json
      if [ -s "$OUT_DIR/bench_ops_${cfg}_${prec}.out" ]; then
        step "reference_ops_${cfg}_${prec}" "${STEP_S:-120}" python3 tools/bench_reference.py --ops \
          --shapes "$OUT_DIR/bench_ops_${cfg}_${prec}.out" --device cuda ${half:+"$half"} \
          --iters "$ITERS" --warmup "$WARMUP" --json
        # BENCHMARKS.md's "DCN vs conv" rows from the two reports.
        [ -s "$OUT_DIR/reference_ops_${cfg}_${prec}.out" ] && step "ops_table_${cfg}_${prec}" 30 \
          python3 tools/bench_reference.py --ops-table "$OUT_DIR/bench_ops_${cfg}_${prec}.out" \
          "$OUT_DIR/reference_ops_${cfg}_${prec}.out"
      fi
    done
  fi
done
echo "results in $OUT_DIR ($SECONDS s)" >&2
exit $rc
