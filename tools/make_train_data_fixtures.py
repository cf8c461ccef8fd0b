#!/usr/bin/env python3
"""Fixtures for the training data stage (tests/it/train_data.rs): a tiny COCO-format training set
made here, and what the reference's own `COCODetection.pull_item` returns for it with the
deterministic train transform (`SSDAugmentation` with every augment_* flag
off, i.e. ConvertFromInts, ToAbsoluteCoords, Resize, Pad, ToPercentCoords, PrepareMasks,
BackboneTransform). Also OpenCV's float BGR<->HSV on a few pixels, for the augmentation's formulas.

The reference is imported unmodified from an extracted dbolya/yolact (see reference_yolact.py).
Needs numpy, torch, pycocotools, safetensors and OpenCV (`pip install opencv-python-headless`).

    python3 tools/make_train_data_fixtures.py /tmp/yolact_ref tests/fixtures/train_data
"""

import argparse
import importlib.metadata
import json
import os
import platform
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import reference_yolact as R  # noqa: E402

# Every how many pixels the transformed image is stored (the full 550x550x3 floats would be
# 3.6 MB per image); 7 is coprime with the resize ratios used, so all tap phases are covered.
IMAGE_STRIDE = 7
SEED = 20261202


def texture(rng, h, w):
    """A BGR uint8 image that compresses well as PNG yet has edges at many positions: 16x16 px
    blocks of random colour over a gradient, plus a few hard-edged discs."""
    blocks = rng.integers(0, 256, size=((h + 15) // 16, (w + 15) // 16, 3))
    img = np.repeat(np.repeat(blocks, 16, axis=0), 16, axis=1)[:h, :w].astype(np.float64)
    yy, xx = np.mgrid[0:h, 0:w]
    # The gradient in steps of 16 levels: still edges everywhere, a third of the PNG size.
    ramp = lambda t: np.floor(t * 16) * 16  # noqa: E731
    img = 0.5 * img + 0.5 * np.stack([ramp(xx / w), ramp(yy / h), 128 + 0 * xx], -1)
    for _ in range(3):
        cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(10, 60)
        img[(xx - cx) ** 2 + (yy - cy) ** 2 < r * r] = rng.integers(0, 256, size=3)
    return np.clip(img, 0, 255).astype(np.uint8)


def disc_mask(h, w, cx, cy, r):
    yy, xx = np.mgrid[0:h, 0:w]
    return ((xx - cx) ** 2 + (yy - cy) ** 2 < r * r).astype(np.uint8)


def uncompressed_rle(mask):
    """COCO's list form of `counts` (column-major runs starting with zeros)."""
    flat = mask.flatten(order="F")
    counts, cur, run = [], 0, 0
    for v in flat:
        if v != cur:
            counts.append(run)
            run, cur = 0, v
        run += 1
    counts.append(run)
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": [int(c) for c in counts]}


def compressed_rle(mask):
    from pycocotools import mask as mask_util

    r = mask_util.encode(np.asfortranarray(mask))
    return {"size": [int(x) for x in r["size"]], "counts": r["counts"].decode("ascii")}


def bbox_of(mask):
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]


def build_set(out, rng):
    """Writes ann.json and images/; returns the annotation dict."""
    import cv2

    os.makedirs(os.path.join(out, "images"), exist_ok=True)
    # Listed unsorted and with sparse ids: labels come from the ids sorted (1, 3, 7 -> 0, 1, 2).
    categories = [{"id": 7, "name": "kite"}, {"id": 1, "name": "person"}, {"id": 3, "name": "car"}]
    images, anns = [], []
    aid = [100]

    def add(image_id, cat, seg, bbox, crowd=0):
        aid[0] += 1
        anns.append({"id": aid[0], "image_id": image_id, "category_id": cat, "segmentation": seg,
                     "bbox": bbox, "area": bbox[2] * bbox[3], "iscrowd": crowd})

    sizes = {1: (240, 320), 2: (550, 550), 3: (100, 80), 4: (60, 90)}
    for image_id, (h, w) in sizes.items():
        name = f"img{image_id}.png"
        cv2.imwrite(os.path.join(out, "images", name), texture(rng, h, w))
        images.append({"id": image_id, "file_name": name, "width": w, "height": h})

    # Image 1 (320x240, resized to 550x550): the crowd first in the file, then a triangle, a
    # two-part polygon, a compressed RLE disc and a tiny 2x2 px square.
    crowd = disc_mask(240, 320, 250, 60, 40)
    add(1, 3, uncompressed_rle(crowd), bbox_of(crowd), crowd=1)
    tri = [30.5, 40.0, 150.25, 60.0, 80.0, 200.5]
    add(1, 1, [tri], [30.5, 40.0, 119.75, 160.5])
    add(1, 7, [[200, 150, 260, 150, 260, 210, 200, 210], [270, 200, 300, 200, 285, 230]],
        [200.0, 150.0, 100.0, 80.0])
    disc = disc_mask(240, 320, 120, 170, 35.5)
    add(1, 3, compressed_rle(disc), bbox_of(disc))
    add(1, 1, [[10, 10, 12, 10, 12, 12, 10, 12]], [10.0, 10.0, 2.0, 2.0])
    # Image 2 (550x550, Resize is the identity): a polygon, an RLE and a crowd given as RLE.
    add(2, 7, [[100, 100, 300, 120, 250, 320, 90, 280]], [90.0, 100.0, 210.0, 220.0])
    d2 = disc_mask(550, 550, 400, 400, 80)
    add(2, 1, compressed_rle(d2), bbox_of(d2))
    c2 = disc_mask(550, 550, 100, 450, 60)
    add(2, 3, compressed_rle(c2), bbox_of(c2), crowd=1)
    # Image 3: crowds only (skipped; the reference would crash in the loss). Image 4: no
    # annotations (never sampled).
    c3 = disc_mask(100, 80, 40, 50, 20)
    add(3, 1, uncompressed_rle(c3), bbox_of(c3), crowd=1)
    ann = {"images": images, "annotations": anns, "categories": categories}
    with open(os.path.join(out, "ann.json"), "w") as f:
        json.dump(ann, f)
    return ann


def run_reference(ns, out, ann):
    import torch
    from pycocotools import mask as mask_util
    from safetensors.numpy import save_file

    cfg = ns.config.cfg
    ns.config.set_cfg("yolact_resnet50_config")
    cats = sorted(c["id"] for c in ann["categories"])
    # The reference's own label map mechanism, filled as TrainSet derives it (sorted ids).
    cfg.dataset = ns.config.dataset_base.copy({
        "class_names": tuple(c["name"] for c in sorted(ann["categories"], key=lambda c: c["id"])),
        "label_map": {cid: i + 1 for i, cid in enumerate(cats)},
    })
    for flag in ("augment_photometric_distort", "augment_expand", "augment_random_sample_crop",
                 "augment_random_mirror", "augment_random_flip"):
        setattr(cfg, flag, False)
    import data.coco as coco  # the reference's module (on sys.path after import_reference)

    aug = ns.augmentations
    transform = aug.SSDAugmentation(aug.MEANS)
    ds = coco.COCODetection(os.path.join(out, "images"), os.path.join(out, "ann.json"),
                            transform=transform)
    tensors, samples = {}, []
    for i in range(len(ds)):
        image_id = ds.ids[i]
        if all(a["iscrowd"] for a in ann["annotations"] if a["image_id"] == image_id):
            continue  # crowd-only: pull_item works but the loss crashes; TrainSet skips it
        img, target, masks, h, w, num_crowds = ds.pull_item(i)
        img = img.numpy()
        tensors[f"image{image_id}"] = np.ascontiguousarray(img[:, ::IMAGE_STRIDE, ::IMAGE_STRIDE])
        # detection_collate's cast, then what TrainSet holds.
        target = torch.from_numpy(target).float().numpy()
        samples.append({
            "image_id": int(image_id),
            "boxes": target[:, :4].tolist(),
            "labels": [int(v) for v in target[:, 4]],
            "num_crowds": int(num_crowds),
            "masks": [compressed_rle(np.ascontiguousarray(m))["counts"] for m in masks],
            "mask_size": list(masks.shape[1:]),
            "image_sum": [float(img[c].astype(np.float64).sum()) for c in range(3)],
        })
    save_file(tensors, os.path.join(out, "images.safetensors"))
    return samples, [int(i) for i in ds.ids]


def hsv_samples(rng):
    """OpenCV float32 BGR->HSV->BGR on pixels in and beyond 0-255 (brightness and saturation
    push them there), incl. greys and exact primaries."""
    import cv2

    px = rng.uniform(-40, 300, size=(200, 3)).astype(np.float32)
    px = np.concatenate([px, np.array([[0, 0, 0], [10, 10, 10], [255, 0, 0], [0, 255, 0],
                                       [0, 0, 255], [-5, 3, 7]], np.float32)])
    hsv = cv2.cvtColor(px[None], cv2.COLOR_BGR2HSV)[0]
    # Saturation > 1 and hues near the wrap, as RandomSaturation / RandomHue leave them.
    hsv2 = hsv.copy()
    hsv2[:, 1] *= rng.uniform(0.5, 1.5, size=len(hsv2)).astype(np.float32)
    hsv2[:, 0] = np.mod(hsv2[:, 0] + rng.uniform(-18, 18, size=len(hsv2)).astype(np.float32), 360)
    back = cv2.cvtColor(hsv2[None], cv2.COLOR_HSV2BGR)[0]
    return {"bgr": px.tolist(), "hsv": hsv.tolist(), "hsv_in": hsv2.tolist(), "bgr_out": back.tolist()}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("yolact_src", help="extracted dbolya/yolact")
    ap.add_argument("out", help="fixture directory")
    args = ap.parse_args()
    import cv2
    import torch

    rng = np.random.default_rng(SEED)
    ns = R.import_reference(args.yolact_src)
    ann = build_set(args.out, rng)
    samples, ids = run_reference(ns, args.out, ann)
    expected = {
        "versions": {"python": platform.python_version(), "numpy": np.__version__,
                     "torch": torch.__version__, "opencv": cv2.__version__,
                     "pycocotools": importlib.metadata.version("pycocotools"),
                     "safetensors": importlib.metadata.version("safetensors")},
        "image_stride": IMAGE_STRIDE,
        "reference_ids": ids,
        "samples": samples,
        "hsv": hsv_samples(rng),
    }
    with open(os.path.join(args.out, "expected.json"), "w") as f:
        json.dump(expected, f)


if __name__ == "__main__":
    main()
