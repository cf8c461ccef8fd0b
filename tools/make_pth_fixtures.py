#!/usr/bin/env python3
"""Writes the small checkpoint fixtures under tests/fixtures/pth/ with real torch.save, and
checks that our Rust writer's output is readable by real torch.load.

    python3 tools/make_pth_fixtures.py                     # (re)generate fixtures
    python3 tools/make_pth_fixtures.py --full-size CFG OUT.pth  # a released-like checkpoint (random
        # values, every key of tests/fixtures/keys/CFG.keys.txt plus the extra keys load_weights drops,
        # legacy format, storages tagged cuda:0) for the ignored test `external_checkpoint`
    python3 tools/make_pth_fixtures.py --verify-writer DIR # check files written by the Rust test
        # `save_torch_output_is_what_torch_verified` (run it with YOLACT_WRITER_OUT=DIR)

Malicious fixtures are crafted as raw bytes; nothing in them is ever unpickled here.
"""
import argparse
import collections
import io
import os
import struct
import sys
import zipfile

import torch
from safetensors.torch import load_file, save_file

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "fixtures", "pth")

LEGACY_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19\x2e"


def small_state_dict():
    g = torch.Generator().manual_seed(1234)
    sd = collections.OrderedDict()
    sd["conv.weight"] = torch.randn(4, 3, 3, 3, generator=g)
    sd["conv.bias"] = torch.randn(4, generator=g)
    sd["bn.weight"] = torch.rand(4, generator=g) + 0.5
    sd["bn.bias"] = torch.randn(4, generator=g)
    sd["bn.running_mean"] = torch.randn(4, generator=g)
    sd["bn.running_var"] = torch.rand(4, generator=g) + 0.1
    sd["bn.num_batches_tracked"] = torch.tensor(123456789012, dtype=torch.int64)
    base = torch.arange(40, dtype=torch.float32).reshape(5, 8) * 0.25 - 3.0
    # Shared storage: the full tensor, a view with a storage offset and a strided slice.
    sd["shared.base"] = base
    sd["shared.view"] = base[1:4, 2:7]  # offset 10, strides (8, 1): not contiguous
    sd["shared.transposed"] = base.t()  # strides (1, 8)
    sd["half.weight"] = (torch.randn(3, 2, generator=g) * 10).to(torch.float16)
    sd["scalar"] = torch.tensor(2.5, dtype=torch.float32)
    sd["empty"] = torch.zeros(0, 3)
    sd["dtype.f64"] = torch.tensor([1e-300, -2.5, 3.0], dtype=torch.float64)
    sd["dtype.bf16"] = torch.tensor([1.5, -3.0e38, 0.0078125], dtype=torch.bfloat16)
    sd["dtype.i32"] = torch.tensor([[-7, 2**31 - 1]], dtype=torch.int32)
    sd["dtype.i16"] = torch.tensor([-32768, 5], dtype=torch.int16)
    sd["dtype.i8"] = torch.tensor([-128, 127, -1], dtype=torch.int8)
    sd["dtype.u8"] = torch.tensor([0, 200, 255], dtype=torch.uint8)
    sd["dtype.bool"] = torch.tensor([True, False, True])
    sd._metadata = collections.OrderedDict([("", {"version": 1}), ("conv", {"version": 1})])
    return sd


def expected_form(t):
    """What our loader yields: candle has no int8 or bool, so they widen to int16 and uint8."""
    t = t.contiguous().clone()
    if t.dtype == torch.int8:
        return t.to(torch.int16)
    if t.dtype == torch.bool:
        return t.to(torch.uint8)
    return t


def save_legacy(sd, path, location=None):
    if location is None:
        torch.save(sd, path, _use_new_zipfile_serialization=False)
        return
    orig = torch.serialization.location_tag
    torch.serialization.location_tag = lambda storage: location
    try:
        torch.save(sd, path, _use_new_zipfile_serialization=False)
    finally:
        torch.serialization.location_tag = orig


def rezip(src, dst, rename_folder=None, drop=None, replace=None):
    """Copies a torch zip, optionally renaming the top folder, dropping or replacing entries."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            name = info.filename
            rest = name.split("/", 1)[1]
            if drop and rest == drop:
                continue
            data = zin.read(name)
            if replace and rest in replace:
                data = replace[rest]
            if rename_folder:
                name = rename_folder + "/" + rest
            zout.writestr(name, data)


def pickle_reduce_global(module, name, arg):
    """PROTO 2; GLOBAL module name; SHORT_BINUNICODE arg; TUPLE1; REDUCE; STOP -- crafted by hand."""
    a = arg.encode()
    return (b"\x80\x02c" + module.encode() + b"\n" + name.encode() + b"\n"
            + b"\x8c" + bytes([len(a)]) + a + b"\x85R.")


def generate():
    os.makedirs(OUT, exist_ok=True)
    sd = small_state_dict()
    p = lambda n: os.path.join(OUT, n)
    save_legacy(sd, p("small_legacy.pth"))
    save_legacy(sd, p("small_legacy_cuda.pth"), location="cuda:0")
    torch.save(sd, p("small_zip.pth"))
    rezip(p("small_zip.pth"), p("small_zip_renamed.pth"), rename_folder="yolact_base_1_2")
    save_file({k: expected_form(v) for k, v in sd.items()}, p("small_expected.safetensors"))

    legacy = open(p("small_legacy.pth"), "rb").read()
    assert legacy.startswith(LEGACY_MAGIC)
    with open(p("bad_magic.pth"), "wb") as f:
        f.write(legacy[:5] + b"\x00" + legacy[6:])
    for label, cut in (("header", 7), ("main", 200), ("end", len(legacy) - 10)):
        with open(p(f"truncated_legacy_{label}.pth"), "wb") as f:
            f.write(legacy[:cut])
    zbytes = open(p("small_zip.pth"), "rb").read()
    with open(p("truncated_zip.pth"), "wb") as f:
        f.write(zbytes[: len(zbytes) // 2])

    # A legacy file whose main pickle calls os.system: the header pickles are real, the payload
    # is hand-made bytes.
    hdr = io.BytesIO()
    import pickle
    pickle.dump(0x1950A86A20F9469CFC6C, hdr, protocol=2)
    pickle.dump(1001, hdr, protocol=2)
    pickle.dump({"protocol_version": 1001, "little_endian": True,
                 "type_sizes": {"short": 2, "int": 4, "long": 4}}, hdr, protocol=2)
    with open(p("evil_os_system_legacy.pth"), "wb") as f:
        f.write(hdr.getvalue() + pickle_reduce_global("os", "system", "echo pwned"))
    rezip(p("small_zip.pth"), p("evil_eval_zip.pth"),
          replace={"data.pkl": pickle_reduce_global("builtins", "eval", "print('pwned')")})
    rezip(p("small_zip.pth"), p("zip_missing_data.pth"), drop="data/0")
    total = sum(os.path.getsize(p(n)) for n in os.listdir(OUT))
    print(f"wrote fixtures to {OUT}: {total} bytes")


def full_size(cfg, out):
    keys = os.path.join(HERE, "..", "tests", "fixtures", "keys", cfg + ".keys.txt")
    g = torch.Generator().manual_seed(7)
    sd = collections.OrderedDict()
    for line in open(keys):
        name, shape = line.split(" ", 1)
        shape = tuple(int(x) for x in shape.strip().strip("()").split(",") if x.strip())
        if name.endswith("num_batches_tracked"):
            sd[name] = torch.tensor(800000, dtype=torch.int64)
        else:
            sd[name] = torch.randn(shape, generator=g)
    # What the released files carry on top of the model keys (docs/model.md §2.4, §2.9).
    sd["fpn.downsample_layers.2.weight"] = torch.randn(256, 256, 3, 3, generator=g)
    sd["fpn.downsample_layers.2.bias"] = torch.randn(256, generator=g)
    save_legacy(sd, out, location="cuda:0")
    save_file({k: v for k, v in sd.items()}, out + ".expected.safetensors")
    print(f"wrote {out} ({os.path.getsize(out)} bytes) and {out}.expected.safetensors")


def verify_writer(d):
    ok = True
    exp = load_file(os.path.join(d, "expected.safetensors"))
    for name in ("written_legacy.pth", "written_zip.pth"):
        got = torch.load(os.path.join(d, name), weights_only=True)
        assert list(got.keys()) == sorted(exp.keys()) or set(got.keys()) == set(exp.keys()), name
        for k, v in exp.items():
            g = got[k]
            same = g.dtype == v.dtype and g.shape == v.shape and torch.equal(g, v)
            if not same:
                ok = False
                print(f"{name}: {k}: MISMATCH {g.dtype} {tuple(g.shape)} vs {v.dtype} {tuple(v.shape)}")
        print(f"{name}: {len(got)} tensors read by torch.load(weights_only=True) {torch.__version__}")
    print("OK" if ok else "FAILED")
    return ok


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--verify-writer", metavar="DIR")
    ap.add_argument("--full-size", nargs=2, metavar=("CFG", "OUT"))
    a = ap.parse_args()
    if a.full_size:
        full_size(*a.full_size)
        sys.exit(0)
    if a.verify_writer:
        sys.exit(0 if verify_writer(a.verify_writer) else 1)
    generate()
