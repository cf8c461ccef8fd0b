#!/usr/bin/env python3
"""Training speed, ours against the reference, on the CPU, same batch, weights and images:
BENCHMARKS.md's "Training step: ours vs the reference" (issue 12).

    bench_train_step.py --yolact-src DIR [--config yolact_plus_resnet50] [--iters 6] [--warmup 2]
                        [--threads 2] [--bin target/release/yolact] [--json]

The batch is the two 550x550 scenes of tests/fixtures/train (annotations.json: polygons, an RLE
object, a crowd), the weights are the synthetic ones (tools/synth_weights.py, the same values on
both sides), batch 2, so batch norm is frozen on both sides (the reference freezes it below 6 per
GPU; ours too when starting from a checkpoint).

* Ours: `yolact train --config C --init SYNTH.safetensors --batch 2 --no-augment --workers 2
  --lr 1e-4 --iters WARMUP+ITERS --log-every 1` as a child process; images/s per iteration from its
  train.jsonl (the loader's work included), peak RSS from the child's rusage.
* Reference: dbolya/yolact imported from DIR by tools/reference_yolact.py (DCNv2 replaced by
  torchvision's deform_conv2d), one iteration = zero_grad, the train-mode forward, MultiBoxLoss
  (tools/make_train_fixtures.py's call, the one the parity fixtures use), backward and
  torch.optim.SGD(momentum 0.9, weight decay 5e-4) on the ready batch (no data loading counted);
  peak RSS of this process.

Prints the median and the range of images/s over the timed iterations (the first WARMUP are not
counted) and the peak resident memory of each side.
"""

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
FIXTURE = os.path.join(ROOT, "tests", "fixtures", "train")
BATCH = 2


def summary(values):
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "n": len(values)}


def ours(a, work):
    weights = os.path.join(work, "synth.safetensors")
    subprocess.run([sys.executable, os.path.join(HERE, "synth_weights.py"), "--config", a.config,
                    "--out", weights], check=True)
    out = os.path.join(work, "ours")
    cmd = [a.bin, "train", "--config", a.config, "--init", weights,
           "--train", f"{work}/annotations.json:{work}/images", "--out", out,
           "--batch", str(BATCH), "--no-augment", "--workers", "2", "--lr", "1e-4",
           "--iters", str(a.warmup + a.iters), "--log-every", "1", "--save-every", "0",
           "--device", "cpu"]
    env = dict(os.environ, RUST_LOG="warn")
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    rows = [json.loads(l) for l in open(os.path.join(out, "train.jsonl"))]
    ips = [r["images_per_s"] for r in rows if r["iteration"] > a.warmup]
    return {"images_per_s": summary(ips), "peak_rss_mb": peak_kb / 1024,
            "loss_first": rows[0]["total"]}


def reference(a, work):
    import torch

    torch.set_num_threads(a.threads)
    sys.path.insert(0, HERE)
    import make_train_fixtures as F
    import reference_yolact as R

    ns = R.import_reference(a.yolact_src)
    ns.config.set_cfg(a.config + "_config")
    doc = json.load(open(os.path.join(work, "annotations.json")))
    gts = F.ground_truth(ns, doc, work)
    net, cfg = F.build_train(ns, a.config, F.SIZE)
    x = F.inputs(ns, work, doc)
    assert x.shape[0] == BATCH
    opt = torch.optim.SGD(net.parameters(), lr=1e-4, momentum=0.9, weight_decay=5e-4)
    ips, first = [], None
    for i in range(a.warmup + a.iters):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        losses = F.run_loss(ns, net, cfg, net(x), gts)
        total = sum(losses.values())
        total.backward()
        opt.step()
        dt = time.perf_counter() - t0
        if first is None:
            first = float(total.detach())
        if i >= a.warmup:
            ips.append(BATCH / dt)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"images_per_s": summary(ips), "peak_rss_mb": peak_kb / 1024, "loss_first": first,
            "torch": torch.__version__}


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--yolact-src", required=True, help="extracted dbolya/yolact checkout")
    ap.add_argument("--config", default="yolact_plus_resnet50")
    ap.add_argument("--iters", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2, help="torch threads (ours uses every core)")
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "yolact"))
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    if not os.access(a.bin, os.X_OK):
        sys.exit(f"{a.bin}: build first (cargo build --release)")
    with tempfile.TemporaryDirectory() as work:
        shutil.copy(os.path.join(FIXTURE, "annotations.json"), work)
        shutil.copytree(os.path.join(FIXTURE, "images"), os.path.join(work, "images"))
        # Ours first: the reference runs in this process, whose peak RSS it then owns alone.
        result = {"config": a.config, "batch": BATCH, "size": 550,
                  "machine": f"{os.cpu_count()} cores", "ours": ours(a, work),
                  "reference": reference(a, work)}
    if a.json:
        print(json.dumps(result, indent=1))
        return
    for side in ["ours", "reference"]:
        r = result[side]
        s = r["images_per_s"]
        print(f"{side}: {s['median']:.3f} images/s (median of {s['n']}, {s['min']:.3f}-{s['max']:.3f}), "
              f"peak RSS {r['peak_rss_mb']:.0f} MB, first loss {r['loss_first']:.4f}")
    print(f"ours / reference: {result['ours']['images_per_s']['median'] / result['reference']['images_per_s']['median']:.2f}x")


if __name__ == "__main__":
    main()
