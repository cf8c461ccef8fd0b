#!/usr/bin/env python3
"""Times the reference YOLACT on CPU or CUDA for one frame of the parity test image.

    bench_reference.py --yolact-src DIR --config NAME --iters N [--threads 2] [--json]
                       [--image PATH] [--score-threshold T] [--device cpu|cuda]

With --device cuda the reference runs as eval.py runs it on a GPU (net.cuda(), CUDA default
tensors), its DCNv2 replaced by torchvision.ops.deform_conv2d; stage times come from CUDA events
around each stage (after a synchronize), the frame is uploaded as uint8 like eval.py does, and
`frame_ms` is wall time with the final synchronize. Use --iters >= 100 (BENCHMARKS.md: median).

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
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    args = ap.parse_args()
    if args.iters < 1:
        ap.error("--iters must be >= 1")
    if args.device == "cuda":
        return main_cuda(args)
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


def import_reference_cuda(src):
    """The reference as eval.py imports it on a GPU: no CPU shims, only the DCNv2 extension
    replaced (same torchvision-backed module as the CPU driver)."""
    import types

    if not torch.cuda.is_available():
        sys.exit("bench_reference.py --device cuda: torch sees no CUDA device")
    dcn_mod = types.ModuleType("dcn_v2")
    dcn_mod.DCN = R.TorchvisionDCN
    sys.modules["dcn_v2"] = dcn_mod
    sys.path.insert(0, os.path.abspath(src))
    import data  # noqa: F401
    import yolact
    from data import config as data_config
    from layers import output_utils
    from utils import augmentations

    return types.SimpleNamespace(yolact=yolact, config=data_config, output_utils=output_utils,
                                 augmentations=augmentations)


def main_cuda(args):
    import time

    ns = import_reference_cuda(args.yolact_src)
    net, _ = R.build(ns, args.config, args.seed)
    net = net.cuda()
    # eval.py's way (torch.Tensor(data, device=...) in make_priors needs the legacy default type).
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if hasattr(torch, "set_default_tensor_type"):
            torch.set_default_tensor_type("torch.cuda.FloatTensor")
        else:
            torch.set_default_device("cuda")
    torch.backends.cudnn.benchmark = True
    bgr = R.load_bgr(args.image)
    h, w = bgr.shape[:2]
    inner = net.detect
    ev = {}

    class TimedDetect:
        def __call__(self, preds, n):
            ev["d0"].record()
            r = inner(preds, n)
            ev["d1"].record()
            return r

    net.detect = TimedDetect()
    timings = {}
    for i in range(WARMUP + args.iters):
        for k in ("t0", "t1", "d0", "d1", "t3"):
            ev[k] = torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        wall0 = time.perf_counter()
        with torch.no_grad():
            ev["t0"].record()
            frame = torch.from_numpy(bgr).cuda().float()
            batch = ns.augmentations.FastBaseTransform()(frame.unsqueeze(0))
            ev["t1"].record()
            preds = net(batch)
            ns.output_utils.postprocess(preds, w, h, score_threshold=args.score_threshold)
            ev["t3"].record()
        torch.cuda.synchronize()
        wall = (time.perf_counter() - wall0) * 1e3
        if i < WARMUP:
            continue
        timings.setdefault("pre_ms", []).append(ev["t0"].elapsed_time(ev["t1"]))
        timings.setdefault("net_ms", []).append(ev["t1"].elapsed_time(ev["d0"]))
        timings.setdefault("detect_ms", []).append(ev["d0"].elapsed_time(ev["d1"]))
        timings.setdefault("post_ms", []).append(ev["d1"].elapsed_time(ev["t3"]))
        timings.setdefault("frame_ms", []).append(wall)
    result = {
        "config": args.config,
        "device": torch.cuda.get_device_name(0),
        "iters": args.iters,
        "image": [int(w), int(h)],
        "torch": torch.__version__,
        "peak_mem_mib": torch.cuda.max_memory_allocated() / 2**20,
        "stages": {k: {"median": statistics.median(v), "min": min(v), "max": max(v)}
                   for k, v in timings.items()},
    }
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(f"{args.config}: {args.iters} frames of {w}x{h} on {result['device']}, "
              f"torch {torch.__version__}, peak {result['peak_mem_mib']:.0f} MiB")
        for k in ["pre_ms", "net_ms", "detect_ms", "post_ms", "frame_ms"]:
            s = result["stages"][k]
            print(f"  {k:10s} median {s['median']:9.3f}  min {s['min']:9.3f}  max {s['max']:9.3f}")


if __name__ == "__main__":
    main()
