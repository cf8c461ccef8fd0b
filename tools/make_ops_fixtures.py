#!/usr/bin/env python3
"""Writes the reference fixtures for tests/it/ops.rs (DCNv2 im2col and the half-pixel bilinear resize).

Run from the repository root:  python3 tools/make_ops_fixtures.py
Optionally `--big PATH` also writes real-size DCN cases (x of 128 channels at 69x69 stride 1 and
138x138 stride 2, about 30 MB, not committed) for the ignored test `dcn_matches_torchvision_big`:
    python3 tools/make_ops_fixtures.py --big /tmp/dcn_big.safetensors
    YOLACT_OPS_BIG=/tmp/dcn_big.safetensors cargo test --release --test it ops::big -- --ignored
Needs torch, torchvision and safetensors. Everything is float32 on the CPU, deterministic (fixed
seed), and small enough to commit.

* tests/fixtures/ops/dcn.safetensors: per case `<case>.{x,offset,mask,weight,bias,out,stride}`,
  with out = torchvision.ops.deform_conv2d(x, offset, weight, bias, stride, padding=1, mask=mask).
  Offsets mix small values, values up to +-25 px (most of those land outside the image) and
  exact integers / halves (to hit the h == -1, h == H - 1 borders).
* tests/fixtures/ops/interp.safetensors: per case `<case>.{shape,x_head,rows,cols,y}`.
  The input is not stored (some are 480x640); it is the integer hash `gen_input` below, which the
  Rust test regenerates bit-exactly; `x_head` (its first 64 values) guards against drift.
  y = F.interpolate(x, size, mode='bilinear', align_corners=False)[:, :, rows][:, :, :, cols],
  where rows/cols are every row/column for small outputs and a strided subset (always including
  the last one) for large outputs.
"""
import os

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from safetensors.torch import save_file

OUT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "ops")


def gen_input(n):
    """Values in [-2, 2) on a 2^-22 grid: ((i * 2654435761) mod 2^32 >> 8) / 2^24 * 4 - 2, exact in f32."""
    i = np.arange(n, dtype=np.uint64)
    h = (i * np.uint64(2654435761)) & np.uint64(0xFFFFFFFF)
    v = (h >> np.uint64(8)).astype(np.float64) / float(1 << 24) * 4.0 - 2.0
    return v.astype(np.float32)


def dcn_fixtures(g, cases=None, path=None):
    cases = cases or {
        # name: (N, C, H, W, O, stride, far fraction)
        "s1_odd": (2, 3, 7, 9, 4, 1, 0.3),
        "s2_odd": (2, 3, 7, 9, 4, 2, 0.3),
        "s2_even": (1, 8, 12, 10, 6, 2, 0.2),
        "s1_far": (1, 5, 9, 11, 3, 1, 1.0),
    }
    t = {}
    for name, (n, c, h, w, o, s, far) in cases.items():
        ho = (h - 1) // s + 1
        wo = (w - 1) // s + 1
        x = torch.randn(n, c, h, w, generator=g)
        near = (torch.rand(n, 18, ho, wo, generator=g) * 2 - 1) * 3
        big = (torch.rand(n, 18, ho, wo, generator=g) * 2 - 1) * 25
        pick = torch.rand(n, 18, ho, wo, generator=g) < far
        offset = torch.where(pick, big, near)
        snap = torch.rand(n, 18, ho, wo, generator=g) < 0.2
        offset = torch.where(snap, torch.round(offset * 2) / 2, offset)
        mask = torch.sigmoid(torch.randn(n, 9, ho, wo, generator=g))
        weight = torch.randn(o, c, 3, 3, generator=g) * 0.3
        bias = torch.randn(o, generator=g)
        out = torchvision.ops.deform_conv2d(
            x, offset, weight, bias, stride=(s, s), padding=(1, 1), dilation=(1, 1), mask=mask
        )
        for k, v in dict(x=x, offset=offset, mask=mask, weight=weight, bias=bias, out=out).items():
            t[f"{name}.{k}"] = v.contiguous().float()
        t[f"{name}.stride"] = torch.tensor([s], dtype=torch.int64)
    save_file(t, path or os.path.join(OUT_DIR, "dcn.safetensors"))


def subset(size, step, limit):
    if size <= limit:
        return list(range(size))
    idx = list(range(0, size, step))
    if idx[-1] != size - 1:
        idx.append(size - 1)
    return idx


def interp_fixtures():
    cases = {
        # name: (N, C, H, W, out_h, out_w)
        "fpn_18_35": (1, 4, 18, 18, 35, 35),
        "fpn_35_69": (1, 2, 35, 35, 69, 69),
        "proto_69_138": (1, 2, 69, 69, 138, 138),
        "pre_480x640_550": (1, 3, 480, 640, 550, 550),
        "mask_138_427x640": (1, 2, 138, 138, 427, 640),
        "odd_7x9_13x4": (2, 3, 7, 9, 13, 4),
        "odd_5x11_3x17": (1, 1, 5, 11, 3, 17),
        "odd_1x1_3x5": (1, 2, 1, 1, 3, 5),
        "odd_13x6_2x29": (1, 1, 13, 6, 2, 29),
    }
    t = {}
    for name, (n, c, h, w, oh, ow) in cases.items():
        x = torch.from_numpy(gen_input(n * c * h * w)).reshape(n, c, h, w)
        y = F.interpolate(x, size=(oh, ow), mode="bilinear", align_corners=False)
        rows = subset(oh, 7, 160)
        cols = subset(ow, 5, 160)
        y = y[:, :, rows][:, :, :, cols]
        t[f"{name}.shape"] = torch.tensor([n, c, h, w, oh, ow], dtype=torch.int64)
        t[f"{name}.x_head"] = x.flatten()[:64].clone()
        t[f"{name}.rows"] = torch.tensor(rows, dtype=torch.int64)
        t[f"{name}.cols"] = torch.tensor(cols, dtype=torch.int64)
        t[f"{name}.y"] = y.contiguous()
    save_file(t, os.path.join(OUT_DIR, "interp.safetensors"))


def main():
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--big", help="also write real-size DCN cases to this path")
    args = ap.parse_args()
    torch.set_num_threads(1)
    os.makedirs(OUT_DIR, exist_ok=True)
    g = torch.Generator().manual_seed(20240611)
    dcn_fixtures(g)
    interp_fixtures()
    if args.big:
        torch.set_num_threads(os.cpu_count() or 1)
        big = {
            "c128_69_s1": (1, 128, 69, 69, 128, 1, 0.05),
            "c128_138_s2": (1, 128, 138, 138, 128, 2, 0.05),
        }
        dcn_fixtures(torch.Generator().manual_seed(7), big, args.big)
    print("torch", torch.__version__, "torchvision", torchvision.__version__)


if __name__ == "__main__":
    main()
