#!/usr/bin/env python3
"""Counter-based synthetic YOLACT / YOLACT++ weights, bit-identical to `src/weights/synth.rs`.

Every element is a pure function of (seed, key, flat index), so Rust and Python can regenerate the
same ~34M parameters without shipping them:

    k     = fnv1a64(key utf-8) XOR (seed * GOLDEN)                      (u64, wrapping)
    z_i   = splitmix64_mix(k + (i + 1) * GOLDEN)                         (u64, wrapping)
    u_i   = (z_i >> 40) * 2^-24                                          (exact in f64, in [0,1))
    v_i   = f32(lo + (hi - lo) * u_i)                                    (f64 maths, one rounding)

(lo, hi) come from `ranges(key, shape)`: one range per key, except two keys whose bias channels
have different roles (conf background logits, DCN offset-vs-modulation channels). All constants are
decimal literals or IEEE-exact operations (sqrt, +, *, /) so both languages round identically.

Usage as a script: `synth_weights.py --config NAME [--seed S] --out FILE.safetensors` writes the
state dict (including `num_batches_tracked` zeros and `semantic_seg_conv.*`, which the reference
needs for its strict load) using the key list in /work/shared/spec/keys. The training-only
`semantic_seg_conv.*` gets no special case: like every key, its values follow from (seed, key,
index) and `ranges` (He-uniform weight, BIAS bias); Rust's `synth_train_state_dict` adds the same
two keys to the inference ones.
"""

import argparse
import math
import os
import re

import numpy as np

GOLDEN = 0x9E3779B97F4A7C15
MASK64 = (1 << 64) - 1
DEFAULT_SEED = 0x5EED_CAFE  # the seed the parity fixtures use

# Scales, chosen by running the reference at full depth (see tests/fixtures/parity/README.md).
BN_GAMMA = (0.8, 1.2)
BN_GAMMA_LAST = (0.15, 0.35)  # bn3 (DarkNet: conv2.1): keeps the residual stream from growing over 23 blocks
# DarkNet stage-entry BN (backbone.layers.L.0.1): its residual stream has no BN on the shortcut and
# no activation after the add, so it grows faster than ResNet's; this keeps P3..P7 comparable.
BN_GAMMA_DARKNET_ENTRY = (0.8, 1.0)
BN_BETA = (-0.1, 0.1)
BN_MEAN = (-0.1, 0.1)
BN_VAR = (0.5, 1.5)
BIAS = (-0.1, 0.1)
DCN_OFFSET_BIAS = (-2.0, 2.0)  # pixels: fractional and partly out-of-image sampling
DCN_MOD_BIAS = (0.5, 2.5)  # sigmoid: 0.62..0.92, keeps the ++ activations near v1
DCN_OFFSET_GAIN = 1.0
LOC_GAIN = 0.1
LOC_BIAS = (-0.5, 0.5)
CONF_GAIN = 0.2
CONF_BG_BIAS = (3.0, 4.0)
CONF_FG_BIAS = (-1.5, 1.5)
COEF_GAIN = 0.3
COEF_BIAS = (-0.2, 0.6)  # proto >= 0: favours non-empty masks
PROTO_OUT_GAIN = 0.3
FPN_LAT_GAIN = 0.5
MASKIOU_LAST_GAIN = 0.7
MASKIOU_LAST_BIAS = (0.4, 0.9)  # mean predicted IoU ~0.7 on the test image


def fnv1a64(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001B3) & MASK64
    return h


def key_hash(key: str, seed: int) -> int:
    return fnv1a64(key.encode("utf-8")) ^ ((seed * GOLDEN) & MASK64)


def counter_bits(key: str, n: int, seed: int) -> np.ndarray:
    """z_i for i in 0..n (uint64): the raw stream of `key`. The weights use its top 24 bits; the
    train step fixtures' gradient sketches draw buckets and signs from it (Rust: `synth::Stream`)."""
    k = np.uint64(key_hash(key, seed))
    i = np.arange(1, n + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = k + i * np.uint64(GOLDEN)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def uniform01(key: str, n: int, seed: int) -> np.ndarray:
    """u_i for i in 0..n, float64, each a multiple of 2^-24 in [0, 1)."""
    return (counter_bits(key, n, seed) >> np.uint64(40)).astype(np.float64) * (1.0 / 16777216.0)


def _sym(a: float):
    return (-a, a)


def _fan_in(shape) -> int:
    n = 1
    for d in shape[1:]:
        n *= int(d)
    return max(n, 1)


def _he(shape, gain: float):
    # U(-a, a) has variance a^2/3; a = gain*sqrt(6/fan_in) is He-uniform (ReLU follows),
    # gain*sqrt(3/fan_in) keeps the variance of a linear layer.
    return _sym(gain * math.sqrt(6.0 / _fan_in(shape)))


def _lin(shape, gain: float):
    return _sym(gain * math.sqrt(3.0 / _fan_in(shape)))


def ranges(key: str, shape):
    """(lo, hi) per element kind: a list of (lo, hi) plus a selector `index -> list position`.

    Returned as (table, period, select) where the element at flat index i uses
    table[select[i % period]]; period = 1 for single-range keys.
    """
    leaf = key.rsplit(".", 1)[-1]
    is_bn = (
        re.search(r"\.bn\d\.", key) is not None
        or re.search(r"downsample\.1\.", key) is not None
        or re.search(r"^backbone\._preconv\.1\.", key) is not None
        or re.search(r"^backbone\.layers\.\d+\.0\.1\.", key) is not None
        or re.search(r"\.conv\d\.1\.", key) is not None
    )
    if is_bn:
        if leaf == "weight":
            if re.search(r"\.(bn3|conv2\.1)\.", key) is not None:
                return [BN_GAMMA_LAST], 1, [0]
            if re.search(r"^backbone\.layers\.\d+\.0\.1\.", key) is not None:
                return [BN_GAMMA_DARKNET_ENTRY], 1, [0]
            return [BN_GAMMA], 1, [0]
        if leaf == "bias":
            return [BN_BETA], 1, [0]
        if leaf == "running_mean":
            return [BN_MEAN], 1, [0]
        if leaf == "running_var":
            return [BN_VAR], 1, [0]
        return [BIAS], 1, [0]

    if "conv_offset_mask" in key:
        if leaf == "weight":
            return [_lin(shape, DCN_OFFSET_GAIN)], 1, [0]
        # 27 channels: 0..17 interleaved (dy, dx) offsets, 18..26 modulation logits.
        return [DCN_OFFSET_BIAS, DCN_MOD_BIAS], 27, [0] * 18 + [1] * 9
    if key.startswith("prediction_layers.0.bbox_layer."):
        if leaf == "weight":
            return [_lin(shape, LOC_GAIN)], 1, [0]
        return [LOC_BIAS], 1, [0]
    if key.startswith("prediction_layers.0.conf_layer."):
        if leaf == "weight":
            return [_lin(shape, CONF_GAIN)], 1, [0]
        # channel = anchor * 81 + class; class 0 is background.
        return [CONF_BG_BIAS, CONF_FG_BIAS], 81, [0] + [1] * 80
    if key.startswith("prediction_layers.0.mask_layer."):
        if leaf == "weight":
            return [_lin(shape, COEF_GAIN)], 1, [0]
        return [COEF_BIAS], 1, [0]
    if key.startswith("maskiou_net.maskiou_net.10."):
        if leaf == "weight":
            return [_lin(shape, MASKIOU_LAST_GAIN)], 1, [0]
        return [MASKIOU_LAST_BIAS], 1, [0]
    if leaf == "weight" and len(shape) == 4:
        # Convs followed by ReLU (directly or after BN) get He scaling; the FPN laterals and
        # the last protonet conv are linear.
        if key.startswith("fpn.lat_layers."):
            return [_lin(shape, FPN_LAT_GAIN)], 1, [0]
        if key.startswith("proto_net.10."):
            return [_lin(shape, PROTO_OUT_GAIN)], 1, [0]
        return [_he(shape, 1.0)], 1, [0]
    # Biases and anything unforeseen.
    return [BIAS], 1, [0]


def synth_tensor(key: str, shape, seed: int = DEFAULT_SEED) -> np.ndarray:
    """The float32 tensor for one key (row-major, like torch)."""
    n = int(np.prod(shape, dtype=np.int64)) if len(shape) else 1
    u = uniform01(key, n, seed)
    table, period, select = ranges(key, shape)
    lo = np.array([t[0] for t in table], dtype=np.float64)
    hi = np.array([t[1] for t in table], dtype=np.float64)
    if period == 1:
        v = lo[0] + (hi[0] - lo[0]) * u
    else:
        sel = np.array(select, dtype=np.int64)[np.arange(n) % period]
        v = lo[sel] + (hi[sel] - lo[sel]) * u
    return v.astype(np.float32).reshape(tuple(int(s) for s in shape))


def is_synth_key(key: str) -> bool:
    return not key.endswith("num_batches_tracked")


def read_keys_file(path: str):
    """[(key, shape)] from a spec keys file: `name (d0, d1, ...)` per line."""
    out = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            name, _, rest = line.partition(" ")
            dims = [int(d) for d in re.findall(r"\d+", rest)]
            out.append((name, dims))
    return out


def synth_state_dict(keys_shapes, seed: int = DEFAULT_SEED, torch_tensors=True):
    """OrderedDict key -> tensor for every key, num_batches_tracked as int64 zeros."""
    from collections import OrderedDict

    sd = OrderedDict()
    for key, shape in keys_shapes:
        if is_synth_key(key):
            arr = synth_tensor(key, shape, seed)
        else:
            arr = np.zeros(tuple(shape), dtype=np.int64)
        if torch_tensors:
            import torch

            sd[key] = torch.from_numpy(arr)
        else:
            sd[key] = arr
    return sd


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--seed", type=lambda s: int(s, 0), default=DEFAULT_SEED)
    ap.add_argument("--keys-dir", default="/work/shared/spec/keys")
    ap.add_argument("--out", required=True, help=".safetensors or .pth")
    args = ap.parse_args()
    keys = read_keys_file(os.path.join(args.keys_dir, f"{args.config}.keys.txt"))
    sd = synth_state_dict(keys, args.seed)
    if args.out.endswith(".safetensors"):
        from safetensors.torch import save_file

        save_file(dict(sd), args.out)
    else:
        import torch

        torch.save(sd, args.out)


if __name__ == "__main__":
    main()
