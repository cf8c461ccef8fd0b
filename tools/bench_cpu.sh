#!/usr/bin/env bash
# CPU benchmark of `yolact bench` next to the PyTorch reference (tools/bench_reference.py), in one run,
# on the same image and synthetic weights. Prints one JSON line per (implementation, config).
#
#   tools/bench_cpu.sh YOLACT_SRC [ITERS] [IMAGE]
#
# YOLACT_SRC: an extracted dbolya/yolact checkout (not part of this repository). Needs torch and
# torchvision in python3. Build first: cargo build --release.
set -euo pipefail
src=${1:?usage: tools/bench_cpu.sh YOLACT_SRC [ITERS] [IMAGE]}
iters=${2:-10}
image=${3:-}
here=$(cd "$(dirname "$0")/.." && pwd)
bin=$here/target/release/yolact
[ -x "$bin" ] || { echo "build first: cargo build --release" >&2; exit 1; }
if [ -z "$image" ]; then
  image=$(mktemp --suffix=.png)
  python3 - "$image" <<'PY'
import sys
from PIL import Image, ImageDraw
im = Image.new("RGB", (640, 480))
d = ImageDraw.Draw(im)
for y in range(480):
    for x in range(0, 640, 4):
        d.rectangle([x, y, x + 3, y], fill=(x * 255 // 640, y * 255 // 480, 128))
d.ellipse([100, 150, 300, 350], fill=(220, 40, 40))
d.rectangle([350, 100, 550, 330], fill=(40, 60, 200))
im.save(sys.argv[1])
PY
fi
for cfg in yolact_resnet50 yolact_plus_resnet50; do
  echo "{\"impl\": \"yolact_ros2\", \"result\": $("$bin" bench --weights synthetic --config "$cfg" --device cpu \
    --iters "$iters" --warmup 2 --score-threshold 0.05 --json "$image" 2>/dev/null)}"
  echo "{\"impl\": \"pytorch-reference\", \"result\": $(python3 "$here/tools/bench_reference.py" --yolact-src "$src" \
    --config "$cfg" --iters "$iters" --threads 2 --json --image "$image" --score-threshold 0.05 2>/dev/null | tr -d '\n')}"
done
