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
# Besides the RSS each second, the script resets the kernel's peak-RSS mark every second
# (/proc/PID/clear_refs, 5) and reads it back (VmHWM) a second later: the true peak of each
# second, which a snapshot misses when a frame's working set comes and goes between two samples.
#
# RSS_LOG=FILE keeps the samples ("seconds rss_kB peak_kB" per line) and FILE.log the replay's
# log, with the output writer's "flushed, N frames" each second (which frame ran when).
# SEQ_DIR=DIR keeps the generated sequence in DIR and reuses it when it is already there.
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
trap '[ -n "${RSS_LOG:-}" ] && cp "$WORK/rss" "$RSS_LOG" && cp "$WORK/err.log" "$RSS_LOG.log"; rm -rf "$WORK"' EXIT
[ -x "$BIN" ] || { echo "build first: cargo build --release" >&2; exit 2; }

if [ "$CFG" = shipped ]; then
  SEQ=${SEQ_DIR:-$WORK/seq}
  [ -e "$SEQ/sequence.mcap" ] ||
    "$BIN" synth-scenes --out "$SEQ" --sequence "$FRAMES" --seed 5 --size "${W}x${H}" >/dev/null
  BAG=$SEQ/sequence.mcap
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
RUST_LOG=${RUST_LOG:-info,yolact_ros2::replay::writer=debug} "$BIN" replay "$BAG" "${MODEL[@]}" --device cpu \
  --out "$WORK/out.mcap" --report "$WORK/report" >/dev/null 2>"$WORK/err.log" &
pid=$!
: >"$WORK/rss"
start=$(date +%s)
while kill -0 "$pid" 2>/dev/null; do
  kb=$(awk '/^VmRSS/ {r = $2} /^VmHWM/ {h = $2} END {if (r) print r, h}' \
    "/proc/$pid/status" 2>/dev/null || true)
  echo 5 >"/proc/$pid/clear_refs" 2>/dev/null || true
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


def report(what, col):
    kb = [r[col] for r in rows]
    warm, late = kb[cut], max(kb[cut:])
    print(f"{what}: after warm-up ({rows[cut][0]} s) {warm / 1024:.1f} MB, peak after warm-up "
          f"{late / 1024:.1f} MB, ratio {late / warm:.3f}; at the end {kb[-1] / 1024:.1f} MB")
    # One sample at 10% lands anywhere in a frame's working set (a few MB up or down); the peak
    # of the warm-up is the working set itself, so this ratio is growth beyond what warm-up needed.
    warm_peak = max(kb[:cut + 1])
    print(f"  peak during warm-up {warm_peak / 1024:.1f} MB; peak after warm-up / peak during "
          f"warm-up {late / warm_peak:.3f}; 99th percentile after warm-up / warm-up peak "
          f"{sorted(kb[cut:])[int(0.99 * (len(kb) - cut))] / warm_peak:.3f}")
    tenths = [kb[len(kb) * k // 10:len(kb) * (k + 1) // 10] for k in range(10)]
    # The trend: growth that keeps on (a leak) or that levels off (allocator, caches).
    print("  peak by tenth, MB: " + ", ".join(f"{max(t) / 1024:.1f}" for t in tenths if t))
    print("  median by tenth, MB: "
          + ", ".join(f"{sorted(t)[len(t) // 2] / 1024:.1f}" for t in tenths if t))
    top = sorted(range(cut, len(kb)), key=lambda i: -kb[i])[:5]
    print("  highest after warm-up (s: MB): "
          + ", ".join(f"{rows[i][0]}: {kb[i] / 1024:.1f}" for i in sorted(top)))


print(f"samples {len(rows)} over {rows[-1][0]} s")
report("RSS each second", 1)
if all(len(r) > 2 for r in rows):
    report("peak within each second (VmHWM, reset each second)", 2)
PY
