#!/usr/bin/env bash
# Replay throughput on the CPU: a 100-frame 640x480 rgb8 bag (written with rosbags), replayed by
# `yolact replay` with synthetic weights for YOLACT R50 and YOLACT++ R50; prints frames/s and the
# per-stage p50 (and p90) from report.json. Synthetic weights cost the same FLOPs as the
# released ones; only the number of detections (and so the mask stage) differs. The config
# `shipped` replays a generated 320x240 sequence (`yolact synth-scenes --sequence FRAMES --seed 5`:
# colour, depth, camera info) with the shipped model, depth and 3D outputs included.
#
#   tools/bench_replay.sh [FRAMES] [CONFIGS...]
#
# Needs python3 with rosbags and numpy, and a release build (`cargo build --release`).
set -euo pipefail

FRAMES=${1:-100}
shift || true
CONFIGS=("$@")
[ ${#CONFIGS[@]} -eq 0 ] && CONFIGS=(yolact_resnet50 yolact_plus_resnet50)
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${YOLACT_BIN:-$ROOT/target/release/yolact}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/bench_replay.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

[ -x "$BIN" ] || { echo "build first: cargo build --release" >&2; exit 2; }

python3 - "$WORK/bag" "$FRAMES" <<'PY'
import sys
import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

out, n = sys.argv[1], int(sys.argv[2])
W, H = 640, 480
ts = get_typestore(Stores.ROS2_HUMBLE)
Image = ts.types['sensor_msgs/msg/Image']
Header = ts.types['std_msgs/msg/Header']
Time = ts.types['builtin_interfaces/msg/Time']
rng = np.random.default_rng(0)
base = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
with Writer(out, version=8, storage_plugin=StoragePlugin.MCAP) as w:
    c = w.add_connection('/camera/image_raw', 'sensor_msgs/msg/Image', typestore=ts)
    for i in range(n):
        t = 1_700_000_000_000_000_000 + i * 33_333_333
        # A moving frame so that consecutive frames differ, as a camera's do.
        px = np.roll(base, 4 * i, axis=1)
        msg = Image(header=Header(stamp=Time(sec=t // 10**9, nanosec=t % 10**9), frame_id='cam'),
                    height=H, width=W, encoding='rgb8', is_bigendian=0, step=W * 3,
                    data=px.reshape(-1))
        w.write(c, t, ts.serialize_cdr(msg, 'sensor_msgs/msg/Image'))
PY

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "bag: $FRAMES frames, 640x480 rgb8, MCAP (shipped: the generated 320x240 sequence)"
echo "load before: $(uptime | sed 's/.*load average/load average/')"
for cfg in "${CONFIGS[@]}"; do
  rep="$WORK/report_$cfg"
  start=$(date +%s.%N)
  if [ "$cfg" = shipped ]; then
    [ -f "$WORK/seq/sequence.mcap" ] ||
      "$BIN" synth-scenes --out "$WORK/seq" --sequence "$FRAMES" --seed 5 --size 320x240 >/dev/null
    input=("$WORK/seq/sequence.mcap")
  else
    input=("$WORK/bag" --weights synthetic --config "$cfg")
  fi
  "$BIN" replay "${input[@]}" --device cpu \
    --out "$WORK/out_$cfg.mcap" --report "$rep" >/dev/null 2>"$WORK/err_$cfg.log" \
    || { cat "$WORK/err_$cfg.log" >&2; exit 1; }
  end=$(date +%s.%N)
  python3 - "$rep/report.json" "$cfg" "$start" "$end" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
cfg, wall = sys.argv[2], float(sys.argv[4]) - float(sys.argv[3])
lat = r['latency_ms']
print(f"{cfg}: {r['frames']} frames in {r['wall_s']:.1f} s (process {wall:.1f} s incl. model build): "
      f"{r['fps']:.3f} frames/s; total per frame p50 {lat['total']['p50']:.0f} ms, "
      f"p90 {lat['total']['p90']:.0f} ms, max {lat['total']['max']:.0f} ms")
order = ['decode', 'preprocess', 'backbone', 'fpn', 'protonet', 'heads', 'nms', 'masks', 'total']
print('  stage p50 / p90 ms: ' + ', '.join(
    f"{k} {lat[k]['p50']:.1f}/{lat[k]['p90']:.1f}" for k in order if k in lat))
PY
done
echo "load after: $(uptime | sed 's/.*load average/load average/')"
