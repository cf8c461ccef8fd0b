#!/usr/bin/env bash
# Retrains the shipped model exactly as it was trained: generates the training and validation sets
# from their seeds, trains yolact_plus_mini from scratch with its built-in schedule (src/config.rs,
# Solver::mini), then revives the mask-IoU output of class 3 (donut), dead from the first iteration
# of this run, from class 0 (sports ball) (README.md here says why). The result is
# WORK_DIR/yolact_plus_mini.safetensors, the file committed here.
# Usage: models/yolact_plus_mini/train.sh [WORK_DIR] [extra train args]
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
python3 models/yolact_plus_mini/revive_maskiou.py "$work/run/final.safetensors" \
  "$work/yolact_plus_mini.safetensors" --from 0 --to 3
