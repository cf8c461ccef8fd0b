#!/usr/bin/env python3
"""Make the COCO evaluation fixtures under tests/fixtures/cocoeval/ with pycocotools.

Usage: python3 tools/make_cocoeval_fixtures.py [OUT_DIR]

A seeded synthetic ground truth (varied image sizes, non-contiguous category ids, polygons incl.
multi-part objects and vertices outside the image, compressed and uncompressed RLE objects,
iscrowd regions, small/medium/large areas, an image without annotations) and several result files
(bbox only, masks only, both, empty) are written together with the twelve COCOeval stats that
pycocotools computes for each, so the Rust implementation can be checked against it.
"""

import contextlib
import io
import json
import math
import os
import sys

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

STAT_NAMES = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]
IMAGE_SIZES = [(64, 48), (120, 100), (200, 150), (160, 200), (90, 90), (256, 192), (50, 70), (180, 120)]
CATEGORIES = [1, 3, 7, 12, 18]  # 18 never appears in the ground truth


def star_polygon(rng, cx, cy, radius, n):
    angles = np.sort(rng.uniform(0, 2 * math.pi, n))
    radii = radius * rng.uniform(0.5, 1.0, n)
    xs = cx + radii * np.cos(angles)
    ys = cy + radii * np.sin(angles)
    return [round(float(v), 2) for xy in zip(xs, ys) for v in xy]


def poly_rle(polys, h, w):
    return mask_utils.merge(mask_utils.frPyObjects(polys, h, w))


def blob_mask(rng, h, w, cx, cy, rx, ry):
    yy, xx = np.mgrid[0:h, 0:w]
    noise = rng.uniform(0.8, 1.2)
    m = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= noise
    return np.asfortranarray(m.astype(np.uint8))


def uncompressed_counts(mask):
    flat = mask.flatten(order="F")
    counts, cur, run = [], 0, 0
    for v in flat:
        if v != cur:
            counts.append(run)
            run, cur = 0, v
        run += 1
    counts.append(run)
    return counts


def make_gt(rng):
    images, anns = [], []
    ann_id = 1
    for img_idx, (w, h) in enumerate(IMAGE_SIZES):
        img_id = 100 + img_idx * 7  # non-contiguous, not sorted by file position below
        images.append({"id": img_id, "width": w, "height": h, "file_name": f"img{img_idx}.jpg"})
        if img_idx == 6:
            continue  # an image with no annotations at all
        n_obj = int(rng.integers(3, 8))
        for _ in range(n_obj):
            cat = int(rng.choice(CATEGORIES[:4]))
            kind = rng.choice(["poly", "poly", "poly", "multi", "rle", "urle"])
            radius = float(rng.choice([3.0, 6.0, 12.0, 25.0, 45.0, 70.0, 100.0, 130.0]))
            radius = min(radius, max(w, h) / 2)
            cx, cy = float(rng.uniform(0, w)), float(rng.uniform(0, h))
            if kind == "poly":
                segm = [star_polygon(rng, cx, cy, radius, int(rng.integers(3, 12)))]
                rle = poly_rle(segm, h, w)
            elif kind == "multi":
                segm = [star_polygon(rng, cx, cy, radius * 0.6, int(rng.integers(3, 9))),
                        star_polygon(rng, cx + radius, cy + radius * 0.5, radius * 0.5, int(rng.integers(3, 9)))]
                rle = poly_rle(segm, h, w)
            else:
                m = blob_mask(rng, h, w, cx, cy, radius, radius * rng.uniform(0.5, 1.5))
                if m.sum() == 0:
                    m[int(min(cy, h - 1)), int(min(cx, w - 1))] = 1
                rle = mask_utils.encode(m)
                if kind == "rle":
                    segm = {"size": [h, w], "counts": rle["counts"].decode("ascii")}
                else:
                    segm = {"size": [h, w], "counts": uncompressed_counts(m)}
            area = float(mask_utils.area(rle))
            if area == 0:
                continue
            bbox = [float(v) for v in mask_utils.toBbox(rle)]
            anns.append({"id": ann_id, "image_id": img_id, "category_id": cat, "segmentation": segm,
                         "area": area, "bbox": bbox, "iscrowd": 0})
            ann_id += 1
        if img_idx in (1, 5):
            # A crowd region as COCO stores it: uncompressed RLE, iscrowd = 1.
            m = blob_mask(rng, h, w, w * 0.5, h * 0.5, w * 0.3, h * 0.25)
            rle = mask_utils.encode(m)
            anns.append({"id": ann_id, "image_id": img_id, "category_id": CATEGORIES[0],
                         "segmentation": {"size": [h, w], "counts": uncompressed_counts(m)},
                         "area": float(mask_utils.area(rle)), "bbox": [float(v) for v in mask_utils.toBbox(rle)],
                         "iscrowd": 1})
            ann_id += 1
    # Shuffle the annotation order so file order differs from id order.
    order = rng.permutation(len(anns))
    anns = [anns[i] for i in order]
    images = [images[i] for i in rng.permutation(len(images))]
    cats = [{"id": c, "name": f"cat{c}", "supercategory": "thing"} for c in CATEGORIES]
    return {"info": {"description": "synthetic cocoeval fixture"}, "images": images,
            "annotations": anns, "categories": cats}


def jitter_polygon(rng, poly, scale):
    return [round(v + float(rng.normal(0, scale)), 2) for v in poly]


def make_results(rng, gt):
    imgs = {im["id"]: im for im in gt["images"]}
    res = []

    def add(img_id, cat, rle, score):
        bbox = [round(float(v), 2) for v in mask_utils.toBbox(rle)]
        res.append({"image_id": img_id, "category_id": cat, "bbox": bbox, "score": score,
                    "segmentation": {"size": rle["size"], "counts": rle["counts"].decode("ascii")}})

    def score():
        # Two decimals so ties happen; stable ordering then matters.
        return round(float(rng.uniform(0.05, 1.0)), 2)

    for ann in gt["annotations"]:
        im = imgs[ann["image_id"]]
        h, w = im["height"], im["width"]
        if ann["iscrowd"]:
            # Detections inside a crowd region must be ignored, not counted as false positives.
            for _ in range(3):
                x, y, bw, bh = ann["bbox"]
                cx, cy = x + rng.uniform(0, bw), y + rng.uniform(0, bh)
                poly = star_polygon(rng, cx, cy, 6.0, 6)
                add(ann["image_id"], ann["category_id"], poly_rle([poly], h, w), score())
            continue
        if rng.uniform() < 0.15:
            continue  # missed object
        gt_rle = COCO_GT.annToRLE(ann)
        if isinstance(ann["segmentation"], list):
            noise = 0.5 + rng.uniform(0, 4.0)
            polys = [jitter_polygon(rng, p, noise) for p in ann["segmentation"]]
            rle = poly_rle(polys, h, w)
        else:
            m = mask_utils.decode(gt_rle)
            shift = int(rng.integers(-3, 4))
            m = np.asfortranarray(np.roll(m, shift, axis=1))
            rle = mask_utils.encode(m)
        if mask_utils.area(rle) == 0:
            continue
        cat = ann["category_id"] if rng.uniform() > 0.1 else int(rng.choice(CATEGORIES))
        add(ann["image_id"], cat, rle, score())
        if rng.uniform() < 0.25:
            add(ann["image_id"], cat, rle, score())  # duplicate
    for im in gt["images"]:
        h, w = im["height"], im["width"]
        for _ in range(int(rng.integers(0, 4))):
            cat = int(rng.choice(CATEGORIES))
            poly = star_polygon(rng, rng.uniform(0, w), rng.uniform(0, h), float(rng.choice([4.0, 15.0, 40.0])), 7)
            rle = poly_rle([poly], h, w)
            if mask_utils.area(rle) > 0:
                add(im["id"], cat, rle, score())
    # One image/category with more than 100 detections, to exercise the maxDets cut.
    im = gt["images"][0]
    h, w = im["height"], im["width"]
    for _ in range(110):
        x, y = float(rng.uniform(0, w - 6)), float(rng.uniform(0, h - 6))
        poly = [x, y, x + 5, y, x + 5, y + 5, x, y + 5]
        add(im["id"], CATEGORIES[1], poly_rle([poly], h, w), score())
    order = rng.permutation(len(res))
    return [res[i] for i in order]


def run_eval(gt_coco, dt_coco, iou_type):
    e = COCOeval(gt_coco, dt_coco, iou_type)
    with contextlib.redirect_stdout(io.StringIO()):
        e.evaluate()
        e.accumulate()
        e.summarize()
    return {name: float(v) for name, v in zip(STAT_NAMES, e.stats)}


def load_res(gt_coco, anns):
    with contextlib.redirect_stdout(io.StringIO()):
        return gt_coco.loadRes(anns)


def empty_res(gt_coco):
    # loadRes([]) fails in pycocotools (it inspects anns[0]); build the empty result set directly.
    dt = COCO()
    dt.dataset = {"images": list(gt_coco.dataset["images"]), "categories": list(gt_coco.dataset["categories"]),
                  "annotations": []}
    with contextlib.redirect_stdout(io.StringIO()):
        dt.createIndex()
    return dt


COCO_GT = None


def main():
    global COCO_GT
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures",
                                                             "cocoeval")
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(20240611)
    gt = make_gt(rng)
    gt_path = os.path.join(out, "gt.json")
    with open(gt_path, "w") as f:
        json.dump(gt, f, separators=(",", ":"))
    with contextlib.redirect_stdout(io.StringIO()):
        COCO_GT = COCO(gt_path)
    full = make_results(rng, gt)
    variants = {
        "both": full,
        "bbox": [{k: v for k, v in r.items() if k != "segmentation"} for r in full],
        "segm": [{k: v for k, v in r.items() if k != "bbox"} for r in full],
    }
    expected = {}
    for name, anns in variants.items():
        with open(os.path.join(out, f"results_{name}.json"), "w") as f:
            json.dump(anns, f, separators=(",", ":"))
        stats = {"bbox": run_eval(COCO_GT, load_res(COCO_GT, json.loads(json.dumps(anns))), "bbox")}
        # Box-only results still get a segm evaluation in pycocotools (each box becomes a
        # polygon); our API does not report it, but it checks the box rasterisation.
        key = "segm" if name != "bbox" else "segm_of_boxes"
        stats[key] = run_eval(COCO_GT, load_res(COCO_GT, json.loads(json.dumps(anns))), "segm")
        expected[name] = stats
    with open(os.path.join(out, "results_empty.json"), "w") as f:
        json.dump([], f)
    expected["empty"] = {t: run_eval(COCO_GT, empty_res(COCO_GT), t) for t in ("bbox", "segm")}

    # Mask primitives checked one by one: polygon rasterisation, merge, area, toBbox, iou.
    prims = []
    for ann in gt["annotations"]:
        im = COCO_GT.imgs[ann["image_id"]]
        rle = COCO_GT.annToRLE(ann)
        if isinstance(rle["counts"], bytes):
            counts = rle["counts"].decode("ascii")
        elif isinstance(rle["counts"], str):
            counts = rle["counts"]
        else:
            counts = mask_utils.frPyObjects(rle, im["height"], im["width"])["counts"].decode("ascii")
        prims.append({"ann_id": ann["id"], "counts": counts, "area": int(mask_utils.area(rle)),
                      "bbox": [float(v) for v in mask_utils.toBbox(rle)]})

    params = COCOeval(iouType="bbox").params
    expected["params"] = {"iouThrs": [float(v) for v in params.iouThrs],
                          "recThrs": [float(v) for v in params.recThrs]}
    expected["gt_masks"] = prims
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1)
    print(json.dumps({k: v for k, v in expected.items() if k not in ("gt_masks", "params")}, indent=1))


if __name__ == "__main__":
    main()
