#!/usr/bin/env python3
"""Writes tests/fixtures/post/*.json: independent references for priors, decode, RLE and postprocess.

Everything here is written from the model description (docs/model.md §4, §6), in NumPy float64 or
torch, not from our Rust code.
Run from the repository root:  python3 tools/make_post_fixtures.py
Deterministic (fixed seeds); needs numpy, torch and pycocotools.
"""
import json
import math
import os

import numpy as np
import torch
import torch.nn.functional as F
from pycocotools import mask as mask_util

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "post")


def f32(x):
    """A float32 value as the exact double JSON will carry."""
    return float(np.float32(x))


# --------------------------------------------------------------------- priors (docs/model.md §4)
# Level sizes come from the table of docs/model.md §4, not from conv arithmetic.
LEVELS = {550: [69, 35, 18, 9, 5], 700: [88, 44, 22, 11, 6]}


def priors_f64(max_size, scales_per_level, square):
    out = []
    for size, scales in zip(LEVELS[max_size], scales_per_level):
        for y in range(size):
            for x in range(size):
                cx = (x + 0.5) / size
                cy = (y + 0.5) / size
                for s in scales:
                    for ar in (1.0, 0.5, 2.0):
                        r = math.sqrt(ar)
                        w = s * r / max_size
                        h = w if square else s / r / max_size
                        out.append((cx, cy, w, h))
    return np.array(out, dtype=np.float64).astype(np.float32)


def make_priors():
    v1 = [[24.0], [48.0], [96.0], [192.0], [384.0]]
    im700 = [[float(int(s[0] / 550 * 700))] for s in v1]
    plus = [[s[0] * 2 ** (j / 3) for j in range(3)] for s in v1]
    cases = {
        "yolact_base": priors_f64(550, v1, True),
        "yolact_im700": priors_f64(700, im700, True),
        "yolact_plus_base": priors_f64(550, plus, False),
    }
    rng = np.random.default_rng(1)
    out = {}
    for name, p in cases.items():
        n = len(p)
        sample = sorted(set(rng.integers(0, n, 40).tolist()) | set(range(12)) | set(range(n - 12, n)))
        out[name] = {
            "count": n,
            "samples": [[i] + [float(v) for v in p[i]] for i in sample],
        }
    return out


# --------------------------------------------------------------------- decode (docs/model.md §6.1)
def make_decode():
    rng = np.random.default_rng(2)
    n = 64
    pri = np.stack(
        [rng.uniform(0, 1, n), rng.uniform(0, 1, n), rng.uniform(0.01, 1, n), rng.uniform(0.01, 1, n)], 1
    ).astype(np.float32)
    loc = rng.normal(0, 2, (n, 4)).astype(np.float32)
    # exp(0) = 1 exactly, so these rows must match bit for bit (they pin the x2 = x1 + w order).
    loc[n // 2 :, 2:] = 0
    v0, v1 = np.float32(0.1), np.float32(0.2)
    cxy = pri[:, :2] + (loc[:, :2] * v0) * pri[:, 2:]
    wh = pri[:, 2:] * np.exp(loc[:, 2:] * v1)
    xy1 = cxy - wh / np.float32(2)
    xy2 = xy1 + wh
    boxes = np.concatenate([xy1, xy2], 1).astype(np.float32)
    return {
        "priors": pri.astype(float).tolist(),
        "loc": loc.astype(float).tolist(),
        "boxes": boxes.astype(float).tolist(),
    }


# ----------------------------------------------------------------------------------- RLE
def rle_str(m):
    r = mask_util.encode(np.asfortranarray(m.astype(np.uint8)))
    return r


def make_rle():
    rng = np.random.default_rng(3)
    masks = []
    for k in range(20):
        h, w = int(rng.integers(1, 12)), int(rng.integers(1, 12))
        kind = k % 5
        if kind == 0:
            m = rng.random((h, w)) < 0.5
        elif kind == 1:
            m = np.zeros((h, w), bool)
        elif kind == 2:
            m = np.ones((h, w), bool)
        elif kind == 3:
            m = rng.random((h, w)) < 0.15
        else:
            m = np.zeros((h, w), bool)
            m[0, 0] = True
        masks.append(m)
    # Same-size group for pairwise IoU, with long runs so counts need several characters.
    H, W = 40, 37
    group = []
    for k in range(6):
        m = np.zeros((H, W), bool)
        y0, x0 = rng.integers(0, H - 5), rng.integers(0, W - 5)
        m[y0 : y0 + rng.integers(3, H - y0), x0 : x0 + rng.integers(3, W - x0)] = True
        m ^= rng.random((H, W)) < 0.02
        group.append(m)
    group.append(np.zeros((H, W), bool))
    big = np.zeros((300, 200), bool)
    big[10:290, 150:199] = True
    masks.append(big)

    def entry(m):
        r = rle_str(m)
        return {
            "h": m.shape[0],
            "w": m.shape[1],
            "rows": ["".join("1" if v else "0" for v in row) for row in m],
            "counts": r["counts"].decode("ascii"),
            "area": int(mask_util.area(r)),
        }

    g = [rle_str(m) for m in group]
    iou = mask_util.iou(g, g, [0] * len(g))
    iou_crowd = mask_util.iou(g, g, [1] * len(g))
    return {
        "masks": [entry(m) for m in masks],
        "group": [entry(m) for m in group],
        "iou": np.asarray(iou).tolist(),
        "iou_crowd": np.asarray(iou_crowd).tolist(),
    }


# ----------------------------------------------------------------- postprocess (docs/model.md §6.5)
NCLS = 80


def maskiou_fn(m):
    """Stand-in for the mask-IoU head, easy to reproduce exactly in the test: max of each soft
    mask times (1 + c) / 80 for class c. (n,1,Hp,Wp) -> (n,80)."""
    peak = m.amax(dim=(1, 2, 3))
    return peak[:, None] * ((1 + torch.arange(NCLS, dtype=torch.float32)) / NCLS)[None, :]


def reference_postprocess(boxes, coefs, classes, scores, proto, w, h, thr, top_k, crop, use_iou):
    boxes = boxes.clone()
    if thr > 0:
        keep = scores > thr
        boxes, coefs, classes, scores = boxes[keep], coefs[keep], classes[keep], scores[keep]
    if scores.numel() == 0:
        return []
    hp, wp, _ = proto.shape
    m = torch.sigmoid(proto @ coefs.t())  # (hp, wp, n)
    if crop:
        def bounds(a, b, size):
            a, b = a * size, b * size
            return torch.clamp(torch.min(a, b) - 1, min=0), torch.clamp(torch.max(a, b) + 1, max=size)

        x1, x2 = bounds(boxes[:, 0], boxes[:, 2], wp)
        y1, y2 = bounds(boxes[:, 1], boxes[:, 3], hp)
        q = torch.arange(wp, dtype=torch.float32)[None, :, None]
        r = torch.arange(hp, dtype=torch.float32)[:, None, None]
        inside = (q >= x1) & (q < x2) & (r >= y1) & (r < y2)
        m = m * inside.float()
    m = m.permute(2, 0, 1).contiguous()
    ious = None
    final = scores
    if use_iou:
        p = maskiou_fn(m.unsqueeze(1))
        ious = p[torch.arange(len(classes)), classes.long()]
        final = scores * ious
    order = torch.sort(final, descending=True, stable=True)[1][:top_k]
    order = [int(i) for i in order if final[i] >= thr]
    if not order:
        return []
    idx = torch.tensor(order)
    up = F.interpolate(m[idx].unsqueeze(0), (h, w), mode="bilinear", align_corners=False).squeeze(0)
    bins = (up > 0.5).numpy().astype(np.uint8)
    out = []
    for k, i in enumerate(order):
        b = boxes[i]
        xa, xb = b[0] * w, b[2] * w
        ya, yb = b[1] * h, b[3] * h
        bbox = [max(min(xa, xb), 0), max(min(ya, yb), 0), min(max(xa, xb), w), min(max(ya, yb), h)]
        r = mask_util.encode(np.asfortranarray(bins[k]))
        out.append({
            "class": int(classes[i]),
            "score": float(final[i]),
            "class_score": float(scores[i]),
            "mask_iou": None if ious is None else float(ious[i]),
            "bbox": [float(v) for v in bbox],
            "counts": r["counts"].decode("ascii"),
            "area": int(bins[k].sum()),
        })
    return out


def make_postprocess():
    g = torch.Generator().manual_seed(4)
    n, hp, wp, d = 12, 22, 26, 32
    w, h = 83, 61
    proto = torch.relu(torch.randn(hp, wp, d, generator=g) * 1.5)
    coefs = torch.tanh(torch.randn(n, d, generator=g))
    c = torch.rand(n, 2, generator=g) * 0.8 + 0.1
    s = torch.rand(n, 2, generator=g) * 0.5 + 0.05
    boxes = torch.cat([c - s / 2, c + s / 2], 1)
    boxes[1] = boxes[1][[2, 1, 0, 3]]  # x1 > x2
    boxes[2] = torch.tensor([-0.2, 0.7, 0.3, 1.3])  # outside the image
    classes = torch.randint(0, NCLS, (n,), generator=g)
    scores = torch.sort(torch.rand(n, generator=g) * 0.9 + 0.05, descending=True)[0]
    cases = []
    for name, thr, top_k, crop, use_iou in [
        ("plain", 0.0, 100, True, False),
        ("threshold_topk", 0.3, 5, True, False),
        ("no_crop", 0.0, 100, False, False),
        ("maskiou", 0.0, 100, True, True),
        ("maskiou_threshold_topk", 0.3, 6, True, True),
    ]:
        cases.append({
            "name": name, "score_threshold": thr, "top_k": top_k, "crop": crop, "maskiou": use_iou,
            "expected": reference_postprocess(boxes, coefs, classes, scores, proto, w, h, thr, top_k, crop, use_iou),
        })
    return {
        "img_w": w, "img_h": h, "hp": hp, "wp": wp, "d": d,
        "proto": proto.flatten().tolist(),
        "coefs": coefs.tolist(),
        "boxes": boxes.tolist(),
        "classes": classes.tolist(),
        "scores": scores.tolist(),
        "cases": cases,
    }


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, fn in [("priors", make_priors), ("decode", make_decode), ("rle", make_rle),
                     ("postprocess", make_postprocess)]:
        with open(os.path.join(OUT, name + ".json"), "w") as f:
            json.dump(fn(), f, separators=(",", ":"))
        print("wrote", name)


if __name__ == "__main__":
    main()
