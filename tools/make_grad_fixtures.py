#!/usr/bin/env python3
"""Writes tests/fixtures/ops/grad.safetensors: PyTorch autograd gradients of the ops whose backward
we write ourselves, for tests/it/train_grad.rs.

Run from the repository root:  python3 tools/make_grad_fixtures.py
Needs torch, torchvision and safetensors. CPU, fixed seed 20261202. Inputs are drawn in float32 and
stored as float32 (so the Rust test can run its f32 and f64 paths on the same values); the
gradients are computed in float64 from those values and stored as float64.
Every case has an upstream gradient `r` (random normal); the stored gradients are those of
sum(r * op(inputs)).

* dcn.<case>.{x, offset, mask, weight, bias, stride, r, gx, goffset, gmask, gweight, gbias}:
  torchvision.ops.deform_conv2d(x, offset, weight, bias, stride, padding=1, mask=mask).
  `zero`: all offsets 0, so every sample is at an integer position and the top row / left column
  of taps sit exactly on -1 (torchvision's rule gives v(0, x) there, DCNv2's CUDA code 0);
  `int`: offsets integers and halves in [-3, 3]; `frac_s1`, `frac_s2`: random offsets in
  [-3, 3) with some of +-12 (outside the image).
* interp.<case>.{x, r, gx}: F.interpolate(x, size, mode='bilinear', align_corners=False) at the
  FPN's non-integer ratios (18->35, 35->69), the protonet's x2 (69->138, one plane)
  and an odd down/up-sampling (9x7 -> 4x11).
* maxpool.<case>.{x, r, gx}: F.max_pool2d(x, 3, 2, 1) (`stem`) and over the whole map
  (`global`, the mask-IoU net) on inputs with many ties (small integers, zeros included).
* relu.{x, r, gx}: F.relu on an input with exact zeros.
"""
import os

import torch
import torch.nn.functional as F
import torchvision
from safetensors.torch import save_file

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "ops",
                   "grad.safetensors")


def f32(t):
    return t.to(torch.float32).contiguous()


def leaf(t):
    return t.detach().to(torch.float64).requires_grad_(True)


def dcn_cases(g, t):
    cases = {
        # name: (N, C, H, W, O, stride, offset kind)
        "zero": (1, 3, 5, 5, 2, 1, "zero"),
        "int": (2, 2, 6, 5, 3, 2, "int"),
        "frac_s1": (1, 3, 6, 7, 2, 1, "frac"),
        "frac_s2": (2, 2, 7, 6, 3, 2, "frac"),
    }
    for name, (n, c, h, w, o, s, kind) in cases.items():
        ho, wo = (h - 1) // s + 1, (w - 1) // s + 1
        x = f32(torch.randn(n, c, h, w, generator=g))
        if kind == "zero":
            off = torch.zeros(n, 18, ho, wo)
        elif kind == "int":
            off = torch.randint(-6, 7, (n, 18, ho, wo), generator=g).float() / 2
        else:
            near = (torch.rand(n, 18, ho, wo, generator=g) * 2 - 1) * 3
            far = (torch.rand(n, 18, ho, wo, generator=g) * 2 - 1) * 12
            off = torch.where(torch.rand(n, 18, ho, wo, generator=g) < 0.15, far, near)
        off = f32(off)
        mask = f32(torch.rand(n, 9, ho, wo, generator=g))
        weight = f32(torch.randn(o, c, 3, 3, generator=g))
        bias = f32(torch.randn(o, generator=g))
        r = f32(torch.randn(n, o, ho, wo, generator=g))
        lx, lo, lm, lw, lb = map(leaf, (x, off, mask, weight, bias))
        y = torchvision.ops.deform_conv2d(lx, lo, lw, lb, stride=(s, s), padding=(1, 1), mask=lm)
        (y * r.double()).sum().backward()
        p = f"dcn.{name}."
        t.update({p + "x": x, p + "offset": off, p + "mask": mask, p + "weight": weight,
                  p + "bias": bias, p + "r": r, p + "stride": torch.tensor([s], dtype=torch.int64),
                  p + "gx": lx.grad, p + "goffset": lo.grad, p + "gmask": lm.grad,
                  p + "gweight": lw.grad, p + "gbias": lb.grad})


def interp_cases(g, t):
    cases = {
        "fpn_18_35": ((1, 3, 18, 18), (35, 35)),
        "fpn_35_69": ((1, 1, 35, 35), (69, 69)),
        "proto_69_138": ((1, 1, 69, 69), (138, 138)),
        "odd_9x7_4x11": ((2, 3, 9, 7), (4, 11)),
    }
    for name, (shape, size) in cases.items():
        x = f32(torch.randn(*shape, generator=g))
        r = f32(torch.randn(shape[0], shape[1], *size, generator=g))
        lx = leaf(x)
        y = F.interpolate(lx, size=size, mode="bilinear", align_corners=False)
        (y * r.double()).sum().backward()
        p = f"interp.{name}."
        t.update({p + "x": x, p + "r": r, p + "gx": lx.grad})


def pool_cases(g, t):
    # Small integers (0 included) tie often inside a window; a post-ReLU map also holds zeros.
    x = f32(torch.randint(0, 4, (2, 3, 9, 8), generator=g).float())
    lx = leaf(x)
    y = F.max_pool2d(lx, 3, 2, 1)
    r = f32(torch.randn(*y.shape, generator=g))
    (y * r.double()).sum().backward()
    t.update({"maxpool.stem.x": x, "maxpool.stem.r": r, "maxpool.stem.gx": lx.grad})
    x = f32(torch.randint(0, 3, (3, 4, 3, 3), generator=g).float())
    x[0, 0] = 0  # an all-zero map, as the mask-IoU net's cropped-out inputs give
    lx = leaf(x)
    y = F.max_pool2d(lx, kernel_size=x.shape[2:]).flatten(1)
    r = f32(torch.randn(*y.shape, generator=g))
    (y * r.double()).sum().backward()
    t.update({"maxpool.global.x": x, "maxpool.global.r": r, "maxpool.global.gx": lx.grad})


def relu_case(g, t):
    x = torch.randn(2, 3, 4, 5, generator=g)
    x = torch.where(torch.rand(x.shape, generator=g) < 0.3, torch.zeros_like(x), x)
    x = f32(x)
    r = f32(torch.randn(*x.shape, generator=g))
    lx = leaf(x)
    (F.relu(lx) * r.double()).sum().backward()
    t.update({"relu.x": x, "relu.r": r, "relu.gx": lx.grad})


def main():
    g = torch.Generator().manual_seed(20261202)
    t = {}
    dcn_cases(g, t)
    interp_cases(g, t)
    pool_cases(g, t)
    relu_case(g, t)
    t = {k: v.detach().contiguous() for k, v in t.items()}
    save_file(t, OUT)
    print(f"wrote {len(t)} tensors to {os.path.normpath(OUT)} ({os.path.getsize(OUT)} bytes)")


if __name__ == "__main__":
    main()
