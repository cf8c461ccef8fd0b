#!/usr/bin/env bash
# Retrains the shipped model exactly as it was trained: generates the training and validation sets
# from their seeds, then trains yolact_plus_mini from scratch with its built-in schedule
# (src/config.rs, Solver::mini). Usage: models/yolact_plus_mini/train.sh [WORK_DIR] [extra train args]
# With --resume as an extra argument it continues WORK_DIR/run from its latest.safetensors.
set -euo pipefail
cd "$(dirname "$0")/../.."
work=${1:-target/shipped}
shift || true
cargo build --release --locked
yolact=target/release/yolact
if [ ! -f "$work/train/annotations.json" ]; then
  "$yolact" synth-scenes --out "$work/train" --images 4000 --seed 1 --size 320x240 --min-area 100
fi
if [ ! -f "$work/val/annotations.json" ]; then
  "$yolact" synth-scenes --out "$work/val" --images 200 --seed 2 --size 320x240 --min-area 100
fi
init=(--init scratch)
for a in "$@"; do [ "$a" = --resume ] && init=(); done
"$yolact" train --config yolact_plus_mini \
  --train "$work/train/annotations.json:$work/train/images" \
  --val "$work/val/annotations.json:$work/val/images" --val-every 500 --val-images 100 \
  "${init[@]}" --out "$work/run" --batch 8 --seed 0 --workers 2 --save-every 250 --log-every 10 \
  --device cpu "$@"
