#!/usr/bin/env python3
"""Runs the reference YOLACT on CPU with the synthetic weights and writes the parity fixtures.

    make_parity_fixtures.py --yolact-src DIR --out tests/fixtures/parity [--configs a,b] [--seed S]

Per config NAME it writes
  NAME.raw.safetensors  every ROW_STRIDE-th prior row of the network's eval outputs (loc, conf,
                        mask, priors, with `rows` = the prior indices) and the prototypes at every
                        PROTO_STRIDE-th row and column (`proto`, `proto_rows`, `proto_cols`)
  NAME.dets.json        the detections eval.py --image would draw (prep_display order), with the
                        float box before truncation, the int box, the mask as a COCO RLE string,
                        plus statistics of the run (candidates, activation sizes per FPN level)
and, once, `synth_values.json`: sample elements (bit patterns) and per-key f64 sums of the
generator, for the Rust generator test.
"""

import argparse
import json
import os
import platform
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import reference_yolact as R  # noqa: E402
import synth_weights as S  # noqa: E402

ROW_STRIDE = 53
PROTO_STRIDE = 7
# Per config display threshold: YOLACT++ scores are class score x predicted mask IoU, so they sit
# lower on the same synthetic heads. Configs not listed get an automatic one (`auto_threshold`).
SCORE_THRESHOLD = {
    "yolact_resnet50": 0.15,
    "yolact_plus_resnet50": 0.09,
}
AUTO_RANGE = (10, 40)
TOP_K = 100
IMAGE = "test_image.png"


def rle_string(mask):
    from pycocotools import mask as mask_util

    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    return rle["counts"].decode("ascii")


def stats(t):
    t = t.double()
    return {"shape": list(t.shape), "rms": float(t.pow(2).mean().sqrt()),
            "max_abs": float(t.abs().max()), "mean": float(t.mean())}


def run_config(ns, name, out_dir, seed, bgr):
    from safetensors.torch import save_file

    net, _ = R.build(ns, name, seed)
    fpn_out = {}
    net.fpn.register_forward_hook(lambda m, i, o: fpn_out.setdefault("p", [x.detach().clone() for x in o]))
    thr = SCORE_THRESHOLD.get(name)
    if thr is None:
        thr = auto_threshold(ns, net, bgr)
        fpn_out.clear()
    fr = R.run_frame(ns, net, bgr, score_threshold=thr, top_k=TOP_K, keep_raw=True)
    raw = fr.raw
    n = raw["loc"].shape[1]
    rows = torch.arange(0, n, ROW_STRIDE, dtype=torch.int64)
    proto = raw["proto"][0]
    pr = torch.arange(0, proto.shape[0], PROTO_STRIDE, dtype=torch.int64)
    pc = torch.arange(0, proto.shape[1], PROTO_STRIDE, dtype=torch.int64)
    tensors = {
        "rows": rows,
        "loc": raw["loc"][0][rows].contiguous(),
        "conf": raw["conf"][0][rows].contiguous(),
        "mask": raw["mask"][0][rows].contiguous(),
        "priors": raw["priors"][rows].contiguous(),
        "proto": proto[pr][:, pc].contiguous(),
        "proto_rows": pr,
        "proto_cols": pc,
    }
    save_file(tensors, os.path.join(out_dir, f"{name}.raw.safetensors"),
              metadata={"config": name, "seed": hex(seed), "num_priors": str(n),
                        "proto_shape": str(list(proto.shape))})

    items = R.display_detections(ns, fr, score_threshold=thr, top_k=TOP_K)
    conf = raw["conf"][0]
    det = fr.detection
    dets = []
    for it in items:
        dets.append({
            "class_id": it["class_id"],
            "score": it["score"],
            "class_score": it["class_score"],
            "mask_iou": it["mask_iou"],
            "box": it["box_f"],
            "box_int": it["box"],
            "mask": {"size": [fr.height, fr.width], "counts": rle_string(it["mask"])},
            "area": int(it["mask"].sum()),
        })
    doc = {
        "config": name,
        "seed": seed,
        "image": IMAGE,
        "width": fr.width,
        "height": fr.height,
        "score_threshold": thr,
        "top_k": TOP_K,
        "num_priors": n,
        "num_candidates": int((conf[:, 1:].max(1).values > 0.05).sum()),
        "num_detect": 0 if det is None else int(det["score"].shape[0]),
        "detect_score_range": None if det is None else [float(det["score"].min()), float(det["score"].max())],
        "fpn": {f"P{i + 3}": stats(p) for i, p in enumerate(fpn_out["p"])},
        "raw": {k: stats(v) for k, v in raw.items()},
        "maskiou": None if fr.maskiou is None else stats(fr.maskiou),
        "detections": dets,
    }
    with open(os.path.join(out_dir, f"{name}.dets.json"), "w") as f:
        json.dump(doc, f, indent=1)
    print(f"{name}: priors {n}, candidates>0.05 {doc['num_candidates']}, Detect {doc['num_detect']}, "
          f"shown {len(dets)} (thr {thr})", flush=True)
    return doc


def auto_threshold(ns, net, bgr):
    """A threshold that shows AUTO_RANGE detections with the widest gap to its neighbours, so
    that small numerical differences cannot move a detection across it. The deeper backbones
    leave the synthetic heads with more confident, more uniform scores than the R50 ones."""
    fr = R.run_frame(ns, net, bgr, score_threshold=0.0, top_k=TOP_K)
    items = R.display_detections(ns, fr, score_threshold=0.0, top_k=TOP_K)
    scores = sorted((it["score"] for it in items), reverse=True)
    lo, hi = AUTO_RANGE
    best = None
    for k in range(lo, min(hi, len(scores) - 1) + 1):
        # Show k detections: the threshold sits between scores[k-1] and scores[k]. (For ++ the
        # same threshold also filters class scores first, which can drop a few more.)
        gap = scores[k - 1] - scores[k]
        if best is None or gap > best[0]:
            best = (gap, k)
    if best is None:
        return 0.05
    k = best[1]
    return round((scores[k - 1] + scores[k]) / 2, 6)


def synth_values(out_dir, seed, keys_dir, configs):
    """Bit patterns of sample elements and f64 sums (plain sequential order, then also sum of
    squares) for every key of the given configs."""
    doc = {"seed": seed, "configs": {}}
    for name in configs:
        keys = S.read_keys_file(os.path.join(keys_dir, f"{name}.keys.txt"))
        entries = []
        for key, shape in keys:
            if not S.is_synth_key(key) or key.startswith("semantic_seg_conv."):
                continue
            t = S.synth_tensor(key, shape, seed).reshape(-1)
            n = t.shape[0]
            idx = sorted({0, n - 1, n // 2, (n * 7) // 13})
            d = t.astype(np.float64)
            entries.append({
                "key": key,
                "shape": shape,
                "samples": [[i, int(t[i:i + 1].view(np.uint32)[0])] for i in idx],
                "sum": float(np.sum(d)),
                "sum_sq": float(np.sum(d * d)),
                "min": float(d.min()),
                "max": float(d.max()),
            })
        doc["configs"][name] = entries
    with open(os.path.join(out_dir, "synth_values.json"), "w") as f:
        json.dump(doc, f, separators=(",", ":"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--yolact-src", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--configs", default="yolact_resnet50,yolact_plus_resnet50")
    ap.add_argument("--synth-configs", default="yolact_plus_resnet50,yolact_darknet53,yolact_base")
    ap.add_argument("--seed", type=lambda s: int(s, 0), default=S.DEFAULT_SEED)
    ap.add_argument("--keys-dir", default="/work/shared/spec/keys")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    synth_values(args.out, args.seed, args.keys_dir, args.synth_configs.split(","))
    ns = R.import_reference(args.yolact_src)
    bgr = R.load_bgr(os.path.join(args.out, IMAGE))
    summary = {"torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version()}
    import torchvision

    summary["torchvision"] = torchvision.__version__
    for name in args.configs.split(","):
        run_config(ns, name, args.out, args.seed, bgr)
    with open(os.path.join(args.out, "versions.json"), "w") as f:
        json.dump(summary, f, indent=1)


if __name__ == "__main__":
    main()
