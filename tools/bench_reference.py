#!/usr/bin/env python3
"""Times the reference YOLACT on CPU for one frame of the parity test image.

    bench_reference.py --yolact-src DIR --config NAME --iters N [--threads 2] [--json]
                       [--image PATH] [--score-threshold T]

Stages per frame: `pre_ms` (FastBaseTransform), `net_ms` (network without Detect), `detect_ms`
(decode + fast NMS), `post_ms` (postprocess: masks, crop, mask-IoU rescoring, upsampling),
`frame_ms` (all of it). Two warm-up frames are not counted. Weights are the synthetic ones
(the time does not depend on the values, except through the number of detections).
"""

import argparse
import json
import os
import statistics
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import reference_yolact as R  # noqa: E402
import synth_weights as S  # noqa: E402

WARMUP = 2


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--yolact-src", required=True)
    ap.add_argument("--config", required=True)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--image", default=os.path.join(HERE, "..", "tests", "fixtures", "parity",
                                                    "test_image.png"))
    ap.add_argument("--score-threshold", type=float, default=0.15)
    ap.add_argument("--seed", type=lambda s: int(s, 0), default=S.DEFAULT_SEED)
    args = ap.parse_args()
    if args.iters < 1:
        ap.error("--iters must be >= 1")
    torch.set_num_threads(args.threads)
    ns = R.import_reference(args.yolact_src)
    net, _ = R.build(ns, args.config, args.seed)
    bgr = R.load_bgr(args.image)
    for _ in range(WARMUP):
        R.run_frame(ns, net, bgr, score_threshold=args.score_threshold)
    timings = {}
    for _ in range(args.iters):
        R.run_frame(ns, net, bgr, score_threshold=args.score_threshold, timings=timings)
    result = {
        "config": args.config,
        "threads": args.threads,
        "iters": args.iters,
        "image": [int(bgr.shape[1]), int(bgr.shape[0])],
        "torch": torch.__version__,
        "stages": {k: {"median": statistics.median(v), "min": min(v), "max": max(v)}
                   for k, v in timings.items()},
    }
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(f"{args.config}: {args.iters} frames of {result['image'][0]}x{result['image'][1]}, "
              f"{args.threads} threads, torch {torch.__version__}")
        for k in ["pre_ms", "net_ms", "detect_ms", "post_ms", "frame_ms"]:
            s = result["stages"][k]
            print(f"  {k:10s} median {s['median']:9.2f}  min {s['min']:9.2f}  max {s['max']:9.2f}")


if __name__ == "__main__":
    main()
