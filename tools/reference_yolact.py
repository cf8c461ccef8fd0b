"""Import the reference YOLACT (dbolya/yolact, an extracted copy given by path) on CPU and build it
with synthetic weights.

Nothing of the reference is copied here: this module only puts the reference's directory on
sys.path, replaces the two things that need CUDA (a device probe at import time and the compiled
DCNv2 extension) and drives the reference's own classes.

The DCN replacement keeps the parameter names of DCNv2's `DCN` (weight, bias, conv_offset_mask.*)
and calls torchvision.ops.deform_conv2d with raw offset channels 0..17 (interleaved dy, dx) and
sigmoid(channels 18..26) as the modulation mask, which is DCNv2's layout (docs/model.md §3).
"""

import copy
import os
import sys
import types

import numpy as np
import torch
import torch.nn as nn
import torchvision

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import synth_weights  # noqa: E402

_loaded = {}


class TorchvisionDCN(nn.Module):
    """Modulated deformable conv with DCNv2's parameter names."""

    def __init__(self, in_channels, out_channels, kernel_size, stride, padding, dilation=1,
                 deformable_groups=1):
        super().__init__()
        if deformable_groups != 1:
            raise ValueError("only deformable_groups=1 is used by YOLACT++")
        k = kernel_size if isinstance(kernel_size, tuple) else (kernel_size, kernel_size)
        self.stride = (stride, stride)
        self.padding = (padding, padding)
        self.dilation = (dilation, dilation)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, *k))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        taps = k[0] * k[1]
        self.conv_offset_mask = nn.Conv2d(in_channels, 3 * taps, kernel_size=k, stride=self.stride,
                                          padding=self.padding, bias=True)
        self.taps = taps

    def forward(self, x):
        raw = self.conv_offset_mask(x)
        offset = raw[:, : 2 * self.taps]
        mask = torch.sigmoid(raw[:, 2 * self.taps:])
        return torchvision.ops.deform_conv2d(x, offset, self.weight, self.bias, stride=self.stride,
                                             padding=self.padding, dilation=self.dilation,
                                             mask=mask)


def import_reference(src):
    """Imports the reference from directory `src` on CPU; returns a namespace of its modules."""
    src = os.path.abspath(src)
    if "src" in _loaded:
        if _loaded["src"] != src:
            raise RuntimeError("the reference was already imported from another directory")
        return _loaded["ns"]
    # The reference probes the GPU at import and moves a few constants with .cuda().
    torch.cuda.current_device = lambda: 0
    torch.cuda.device_count = lambda: 1
    torch.Tensor.cuda = lambda self, *a, **k: self
    dcn_mod = types.ModuleType("dcn_v2")
    dcn_mod.DCN = TorchvisionDCN
    sys.modules["dcn_v2"] = dcn_mod
    sys.path.insert(0, src)
    import data  # noqa: F401
    import yolact
    from data import config as data_config
    from layers import output_utils, box_utils
    from utils import augmentations

    ns = types.SimpleNamespace(yolact=yolact, config=data_config, output_utils=output_utils,
                               box_utils=box_utils, augmentations=augmentations)
    _loaded["src"] = src
    _loaded["ns"] = ns
    return ns


def build(ns, config_name, seed=synth_weights.DEFAULT_SEED):
    """Yolact for `config_name` with the synthetic weights loaded strictly, in eval mode, with
    eval.py's default Detect settings (class-wise fast NMS)."""
    ns.config.set_cfg(config_name + "_config")
    cfg = ns.config.cfg
    cfg.mask_proto_debug = False
    cfg.eval_mask_branch = True
    net = ns.yolact.Yolact()
    keys = [(k, list(v.shape)) for k, v in net.state_dict().items()]
    sd = synth_weights.synth_state_dict(keys, seed)
    net.load_state_dict(sd, strict=True)
    net.eval()
    net.detect.use_fast_nms = True
    net.detect.use_cross_class_nms = False
    return net, sd


def load_bgr(path):
    """uint8 HxWx3 BGR, like cv2.imread(IMREAD_COLOR) for a plain RGB PNG."""
    from PIL import Image

    rgb = np.asarray(Image.open(path).convert("RGB"))
    return np.ascontiguousarray(rgb[:, :, ::-1])


class Frame:
    """Everything one image produces, stage by stage."""


def run_frame(ns, net, bgr, score_threshold=0.15, top_k=100, keep_raw=False, timings=None):
    """One frame through FastBaseTransform, the net (+ Detect), postprocess and the prep_display
    ordering of eval.py --image. Returns a Frame; `timings` (dict of lists) gets per-stage ms."""
    import time

    cfg = ns.config.cfg
    out = Frame()
    h, w = bgr.shape[:2]
    captured = {}
    detect = net.detect
    maskiou_out = []
    maskiou_net = getattr(net, "maskiou_net", None)
    if maskiou_net is not None:
        class IouRecorder(nn.Module):
            def __init__(self, inner):
                super().__init__()
                self.inner = inner

            def forward(self, x):
                r = self.inner(x)
                maskiou_out.append(r.detach().clone())
                return r

        net.maskiou_net = IouRecorder(maskiou_net)
    if keep_raw:
        class Recorder:
            def __call__(self, preds, n):
                captured.update({k: v.detach().clone() for k, v in preds.items()})
                return detect(preds, n)

        net.detect = Recorder()
    try:
        with torch.no_grad():
            t0 = time.perf_counter()
            frame = torch.from_numpy(bgr).float()
            batch = ns.augmentations.FastBaseTransform()(frame.unsqueeze(0))
            t1 = time.perf_counter()
            # The net runs Detect at its end; time the two apart with a wrapper.
            det_t = {}
            inner = net.detect

            class Timed:
                def __call__(self, preds, n):
                    s = time.perf_counter()
                    r = inner(preds, n)
                    det_t["ms"] = (time.perf_counter() - s) * 1e3
                    return r

            net.detect = Timed()
            preds = net(batch)
            net.detect = inner
            t2 = time.perf_counter()
            dets_copy = copy.deepcopy([{"detection": (None if p["detection"] is None else
                                                      {k: v.clone() for k, v in p["detection"].items()})}
                                       for p in preds])
            saved = cfg.rescore_bbox
            cfg.rescore_bbox = True
            try:
                t = ns.output_utils.postprocess(preds, w, h, score_threshold=score_threshold)
            finally:
                cfg.rescore_bbox = saved
            t3 = time.perf_counter()
    finally:
        net.detect = detect
        if maskiou_net is not None:
            net.maskiou_net = maskiou_net
    if timings is not None:
        timings.setdefault("pre_ms", []).append((t1 - t0) * 1e3)
        timings.setdefault("net_ms", []).append((t2 - t1) * 1e3 - det_t["ms"])
        timings.setdefault("detect_ms", []).append(det_t["ms"])
        timings.setdefault("post_ms", []).append((t3 - t2) * 1e3)
        timings.setdefault("frame_ms", []).append((t3 - t0) * 1e3)
    out.raw = captured
    out.detection = dets_copy[0]["detection"]
    out.post = t
    out.maskiou = maskiou_out[0] if maskiou_out else None
    out.width, out.height = w, h
    return out


def display_detections(ns, frame, score_threshold=0.15, top_k=100):
    """The detections eval.py --image would draw, in its order, as plain Python dicts (masks as
    uint8 arrays). Also returns the unthresholded pre-postprocess detection count."""
    cfg = ns.config.cfg
    det = frame.detection
    t = frame.post
    if det is None or t[0].numel() == 0:
        return []
    classes, scores, boxes_i, masks = t
    # Float boxes before truncation: postprocess's own sanitising, without the cast, applied to
    # the same (score-thresholded) boxes.
    keep = det["score"] > score_threshold if score_threshold > 0 else torch.ones_like(det["score"], dtype=torch.bool)
    raw_boxes = det["box"][keep].clone()
    w, h = frame.width, frame.height
    fx1, fx2 = ns.box_utils.sanitize_coordinates(raw_boxes[:, 0], raw_boxes[:, 2], w, cast=False)
    fy1, fy2 = ns.box_utils.sanitize_coordinates(raw_boxes[:, 1], raw_boxes[:, 3], h, cast=False)
    class_scores = det["score"][keep]
    use_maskiou = bool(cfg.use_maskiou)
    mask_iou = None
    if use_maskiou:
        mask_iou = torch.gather(frame.maskiou, 1, classes.unsqueeze(1)).squeeze(1)
    idx = scores.argsort(0, descending=True)[:top_k]
    items = []
    for j in idx.tolist():
        s = float(scores[j])
        if s < score_threshold:
            break
        items.append({
            "class_id": int(classes[j]),
            "score": s,
            "class_score": float(class_scores[j]),
            "mask_iou": None if mask_iou is None else float(mask_iou[j]),
            "box_f": [float(fx1[j]), float(fy1[j]), float(fx2[j]), float(fy2[j])],
            "box": [int(v) for v in boxes_i[j].tolist()],
            "mask": masks[j].numpy().astype(np.uint8),
        })
    return items
