#!/usr/bin/env python3
"""Runs the reference YOLACT's training loss (MultiBoxLoss) on CPU with the synthetic weights and
writes the loss parity fixtures of tests/fixtures/train (see its README).

    make_train_fixtures.py --yolact-src DIR --out tests/fixtures/train [--loss-size 96]

Nothing of the reference is copied: it is imported from DIR by tools/reference_yolact.py (DCNv2
replaced by torchvision's deform_conv2d), and the synthetic weights are tools/synth_weights.py's.

Files written:
  images/train_{0,1}.png, annotations.json   two generated 550x550 scenes, COCO format: a crowd
                                            region listed first, polygons, an RLE object, a tiny one
  gt.safetensors          the ground truth as the reference's pull_item builds it (crowds last,
                          label -1, labels after the label map, 0/1 masks as row-major run lengths)
  loss_<cfg>.safetensors  level (a): the reference network's train-mode outputs at --loss-size
                          (loc, conf, coef = mask before tanh, proto, segm, priors), the loss terms,
                          and the gradients of the total w.r.t. those outputs (loc/conf/coef as the
                          rows with a non-zero gradient, proto and segm dense); for ++ also the
                          mask-IoU net's parameter gradients
  step_<cfg>.safetensors  level (b): the full train step at 550: loss terms, and per parameter
                          (state-dict key) its gradient norm, the whole gradient when it has at
                          most FULL_MAX elements, and a count sketch of it (SKETCH_BUCKETS buckets
                          for the larger ones, CHECK_BUCKETS for the whole ones)
  synth_train_only.json   the training-only synthetic tensors (semantic_seg_conv.*) the reference
                          loaded, as sample bit patterns and sums (the format of
                          tests/fixtures/parity/synth_values.json), for the Rust generator test
  versions.json
"""

import argparse
import importlib.metadata
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

SIZE = 550
CONFIGS = ["yolact_resnet50", "yolact_plus_resnet50"]
# Level (b) gradients (README "Level (b)" says why): tensors of at most FULL_MAX elements are
# stored whole (2^15: every bias, the heads' small convs, the first stages' 1x1 convs; 2.2 MB for
# both configs); the larger ones as a count sketch of SKETCH_BUCKETS f64 buckets (8 KB each), whose
# sum of squared differences estimates ||ours - ref||^2 without bias (relative spread of the
# norm ~ 1/sqrt(2 * 1024) = 2.2%). The whole ones get a CHECK_BUCKETS sketch too, so that the Rust
# test can check its sketch generator against this one on known tensors.
FULL_MAX = 1 << 15
SKETCH_BUCKETS = 1024
CHECK_BUCKETS = 64
# Buckets and signs come from the synthetic weights' counter stream under this key prefix (a
# stream of its own: the weights of `key` use the stream of `key`, which the gradients depend on).
SKETCH_SALT = "sketch:"
TERMS = ["B", "M", "C", "I", "S"]


# ----------------------------------------------------------------------------------------------
# Scenes


def ellipse_poly(cx, cy, rx, ry, n=24, phase=0.0):
    pts = []
    for k in range(n):
        a = phase + 2 * np.pi * k / n
        pts += [float(cx + rx * np.cos(a)), float(cy + ry * np.sin(a))]
    return pts


def rle_row_runs(mask):
    """Row-major run lengths of a 0/1 mask, starting with a (possibly empty) run of zeros."""
    flat = mask.reshape(-1).astype(np.uint8)
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat[0] == 1:
        runs = [0] + runs
    return runs


def scenes():
    """Two images' objects: (category id, kind, geometry). Crowd first in each list, as a json
    from the wild may have it (the loss needs it last: pull_item moves it)."""
    return [
        [
            ("crowd", 1, {"rect": (330, 300, 200, 210)}),
            ("poly", 1, {"poly": [ellipse_poly(170, 190, 80, 110)]}),
            ("poly", 3, {"poly": [[300, 60, 470, 60, 470, 170, 300, 170]]}),
            ("poly", 44, {"poly": [[60, 470, 72, 470, 72, 481, 60, 481]]}),  # tiny: 12x11 px
            ("rle", 18, {"ellipse": (420, 400, 60, 45)}),
        ],
        [
            ("crowd", 1, {"rect": (20, 20, 160, 140)}),
            ("poly", 62, {"poly": [ellipse_poly(330, 330, 120, 90, phase=0.3)]}),
            ("poly", 1, {"poly": [[400, 40, 520, 40, 520, 260, 400, 260],
                                  [430, 270, 490, 270, 490, 300, 430, 300]]}),  # two parts
            ("rle", 17, {"ellipse": (120, 430, 70, 50)}),
            ("poly", 47, {"poly": [[250, 120, 259, 120, 259, 128, 250, 128]]}),  # tiny: 9x8 px
        ],
    ]


def build_dataset(out_dir, categories):
    """The two scenes as PNGs and a COCO json listing `categories` [(id, name)]."""
    from PIL import Image
    from pycocotools import mask as mask_util

    os.makedirs(os.path.join(out_dir, "images"), exist_ok=True)
    images, anns = [], []
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    ann_id = 1
    for i, objs in enumerate(scenes()):
        img = np.stack([60 + 80 * xx / SIZE, 90 + 60 * yy / SIZE,
                        140 - 50 * (xx + yy) / (2 * SIZE)], -1)
        # Mild texture (a deterministic ripple, not noise: PNG keeps it small).
        img += (4 * np.sin(xx / 7.0 + i) * np.cos(yy / 11.0))[:, :, None]
        for kind, cat, geo in objs:
            if kind == "crowd":
                x, y, w, h = geo["rect"]
                m = np.zeros((SIZE, SIZE), np.uint8)
                m[y:y + h, x:x + w] = (((xx[y:y + h, x:x + w] // 9) + (yy[y:y + h, x:x + w] // 9)) % 2 == 0)
                rle = mask_util.encode(np.asfortranarray(m))
                seg = {"size": [SIZE, SIZE], "counts": rle["counts"].decode("ascii")}
                crowd = 1
            elif kind == "rle":
                cx, cy, rx, ry = geo["ellipse"]
                m = (((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1).astype(np.uint8)
                # Uncompressed RLE (counts as a list, column-major), what COCO uses for some objects.
                fl = m.reshape(-1, order="F")
                change = np.flatnonzero(np.diff(fl)) + 1
                runs = np.diff(np.concatenate([[0], change, [fl.size]])).tolist()
                if fl[0] == 1:
                    runs = [0] + runs
                seg = {"size": [SIZE, SIZE], "counts": [int(r) for r in runs]}
                crowd = 0
            else:
                seg = geo["poly"]
                crowd = 0
            m = ann_mask(seg, SIZE, SIZE)
            colour = np.array([(cat * 53) % 255, (cat * 97) % 255, (cat * 31 + 80) % 255], np.float32)
            img[m > 0] = 0.3 * img[m > 0] + 0.7 * colour
            box = mask_util.toBbox(mask_util.encode(np.asfortranarray(m))).tolist()
            anns.append({"id": ann_id, "image_id": i + 1, "category_id": cat, "iscrowd": crowd,
                         "segmentation": seg, "area": float(m.sum()), "bbox": box})
            ann_id += 1
        name = f"train_{i}.png"
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(os.path.join(out_dir, "images", name),
                                                                    optimize=True)
        images.append({"id": i + 1, "file_name": name, "width": SIZE, "height": SIZE})
    # All of COCO's categories, as COCO's own files list them: a loader that maps the file's sorted
    # category ids to contiguous labels (ours) then gives the reference's COCO_LABEL_MAP - 1.
    doc = {"images": images, "annotations": anns,
           "categories": [{"id": c, "name": n} for c, n in categories]}
    with open(os.path.join(out_dir, "annotations.json"), "w") as f:
        json.dump(doc, f)
    return doc


def ann_mask(seg, h, w):
    """pycocotools' annToMask for one segmentation."""
    from pycocotools import mask as mask_util

    if isinstance(seg, list):
        rle = mask_util.merge(mask_util.frPyObjects(seg, h, w))
    elif isinstance(seg["counts"], list):
        rle = mask_util.frPyObjects(seg, h, w)
    else:
        rle = seg
    return mask_util.decode(rle)


def ground_truth(ns, doc, out_dir):
    """Per image what the reference's pull_item + detection_collate give the loss with the
    deterministic transform at 550 (Resize and Pad are identities there): non-crowd annotations
    first in json order, then crowds with label -1; boxes xywh -> relative x1y1x2y2 (f64, then
    f32 at collate); masks as float 0/1."""
    label_map = ns.config.cfg.dataset.label_map
    gts, tensors = [], {}
    for i, im in enumerate(doc["images"]):
        anns = [a for a in doc["annotations"] if a["image_id"] == im["id"]]
        normal = [a for a in anns if not a["iscrowd"]]
        crowd = [a for a in anns if a["iscrowd"]]
        rows, masks = [], []
        for a in normal + crowd:
            x, y, w, h = a["bbox"]
            lab = -1 if a["iscrowd"] else label_map[a["category_id"]] - 1
            rows.append([x / SIZE, y / SIZE, (x + w) / SIZE, (y + h) / SIZE, lab])
            masks.append(ann_mask(a["segmentation"], SIZE, SIZE))
        target = torch.tensor(np.array(rows, np.float64)).float()
        m = torch.from_numpy(np.stack(masks)).float()
        gts.append((target, m, len(crowd)))
        tensors[f"boxes_{i}"] = target[:, :4].contiguous()
        tensors[f"labels_{i}"] = target[:, 4].long().contiguous()
        tensors[f"num_crowds_{i}"] = torch.tensor([len(crowd)], dtype=torch.int64)
        runs = []
        for mk in masks:
            r = rle_row_runs(mk)
            runs.append(len(r))
            runs += r
        # Per mask: its run count, then its runs (row-major, zeros first).
        tensors[f"mask_runs_{i}"] = torch.tensor(runs, dtype=torch.int64)
    from safetensors.torch import save_file

    save_file(tensors, os.path.join(out_dir, "gt.safetensors"),
              metadata={"images": "2", "size": str(SIZE)})
    return gts


# ----------------------------------------------------------------------------------------------
# Reference runs


def build_train(ns, name, max_size):
    net, _ = R.build(ns, name, S.DEFAULT_SEED)
    cfg = ns.config.cfg
    # Batch 2 < 6: train.py freezes BN (batch per GPU < 6); the overridden train() applies it.
    cfg.freeze_bn = True
    # Priors, FastBaseTransform and the proto size follow max_size; nothing in the constructor
    # depends on it (priors are made lazily in the forward).
    cfg.max_size = max_size
    net.train()
    assert not any(m.training for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d))
    return net, cfg


def inputs(ns, out_dir, doc):
    imgs = [R.load_bgr(os.path.join(out_dir, "images", im["file_name"])) for im in doc["images"]]
    x = torch.from_numpy(np.stack(imgs)).float()
    return ns.augmentations.FastBaseTransform()(x)


def capture_coef(ns, cfg):
    """Records the coefficient head's pre-tanh outputs (per level) by wrapping the activation the
    PredictionModule applies."""
    seen = []
    act = cfg.mask_proto_coeff_activation

    def wrapped(x):
        seen.append(x)
        return act(x)

    cfg.mask_proto_coeff_activation = wrapped
    return seen, act


def run_loss(ns, net, cfg, preds, gts):
    from layers.modules.multibox_loss import MultiBoxLoss

    crit = MultiBoxLoss(num_classes=cfg.num_classes, pos_threshold=cfg.positive_iou_threshold,
                        neg_threshold=cfg.negative_iou_threshold, negpos_ratio=cfg.ohem_negpos_ratio)
    targets = [t.clone() for t, _, _ in gts]
    masks = [m.clone() for _, m, _ in gts]
    crowds = [c for _, _, c in gts]
    return crit(net, preds, targets, masks, crowds)


def positives_and_cut(ns, cfg, preds, gts):
    """Per image positive counts and the OHEM cut gap: recomputes the match with the
    reference's own `match` and ranks with its `log_sum_exp`."""
    from layers.box_utils import match, log_sum_exp

    priors = preds["priors"]
    B, P = preds["loc"].shape[:2]
    loc_t = torch.zeros(B, P, 4)
    conf_t = torch.zeros(B, P, dtype=torch.long)
    idx_t = torch.zeros(B, P, dtype=torch.long)
    for b, (t, _, nc) in enumerate(gts):
        truths, labels = t[:, :4], t[:, 4].long()
        crowd = None
        if nc > 0:
            crowd, truths, labels = truths[-nc:], truths[:-nc], labels[:-nc]
        match(cfg.positive_iou_threshold, cfg.negative_iou_threshold, truths, priors, labels, crowd,
              loc_t, conf_t, idx_t, b, preds["loc"][b])
    pos = conf_t > 0
    conf = preds["conf"].detach().reshape(-1, cfg.num_classes)
    rank = (log_sum_exp(conf) - conf[:, 0]).view(B, -1)
    rank[pos] = 0
    rank[conf_t < 0] = 0
    gaps = []
    for b in range(B):
        n = int(min(3 * int(pos[b].sum()), P - 1))
        v = rank[b].sort(descending=True).values
        gaps.append(float(v[n - 1] - v[n]))
    return [int(p) for p in pos.sum(1)], gaps, int((conf_t < 0).sum())


def level_a(ns, name, gts, doc, out_dir, size, proto_size):
    from safetensors.torch import save_file

    net, cfg = build_train(ns, name, size)
    x = inputs(ns, out_dir, doc)
    seen, act = capture_coef(ns, cfg)
    try:
        with torch.no_grad():
            out = net(x)
    finally:
        cfg.mask_proto_coeff_activation = act
    coef = torch.cat(seen, 1)
    assert torch.equal(torch.tanh(coef), out["mask"])
    if cfg.use_maskiou and proto_size != size:
        # The mask-IoU net's five valid stride-2 convs need an input of at least 63 px, so the
        # prototypes come from a second run of the same network at proto_size. The loss couples
        # priors and prototypes only through the coefficients, so any proto size is a valid input.
        cfg.max_size = proto_size
        with torch.no_grad():
            out["proto"] = net(inputs(ns, out_dir, doc))["proto"]
        cfg.max_size = size
    # The loss runs on leaves holding the network's outputs, so the gradients of the total w.r.t.
    # each output are the leaves' .grad.
    leaves = {k: out[k].detach().clone().requires_grad_(True) for k in ("loc", "conf", "proto", "segm")}
    leaves["coef"] = coef.detach().clone().requires_grad_(True)
    preds = {"loc": leaves["loc"], "conf": leaves["conf"], "mask": torch.tanh(leaves["coef"]),
             "priors": out["priors"], "proto": leaves["proto"], "segm": leaves["segm"]}
    net.zero_grad(set_to_none=True)
    losses = run_loss(ns, net, cfg, preds, gts)
    total = sum(losses.values())
    total.backward()
    npos, gaps, nneutral = positives_and_cut(ns, cfg, preds, gts)
    assert max(npos) <= cfg.masks_to_train, f"{name}: {npos} positives would subsample (a randperm draw we cannot reproduce)"
    t = {"priors": out["priors"].contiguous()}
    for k, v in leaves.items():
        t[k] = v.detach().contiguous()
    t["grad_segm"] = leaves["segm"].grad.contiguous()
    # Zero rows (pixels outside every crop, priors not selected) are left out.
    for k in ("loc", "conf", "coef", "proto"):
        g = leaves[k].grad.reshape(-1, leaves[k].shape[-1])
        rows = torch.nonzero(g.abs().sum(1) > 0).flatten()
        t[f"grad_{k}_rows"] = rows.contiguous()
        t[f"grad_{k}"] = g[rows].contiguous()
    for k, v in losses.items():
        t[f"loss_{k}"] = v.detach().reshape(1)
    t["loss_total"] = total.detach().reshape(1)
    if cfg.use_maskiou:
        for k, p in net.maskiou_net.named_parameters():
            key = "maskiou_net." + k
            if p.grad is not None:
                t[f"grad_param/{key}"] = p.grad.contiguous()
    meta = {"config": name, "max_size": str(size), "seed": hex(S.DEFAULT_SEED),
            "terms": ",".join(losses.keys()), "positives": json.dumps(npos),
            "ohem_cut_gap": json.dumps(gaps), "neutrals": str(nneutral),
            "proto_shape": json.dumps(list(out["proto"].shape))}
    save_file(t, os.path.join(out_dir, f"loss_{name}.safetensors"), metadata=meta)
    print(f"(a) {name} @ {size}: priors {out['priors'].shape[0]}, positives {npos}, cut gaps {gaps}, "
          + ", ".join(f"{k}={float(v):.6g}" for k, v in losses.items()), flush=True)


def sketch(key, grad, buckets, seed):
    """Count sketch of a flat gradient: bucket b sums s_i * g_i over the elements i with
    h(i) = b, where z_i = counter_bits(SKETCH_SALT + key)[i], h(i) = ((z_i >> 32) * buckets) >> 32
    and s_i = +1 if z_i is even, else -1. f64 sums in index order (np.bincount's)."""
    g = grad.detach().reshape(-1).double().numpy()
    z = S.counter_bits(SKETCH_SALT + key, g.size, seed)
    b = ((z >> np.uint64(32)) * np.uint64(buckets)) >> np.uint64(32)
    sign = 1.0 - 2.0 * (z & np.uint64(1)).astype(np.float64)
    return torch.from_numpy(np.bincount(b.astype(np.int64), weights=sign * g, minlength=buckets))


def level_b(ns, name, gts, doc, out_dir):
    from safetensors.torch import save_file

    net, cfg = build_train(ns, name, SIZE)
    x = inputs(ns, out_dir, doc)
    # The training transform at 550 (ConvertFromInts, Resize = identity, BackboneTransform) gives
    # the same f32 values as FastBaseTransform's same-size interpolate + normalise; checked here.
    mean = np.array(ns.augmentations.MEANS, np.float32)
    std = np.array(ns.augmentations.STD, np.float32)
    for i, im in enumerate(doc["images"]):
        bgr = R.load_bgr(os.path.join(out_dir, "images", im["file_name"])).astype(np.float32)
        ref = ((bgr - mean) / std)[:, :, (2, 1, 0)].transpose(2, 0, 1)
        assert np.array_equal(ref, x[i].numpy()), "FastBaseTransform != BackboneTransform at 550"
    net.zero_grad(set_to_none=True)
    preds = net(x)
    losses = run_loss(ns, net, cfg, preds, gts)
    total = sum(losses.values())
    total.backward()
    npos, gaps, _ = positives_and_cut(ns, cfg, preds, gts)
    assert max(npos) <= cfg.masks_to_train, f"{name}: {npos} positives would subsample (a randperm draw we cannot reproduce)"
    t, n_grad, n_full = {}, 0, 0
    for k, p in net.named_parameters():
        if p.grad is None:
            continue
        n_grad += 1
        g = p.grad.detach()
        t[f"norm/{k}"] = g.double().norm().reshape(1)
        if g.numel() <= FULL_MAX:
            t[f"grad/{k}"] = g.contiguous()
            t[f"sketch/{k}"] = sketch(k, g, CHECK_BUCKETS, S.DEFAULT_SEED)
            n_full += 1
        else:
            t[f"sketch/{k}"] = sketch(k, g, SKETCH_BUCKETS, S.DEFAULT_SEED)
    for k, v in losses.items():
        t[f"loss_{k}"] = v.detach().reshape(1)
    t["loss_total"] = total.detach().reshape(1)
    meta = {"config": name, "max_size": str(SIZE), "seed": hex(S.DEFAULT_SEED),
            "full_max": str(FULL_MAX), "sketch_salt": SKETCH_SALT,
            "sketch_seed": hex(S.DEFAULT_SEED), "terms": ",".join(losses.keys()),
            "grad_tensors": str(n_grad), "grad_whole": str(n_full), "positives": json.dumps(npos), "ohem_cut_gap": json.dumps(gaps)}
    save_file(t, os.path.join(out_dir, f"step_{name}.safetensors"), metadata=meta)
    print(f"(b) {name} @ {SIZE}: grad tensors {n_grad} ({n_full} whole), positives {npos}, cut gaps {gaps}, "
          + ", ".join(f"{k}={float(v):.6g}" for k, v in losses.items()), flush=True)


def synth_train_only(ns, configs, out_dir):
    """The training-only keys (semantic_seg_conv.*) of the synthetic state dict the reference
    loads, in synth_values.json's format: four sample elements as f32 bit patterns, f64 sum, sum
    of squares, min and max."""
    doc = {"seed": S.DEFAULT_SEED, "configs": {}}
    for name in configs:
        _, sd = R.build(ns, name, S.DEFAULT_SEED)
        entries = []
        for key, v in sd.items():
            if not key.startswith("semantic_seg_conv."):
                continue
            t = v.numpy().reshape(-1)
            n = t.shape[0]
            idx = sorted({0, n - 1, n // 2, (n * 7) // 13})
            d = t.astype(np.float64)
            entries.append({"key": key, "shape": list(v.shape),
                            "samples": [[i, int(t[i:i + 1].view(np.uint32)[0])] for i in idx],
                            "sum": float(np.sum(d)), "sum_sq": float(np.sum(d * d)),
                            "min": float(d.min()), "max": float(d.max())})
        assert len(entries) == 2, f"{name}: {[e['key'] for e in entries]}"
        doc["configs"][name] = entries
    with open(os.path.join(out_dir, "synth_train_only.json"), "w") as f:
        json.dump(doc, f, separators=(",", ":"))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--yolact-src", required=True, help="extracted dbolya/yolact checkout")
    ap.add_argument("--out", required=True, help="output folder (tests/fixtures/train)")
    ap.add_argument("--loss-size", type=int, default=96,
                    help="max_size the reference network runs at for level (a) (keeps outputs small)")
    ap.add_argument("--proto-size", type=int, default=256,
                    help="max_size of the run whose prototypes level (a) uses for configs with a "
                         "mask-IoU net (its input must be >= 63 px)")
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--skip-step", action="store_true", help="level (a) only")
    ap.add_argument("--skip-loss", action="store_true",
                    help="no level (a): keep the loss_<cfg> files there are (gt.safetensors is "
                         "still written: its tensors do not depend on the machine)")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    ns = R.import_reference(a.yolact_src)
    ns.config.set_cfg(CONFIGS[0] + "_config")
    os.makedirs(a.out, exist_ok=True)
    cfg = ns.config.cfg
    label_map = cfg.dataset.label_map
    categories = [(c, cfg.dataset.class_names[label_map[c] - 1]) for c in sorted(label_map)]
    doc = build_dataset(a.out, categories)
    gts = ground_truth(ns, doc, a.out)
    if not a.skip_loss:
        for name in a.configs.split(","):
            level_a(ns, name, gts, doc, a.out, a.loss_size, a.proto_size)
    if not a.skip_step:
        for name in a.configs.split(","):
            level_b(ns, name, gts, doc, a.out)
    synth_train_only(ns, a.configs.split(","), a.out)
    import cv2  # the reference's data package imports it
    import PIL
    import safetensors
    import torchvision

    versions = {"python": platform.python_version(), "torch": torch.__version__,
                "torchvision": torchvision.__version__, "numpy": np.__version__,
                "pycocotools": importlib.metadata.version("pycocotools"),
                "safetensors": safetensors.__version__, "Pillow": PIL.__version__,
                "opencv": cv2.__version__,
                "threads": a.threads}
    with open(os.path.join(a.out, "versions.json"), "w") as f:
        json.dump(versions, f, indent=1)


if __name__ == "__main__":
    main()
