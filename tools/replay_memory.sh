#!/usr/bin/env bash
# Replay memory over a long bag (issues 15 and 13): replays an N-frame bag on the CPU while
# sampling the process's resident set size (VmRSS, every second), and prints the RSS after warm-up
# (the first 10% of the run), the peak after warm-up, and their ratio; then the same peak over
# the peak during warm-up, and the peak and median RSS by tenth of the run. Flat memory = the
# peak after warm-up stays within a few percent.
#
#   tools/replay_memory.sh [FRAMES] [WIDTH] [HEIGHT] [CONFIG]
#
# CONFIG a model config: a WxH rgb8 MCAP bag of shifted noise written with rosbags, replayed with
# synthetic weights. CONFIG `shipped`: a generated moving sequence (`yolact synth-scenes
# --sequence FRAMES --seed 5`, colour, depth and camera info) replayed with the shipped model, depth
# and 3D outputs included.
#
# Needs python3 with rosbags and numpy, and a release build (`cargo build --release`).
set -euo pipefail

FRAMES=${1:-300}
W=${2:-320}
H=${3:-240}
CFG=${4:-yolact_resnet50}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${YOLACT_BIN:-$ROOT/target/release/yolact}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/replay_memory.XXXXXX")
# RSS_LOG=FILE keeps the samples ("seconds kB" per line).
trap '[ -n "${RSS_LOG:-}" ] && cp "$WORK/rss" "$RSS_LOG"; rm -rf "$WORK"' EXIT
[ -x "$BIN" ] || { echo "build first: cargo build --release" >&2; exit 2; }

if [ "$CFG" = shipped ]; then
  "$BIN" synth-scenes --out "$WORK/seq" --sequence "$FRAMES" --seed 5 --size "${W}x${H}" >/dev/null
  BAG=$WORK/seq/sequence.mcap
  MODEL=()
  WHAT="a generated ${W}x${H} sequence (colour, depth, camera info), the shipped model"
else
  BAG=$WORK/bag
  MODEL=(--weights synthetic --config "$CFG")
  WHAT="${W}x${H} rgb8 noise, config $CFG, synthetic weights"
python3 - "$WORK/bag" "$FRAMES" "$W" "$H" <<'PY'
import sys
import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

out, n, W, H = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
ts = get_typestore(Stores.ROS2_HUMBLE)
Image = ts.types['sensor_msgs/msg/Image']
Header = ts.types['std_msgs/msg/Header']
Time = ts.types['builtin_interfaces/msg/Time']
base = np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)
with Writer(out, version=8, storage_plugin=StoragePlugin.MCAP) as w:
    c = w.add_connection('/camera/image_raw', 'sensor_msgs/msg/Image', typestore=ts)
    for i in range(n):
        t = 1_700_000_000_000_000_000 + i * 33_333_333
        px = np.roll(base, 4 * i, axis=1)
        msg = Image(header=Header(stamp=Time(sec=t // 10**9, nanosec=t % 10**9), frame_id='cam'),
                    height=H, width=W, encoding='rgb8', is_bigendian=0, step=W * 3,
                    data=px.reshape(-1))
        w.write(c, t, ts.serialize_cdr(msg, 'sensor_msgs/msg/Image'))
PY
fi

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "bag: $FRAMES frames, MCAP; $WHAT; CPU"
"$BIN" replay "$BAG" "${MODEL[@]}" --device cpu \
  --out "$WORK/out.mcap" --report "$WORK/report" >/dev/null 2>"$WORK/err.log" &
pid=$!
: >"$WORK/rss"
start=$(date +%s)
while kill -0 "$pid" 2>/dev/null; do
  kb=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
  [ -n "$kb" ] && echo "$(( $(date +%s) - start )) $kb" >>"$WORK/rss"
  sleep 1
done
set +e
wait "$pid"
rc=$?
set -e
[ "$rc" -le 1 ] || [ "$rc" -eq 3 ] || { cat "$WORK/err.log" >&2; exit 1; }
python3 - "$WORK/rss" <<'PY'
import sys
rows = [tuple(map(int, l.split())) for l in open(sys.argv[1]) if l.strip()]
if len(rows) < 20:
    sys.exit(f"only {len(rows)} RSS samples: use a longer bag")
cut = max(1, len(rows) // 10)
warm = rows[cut][1]
late = max(kb for _, kb in rows[cut:])
print(f"samples {len(rows)} over {rows[-1][0]} s; RSS after warm-up ({rows[cut][0]} s) {warm / 1024:.1f} MB, "
      f"peak after warm-up {late / 1024:.1f} MB, ratio {late / warm:.3f}; "
      f"RSS at the end {rows[-1][1] / 1024:.1f} MB")
# One sample at 10% lands anywhere in a frame's working set (a few MB up or down); the peak of
# the warm-up is the working set itself, so this ratio is growth beyond what warm-up needed.
warm_peak = max(kb for _, kb in rows[:cut + 1])
print(f"peak during warm-up {warm_peak / 1024:.1f} MB; peak after warm-up / peak during warm-up "
      f"{late / warm_peak:.3f}")
# The trend: growth that keeps on (a leak) or that levels off (allocator, caches).
deciles = [rows[min(len(rows) - 1, len(rows) * k // 10)] for k in range(1, 11)]
print("RSS by tenth of the run, MB: " + ", ".join(f"{kb / 1024:.1f}" for _, kb in deciles))
tenths = [[kb for _, kb in rows[len(rows) * k // 10:len(rows) * (k + 1) // 10]] for k in range(10)]
print("peak by tenth, MB: " + ", ".join(f"{max(t) / 1024:.1f}" for t in tenths if t))
print("median by tenth, MB: "
      + ", ".join(f"{sorted(t)[len(t) // 2] / 1024:.1f}" for t in tenths if t))
PY
