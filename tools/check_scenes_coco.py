#!/usr/bin/env python3
"""Decodes every annotation of a COCO file with pycocotools and prints, per annotation id, the
area and bbox pycocotools computes from the mask (maskUtils.area / toBbox) and its pixel count.

Usage: check_scenes_coco.py ANNOTATIONS.json

The independent check of `yolact synth-scenes` (tests/it/synth_scenes.rs). Exit status 2 when
pycocotools is not installed.
"""
import json
import sys

try:
    import numpy as np
    from pycocotools import mask as mask_utils
except ImportError as e:
    print(f'pycocotools is not importable: {e}', file=sys.stderr)
    sys.exit(2)


def main():
    with open(sys.argv[1]) as f:
        dataset = json.load(f)
    out = {}
    for ann in dataset['annotations']:
        seg = ann['segmentation']
        # Compressed RLE as pycocotools' C API takes it (bytes counts); COCO.annToRLE does the
        # same but prints to stdout.
        rle = {'size': seg['size'], 'counts': seg['counts'].encode('ascii')}
        m = mask_utils.decode(rle)
        out[str(ann['id'])] = {
            'area': float(mask_utils.area(rle)),
            'bbox': [float(v) for v in mask_utils.toBbox(rle)],
            'pixels': int(np.count_nonzero(m)),
        }
    json.dump(out, sys.stdout)


if __name__ == '__main__':
    main()
