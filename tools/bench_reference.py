#!/usr/bin/env python3
"""Times the reference YOLACT on CPU or CUDA for one frame of the parity test image.

    bench_reference.py --yolact-src DIR --config NAME --iters N [--threads 2] [--json]
                       [--image PATH] [--score-threshold T] [--device cpu|cuda]
    bench_reference.py --ops --shapes OPS.json [--device cpu|cuda] [--half] [--iters 100]
                       [--warmup 10] [--threads 2] [--json]
    bench_reference.py --ops-table OURS.json REF.json

With --device cuda the reference runs as eval.py runs it on a GPU (net.cuda(), CUDA default
tensors), its DCNv2 replaced by torchvision.ops.deform_conv2d; stage times come from CUDA events
around each stage (after a synchronize), the frame is uploaded as uint8 like eval.py does, and
`frame_ms` is wall time with the final synchronize. Use --iters >= 100 (BENCHMARKS.md: median).

Stages per frame: `pre_ms` (FastBaseTransform), `net_ms` (network without Detect), `detect_ms`
(decode + fast NMS), `post_ms` (postprocess: masks, crop, mask-IoU rescoring, upsampling),
`frame_ms` (all of it). Two warm-up frames are not counted. Weights are the synthetic ones
(the time does not depend on the values, except through the number of detections).

--ops is the PyTorch side of `yolact bench-ops`: it reads the deformable conv shapes from that
command's --json output (so both sides time the same list) and times, per shape, a plain 3x3 conv
(torch.nn.functional.conv2d, pad 1, bias; cuDNN with cudnn.benchmark on CUDA), torchvision's
deform_conv2d with random offsets in [-2, 2] px and a sigmoid mask (`dcn`), and the whole layer
(27-channel offset/mask conv, sigmoid, deform_conv2d: `dcn_layer`). On CUDA one event is
recorded between consecutive iterations, queued back to back with one synchronize at the end
(as ours does); on the CPU each iteration is wall-clocked. The JSON has our field names.
--ops-table prints BENCHMARKS.md's "DCN vs conv" rows from the two JSON reports.
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
    ap.add_argument("--yolact-src")
    ap.add_argument("--config")
    ap.add_argument("--iters", type=int, default=None,
                    help="timed iterations (default 10 frames, or 100 per op with --ops)")
    ap.add_argument("--warmup", type=int, default=None,
                    help=f"untimed iterations (default {WARMUP} frames, or 10 per op with --ops)")
    ap.add_argument("--ops", action="store_true",
                    help="DCN vs conv microbenchmark on the shapes of --shapes")
    ap.add_argument("--shapes", help="`yolact bench-ops --json` output naming the shapes (--ops)")
    ap.add_argument("--half", action="store_true", help="f16 (--ops on CUDA only)")
    ap.add_argument("--ops-table", nargs=2, metavar=("OURS", "REF"),
                    help="markdown rows from `yolact bench-ops --json` and `--ops --json` output")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--image", default=os.path.join(HERE, "..", "tests", "fixtures", "parity",
                                                    "test_image.png"))
    ap.add_argument("--score-threshold", type=float, default=0.15)
    ap.add_argument("--seed", type=lambda s: int(s, 0), default=S.DEFAULT_SEED)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    args = ap.parse_args()
    if args.ops_table:
        return ops_table(*args.ops_table)
    if args.iters is None:
        args.iters = 100 if args.ops else 10
    if args.warmup is None:
        args.warmup = 10 if args.ops else WARMUP
    if args.iters < 1:
        ap.error("--iters must be >= 1")
    if args.warmup < 0:
        ap.error("--warmup must be >= 0")
    if args.ops:
        if not args.shapes:
            ap.error("--ops needs --shapes FILE (the output of `yolact bench-ops --json`)")
        if args.half and args.device != "cuda":
            ap.error("--half needs --device cuda (as ours: the CPU path is f32 only)")
        return main_ops(args)
    if args.half:
        ap.error("--half is only for --ops")
    if not args.yolact_src or not args.config:
        ap.error("--yolact-src and --config are required (except with --ops)")
    if args.device == "cuda":
        return main_cuda(args)
    torch.set_num_threads(args.threads)
    ns = R.import_reference(args.yolact_src)
    net, _ = R.build(ns, args.config, args.seed)
    bgr = R.load_bgr(args.image)
    for _ in range(args.warmup):
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
    for i in range(args.warmup + args.iters):
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
        if i < args.warmup:
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


OPS = ["conv", "dcn", "dcn_layer"]


def read_shapes(path):
    """The shapes of a `yolact bench-ops --json` report, checked; exits with the reason if bad."""
    try:
        with open(path) as f:
            report = json.load(f)
        shapes = []
        for s in report["shapes"]:
            shape = {k: int(s[k]) for k in ("channels", "height", "width", "stride", "count",
                                            "out_height", "out_width")}
            if min(shape.values()) < 1:
                raise ValueError(f"non-positive size in {s}")
            shapes.append(shape)
        if not shapes:
            raise ValueError("no shapes")
        return report, shapes
    except (OSError, ValueError, KeyError, TypeError) as e:
        sys.exit(f"bench_reference.py --ops: cannot read shapes from {path}: {e!r}")


def spread(ms):
    return {"median": statistics.median(ms), "min": min(ms), "max": max(ms)}


def main_ops(args):
    import time

    import torch.nn.functional as F
    import torchvision

    report, shapes = read_shapes(args.shapes)
    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        sys.exit("bench_reference.py --device cuda: torch sees no CUDA device")
    if cuda:
        torch.backends.cudnn.benchmark = True
    else:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    dtype = torch.float16 if args.half else torch.float32
    gen = torch.Generator().manual_seed(0)

    def randn(std, *shape):
        return (torch.randn(*shape, generator=gen) * std).to(dev, dtype)

    def time_op(fn):
        with torch.inference_mode():
            for _ in range(args.warmup):
                fn()
            if cuda:
                torch.cuda.synchronize()
                ev = [torch.cuda.Event(enable_timing=True) for _ in range(args.iters + 1)]
                ev[0].record()
                for e in ev[1:]:
                    fn()
                    e.record()
                torch.cuda.synchronize()
                return [a.elapsed_time(b) for a, b in zip(ev, ev[1:])]
            ms = []
            for _ in range(args.iters):
                t0 = time.perf_counter()
                fn()
                ms.append((time.perf_counter() - t0) * 1e3)
            return ms

    out_shapes = []
    for s in shapes:
        c, st = s["channels"], s["stride"]
        ho, wo = s["out_height"], s["out_width"]
        x = randn(1.0, 1, c, s["height"], s["width"])
        weight = randn((2.0 / (9 * c)) ** 0.5, c, c, 3, 3)
        bias = randn(0.1, c)
        offset = (torch.rand(1, 18, ho, wo, generator=gen) * 4 - 2).to(dev, dtype)
        mask = torch.sigmoid(torch.randn(1, 9, ho, wo, generator=gen)).to(dev, dtype)
        om_weight = randn(1.0 / (9 * c) ** 0.5, 27, c, 3, 3)
        om_bias = torch.zeros(27, device=dev, dtype=dtype)

        def conv():
            return F.conv2d(x, weight, bias, stride=st, padding=1)

        def dcn():
            return torchvision.ops.deform_conv2d(x, offset, weight, bias, stride=st, padding=1,
                                                 mask=mask)

        def dcn_layer():
            raw = F.conv2d(x, om_weight, om_bias, stride=st, padding=1)
            return torchvision.ops.deform_conv2d(x, raw[:, :18], weight, bias, stride=st,
                                                 padding=1, mask=torch.sigmoid(raw[:, 18:]))

        with torch.inference_mode():
            got = tuple(conv().shape[2:])
        if got != (ho, wo):
            sys.exit(f"bench_reference.py --ops: shape {s} gives a {got} output here, "
                     f"not {(ho, wo)}")
        ops = {name: spread(time_op(fn)) for name, fn in
               (("conv", conv), ("dcn", dcn), ("dcn_layer", dcn_layer))}
        out_shapes.append(dict(s, ops=ops,
                               ratio_dcn_conv=ops["dcn"]["median"] / ops["conv"]["median"],
                               ratio_dcn_layer_conv=(ops["dcn_layer"]["median"]
                                                     / ops["conv"]["median"])))
    totals = {op: sum(s["count"] * s["ops"][op]["median"] for s in out_shapes) for op in OPS}
    result = {
        "tool": "bench_reference.py --ops",
        "config": report.get("config"),
        "size": report.get("size"),
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "dtype": "f16" if args.half else "f32",
        "clock": "cuda_events" if cuda else "wall",
        "iters": args.iters,
        "warmup": args.warmup,
        "shapes": out_shapes,
        "total_ms": totals,
        "ratio_dcn_conv": totals["dcn"] / totals["conv"],
        "ratio_dcn_layer_conv": totals["dcn_layer"] / totals["conv"],
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "cudnn_benchmark": bool(cuda and torch.backends.cudnn.benchmark),
        "threads": None if cuda else args.threads,
    }
    if args.json:
        print(json.dumps(result, indent=1))
        return
    print(f"{result['config']} deformable 3x3 convs on {result['device']} ({result['dtype']}), "
          f"{args.iters} iterations after {args.warmup} warm-up, timing: {result['clock']}, "
          f"torch {torch.__version__}, torchvision {torchvision.__version__}")
    print(f"{'C, HxW, stride':<24} {'count':>5} {'conv':>10} {'dcn':>10} {'dcn_layer':>10} "
          f"{'dcn/conv':>8} {'layer/cv':>8}   (ms, medians)")
    for s in out_shapes:
        name = f"{s['channels']}, {s['height']}x{s['width']}, /{s['stride']}"
        med = [s["ops"][op]["median"] for op in OPS]
        print(f"{name:<24} {s['count']:>5} {med[0]:>10.3f} {med[1]:>10.3f} {med[2]:>10.3f} "
              f"{s['ratio_dcn_conv']:>8.2f} {s['ratio_dcn_layer_conv']:>8.2f}")
    print(f"{'total (count x median)':<24} {sum(s['count'] for s in out_shapes):>5} "
          f"{totals['conv']:>10.3f} {totals['dcn']:>10.3f} {totals['dcn_layer']:>10.3f} "
          f"{result['ratio_dcn_conv']:>8.2f} {result['ratio_dcn_layer_conv']:>8.2f}")


def ops_table(ours_path, ref_path):
    """BENCHMARKS.md's DCN vs conv rows: per shape and the count-weighted total, medians in ms.
    The goal's ratio is ours dcn over PyTorch's conv (cuDNN on CUDA)."""
    with open(ours_path) as f:
        ours = json.load(f)
    with open(ref_path) as f:
        ref = json.load(f)
    key = ("channels", "height", "width", "stride", "count")
    if [tuple(s[k] for k in key) for s in ours["shapes"]] != \
            [tuple(s[k] for k in key) for s in ref["shapes"]]:
        sys.exit("--ops-table: the two reports time different shapes")
    print(f"{ours['config']}, {ours['dtype']}, {ours['device']} / {ref['device']}, "
          f"clock {ours['clock']} / {ref['clock']}, {ours['iters']} iterations")
    print()
    print("| shape (C, HxW, stride) | count | ours conv | ours dcn | ours dcn/conv | ours dcn_layer "
          "| PyTorch conv2d | torchvision deform_conv2d | ours dcn / PyTorch conv |")
    print("|---|---|---|---|---|---|---|---|---|")

    def row(name, count, o_conv, o_dcn, o_layer, r_conv, r_dcn):
        print(f"| {name} | {count} | {o_conv:.3f} | {o_dcn:.3f} | {o_dcn / o_conv:.2f} | "
              f"{o_layer:.3f} | {r_conv:.3f} | {r_dcn:.3f} | {o_dcn / r_conv:.2f} |")

    for o, r in zip(ours["shapes"], ref["shapes"]):
        med = [o["ops"][op]["median"] for op in OPS] + [r["ops"][op]["median"]
                                                        for op in ("conv", "dcn")]
        row(f"{o['channels']}, {o['height']}x{o['width']}, /{o['stride']}", o["count"], *med)
    tot = [ours["total_ms"][op] for op in OPS] + [ref["total_ms"][op] for op in ("conv", "dcn")]
    row("total (count x median)", sum(s["count"] for s in ours["shapes"]), *tot)


if __name__ == "__main__":
    main()
