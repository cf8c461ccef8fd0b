#!/usr/bin/env python3
"""Revives a dead output of the mask-IoU net in a yolact safetensors checkpoint.

The net ends in a 1x1 conv and a ReLU over a 1x1 map, so an output whose pre-activation is
negative for every mask predicts IoU 0 for its class and never receives a gradient again. In the
first 3,000 iterations of the shipped model the output of class 3 (donut) was dead from the
start (its bias still exactly 0): every donut was found with a class score near 1 and then
scored 0 by mask-IoU rescoring. This copies the weight row and bias of a live class (`--from`)
into the dead one (`--to`), so that fine-tuning trains it; everything else is copied unchanged.

    revive_maskiou.py IN.safetensors OUT.safetensors --from 0 --to 3

Needs numpy only (the safetensors layout: an 8-byte little-endian header length, a JSON header
with dtype, shape and byte offsets per tensor, then the data).
"""
import argparse
import json
import struct
import sys

import numpy as np

LAST = "maskiou_net.maskiou_net.10"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--from", dest="live", type=int, required=True, help="a live class index")
    ap.add_argument("--to", dest="dead", type=int, required=True, help="the dead class index")
    a = ap.parse_args()

    raw = open(a.src, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    data = bytearray(raw[8 + n :])

    def view(key):
        meta = header[key]
        if meta["dtype"] != "F32":
            sys.exit(f"{key}: expected F32, got {meta['dtype']}")
        s, e = meta["data_offsets"]
        return np.frombuffer(memoryview(data)[s:e], dtype=np.float32).reshape(meta["shape"])

    for key in (f"{LAST}.weight", f"{LAST}.bias"):
        if key not in header:
            sys.exit(f"{a.src}: no {key} (not a YOLACT++ checkpoint)")
        t = view(key)
        classes = t.shape[0]
        if not (0 <= a.live < classes and 0 <= a.dead < classes) or a.live == a.dead:
            sys.exit(f"--from {a.live} --to {a.dead}: need two distinct classes below {classes}")
        t[a.dead] = t[a.live]
    bias = view(f"{LAST}.bias")
    print(f"class {a.dead} now starts from class {a.live}: bias {bias[a.dead]:.4f}")
    with open(a.dst, "wb") as f:
        f.write(raw[: 8 + n])
        f.write(data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
