//! From NMS output to per-instance masks and pixel boxes (docs/model.md §6.5 and §8.2, eval.py's
//! `prep_display`).
//!
//! The stages are separate pub fns so a benchmark or a device kernel can take over one at a time:
//! [`assemble_masks`] -> [`crop_masks`] (together: [`assemble_crop`]) -> mask-IoU rescoring ->
//! [`rank_and_cut`] -> [`upsample_threshold`], plus [`boxes_to_pixels`]. These are the host
//! stages; [`postprocess`] runs the device-specific ones (`assemble_crop`, `upsample_threshold`)
//! through the engine's [`Backend`], whose CUDA implementation runs fused kernels
//! (src/cuda/fused.rs).

use candle_core::{DType, Tensor};

use crate::error::{Error, Result};
use rayon::prelude::*;

use crate::engine::backend::Backend;
use crate::ops::interp::resize_threshold_window;
use crate::output::detection::{Detection, Mask};
use crate::post::fast_nms::{boxes_to_host, stable_desc_order, Dets};

/// Scales the mask-IoU head's output per class; (n, 1, Hp, Wp) soft masks -> (n, classes).
pub type MaskIouFn<'a> = &'a dyn Fn(&Tensor) -> candle_core::Result<Tensor>;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PostprocessOptions {
    /// Detections need a class score strictly above this to be processed, and a final (rescored)
    /// score of at least this to be returned. 0 disables both cuts, as in eval.py.
    pub score_threshold: f32,
    /// Keep at most this many detections after sorting by final score.
    pub top_k: usize,
    /// Zero mask pixels outside the (padded) box, as the reference does unless `--no_crop`.
    pub crop: bool,
}

impl Default for PostprocessOptions {
    /// eval.py's defaults: `--score_threshold=0 --top_k=5`, crop on.
    fn default() -> Self {
        PostprocessOptions {
            score_threshold: 0.0,
            top_k: 5,
            crop: true,
        }
    }
}

/// sigmoid(proto @ coefsᵀ): proto (Hp, Wp, D), coefs (n, D) -> soft masks (n, Hp, Wp).
pub fn assemble_masks(proto: &Tensor, coefs: &Tensor) -> candle_core::Result<Tensor> {
    let (hp, wp, d) = proto.dims3()?;
    let (n, dc) = coefs.dims2()?;
    if d != dc {
        candle_core::bail!("assemble_masks: proto has {d} channels, coefs {dc}");
    }
    let flat = proto.to_dtype(DType::F32)?.reshape((hp * wp, d))?;
    let coefs_t = coefs.to_dtype(DType::F32)?.t()?.contiguous()?;
    let m = flat.matmul(&coefs_t)?; // (Hp*Wp, n)
    let m = candle_nn::ops::sigmoid(&m)?;
    m.t()?.contiguous()?.reshape((n, hp, wp))
}

/// Crop window (X1, Y1, X2, Y2) at mask resolution for one relative box: float bounds, ±padding,
/// clamped to the mask (docs/model.md §6.5.3). Pixel (r, q) survives iff X1 <= q < X2 and
/// Y1 <= r < Y2.
pub fn crop_bounds(b: &[f32; 4], hp: usize, wp: usize, padding: f32) -> [f32; 4] {
    let (w, h) = (wp as f32, hp as f32);
    let (x1, x2) = (b[0] * w, b[2] * w);
    let (y1, y2) = (b[1] * h, b[3] * h);
    [
        (x1.min(x2) - padding).max(0.0),
        (y1.min(y2) - padding).max(0.0),
        (x1.max(x2) + padding).min(w),
        (y1.max(y2) + padding).min(h),
    ]
}

/// Zeroes every pixel of `masks` (n, Hp, Wp) outside its box's crop window (padding 1).
pub fn crop_masks(masks: &Tensor, boxes: &Tensor) -> candle_core::Result<Tensor> {
    let (n, hp, wp) = masks.dims3()?;
    let bx = boxes_to_host(boxes)?;
    if bx.len() != n {
        candle_core::bail!("crop_masks: {n} masks but {} boxes", bx.len());
    }
    let mut keep = vec![0f32; n * hp * wp];
    for (i, b) in bx.iter().enumerate() {
        let [x1, y1, x2, y2] = crop_bounds(b, hp, wp, 1.0);
        for r in 0..hp {
            let rf = r as f32;
            if !(rf >= y1 && rf < y2) {
                continue;
            }
            let row = &mut keep[(i * hp + r) * wp..(i * hp + r + 1) * wp];
            for (q, v) in row.iter_mut().enumerate() {
                let qf = q as f32;
                if qf >= x1 && qf < x2 {
                    *v = 1.0;
                }
            }
        }
    }
    let keep = Tensor::from_vec(keep, (n, hp, wp), masks.device())?;
    masks.to_dtype(DType::F32)?.mul(&keep)
}

/// [`assemble_masks`] then, when `crop`, [`crop_masks`]; on CUDA the backend runs one kernel after
/// the GEMM (src/cuda/fused.rs), with the boxes staying on the device.
pub fn assemble_crop(proto: &Tensor, coefs: &Tensor, boxes: &Tensor, crop: bool) -> Result<Tensor> {
    let masks = assemble_masks(proto, coefs)?;
    Ok(if crop {
        crop_masks(&masks, boxes)?
    } else {
        masks
    })
}

/// Bilinear (align_corners=False) upsample of soft masks (n, Hp, Wp) to (h, w), then > 0.5. Each
/// mask keeps only the window that can hold foreground (about its box when cropped), so n masks
/// never exist at full size at once on the CPU. On CUDA the backend resizes and thresholds on the
/// device and the bytes come back as full planes, one at a time cut to their foreground
/// ([`tight`]).
pub fn upsample_threshold(masks: &Tensor, h: usize, w: usize) -> Result<Vec<Mask>> {
    if !upsample_has_work(masks, h, w)? {
        return Ok(Vec::new());
    }
    let (_, hp, wp) = masks.dims3()?;
    let planes = masks.flatten_all()?.to_vec1::<f32>()?;
    planes
        .par_chunks(hp * wp)
        .map(|plane| {
            let (win, data) = resize_threshold_window(plane, hp, wp, h, w, 0.5)?;
            Mask::window(h, w, win, data).map_err(Error::Invalid)
        })
        .collect()
}

/// Whether [`upsample_threshold`] of `masks` (n, Hp, Wp) to (h, w) has anything to do: false for
/// no masks, an error for an empty target. Every backend checks this first.
pub fn upsample_has_work(masks: &Tensor, h: usize, w: usize) -> Result<bool> {
    let (n, _, _) = masks.dims3()?;
    if n == 0 {
        return Ok(false);
    }
    if h == 0 || w == 0 {
        return Err(Error::Invalid(format!("upsample masks to {w}x{h}")));
    }
    Ok(true)
}

/// A full (h, w) plane cut to the bounding box of its foreground.
pub fn tight(h: usize, w: usize, plane: &[u8]) -> Mask {
    let rows: Vec<usize> = (0..h)
        .filter(|&y| plane[y * w..(y + 1) * w].iter().any(|&v| v != 0))
        .collect();
    let (Some(&y0), Some(&y1)) = (rows.first(), rows.last()) else {
        return Mask {
            height: h,
            width: w,
            x0: 0,
            y0: 0,
            cols: 0,
            rows: 0,
            data: Vec::new(),
        };
    };
    let (mut x0, mut x1) = (w, 0);
    for y in y0..=y1 {
        let row = &plane[y * w..(y + 1) * w];
        if let (Some(a), Some(b)) = (
            row.iter().position(|&v| v != 0),
            row.iter().rposition(|&v| v != 0),
        ) {
            x0 = x0.min(a);
            x1 = x1.max(b);
        }
    }
    let data = (y0..=y1)
        .flat_map(|y| plane[y * w + x0..=y * w + x1].iter().copied())
        .collect();
    Mask {
        height: h,
        width: w,
        x0,
        y0,
        cols: x1 + 1 - x0,
        rows: y1 + 1 - y0,
        data,
    }
}

/// Relative boxes to image pixels: sorted per axis and clamped to [0, size], kept as floats
/// (the reference then truncates with `.long()`; callers that need integers can do the same).
pub fn boxes_to_pixels(boxes: &[[f32; 4]], img_w: usize, img_h: usize) -> Vec<[f32; 4]> {
    let (w, h) = (img_w as f32, img_h as f32);
    boxes
        .iter()
        .map(|b| {
            let (x1, x2) = (b[0] * w, b[2] * w);
            let (y1, y2) = (b[1] * h, b[3] * h);
            [
                x1.min(x2).max(0.0),
                y1.min(y2).max(0.0),
                x1.max(x2).min(w),
                y1.max(y2).min(h),
            ]
        })
        .collect()
}

/// Gathers p[i, class_i] from the mask-IoU head's (n, classes) output.
pub fn gather_maskiou(pred: &Tensor, classes: &[u32]) -> Result<Vec<f32>> {
    let (n, c) = pred.dims2()?;
    if n != classes.len() {
        return Err(Error::Invalid(format!(
            "mask-IoU head returned {n} rows for {} detections",
            classes.len()
        )));
    }
    let rows = pred.to_dtype(DType::F32)?.to_vec2::<f32>()?;
    rows.iter()
        .zip(classes)
        .map(|(row, &k)| {
            row.get(k as usize).copied().ok_or_else(|| {
                Error::Invalid(format!("class {k} outside the mask-IoU head's {c} outputs"))
            })
        })
        .collect()
}

/// eval.py's display cut: stable sort by `scores` descending, first `top_k`, then the prefix
/// whose score is >= `score_threshold`. Returns row indices.
pub fn rank_and_cut(scores: &[f32], top_k: usize, score_threshold: f32) -> Vec<usize> {
    stable_desc_order(scores)
        .into_iter()
        .take(top_k)
        .take_while(|&i| scores[i] >= score_threshold)
        .collect()
}

/// Full `--image` post-processing of one image's NMS output, the mask stages on `backend`.
///
/// `proto` is (Hp, Wp, D); `maskiou`, for YOLACT++, maps (n, 1, Hp, Wp) soft cropped masks to
/// (n, classes) predicted IoUs and turns the final score into class_score x IoU.
pub fn postprocess(
    backend: &dyn Backend,
    dets: &Dets,
    proto: &Tensor,
    maskiou: Option<MaskIouFn<'_>>,
    img_w: usize,
    img_h: usize,
    opts: &PostprocessOptions,
) -> Result<Vec<Detection>> {
    if dets.classes.len() != dets.scores.len() || dets.boxes.dim(0)? != dets.scores.len() {
        return Err(Error::Invalid("Dets rows disagree".into()));
    }
    if img_w == 0 || img_h == 0 {
        return Err(Error::Invalid(format!("image size {img_w}x{img_h}")));
    }
    // The pre-mask cut uses the unrescored class score, strictly.
    let pre: Vec<usize> = if opts.score_threshold > 0.0 {
        (0..dets.len())
            .filter(|&i| dets.scores[i] > opts.score_threshold)
            .collect()
    } else {
        (0..dets.len()).collect()
    };
    if pre.is_empty() {
        return Ok(Vec::new());
    }
    let dets = if pre.len() == dets.len() {
        dets.clone()
    } else {
        dets.select(&pre)?
    };
    let (hp, wp, _) = proto.dims3()?;
    let masks = backend.assemble_crop(proto, &dets.coefs, &dets.boxes, opts.crop)?;
    let ious = match maskiou {
        Some(f) => {
            let pred = f(&masks.reshape((dets.len(), 1, hp, wp))?)?;
            Some(gather_maskiou(&pred, &dets.classes)?)
        }
        None => None,
    };
    let finals: Vec<f32> = match &ious {
        Some(p) => dets.scores.iter().zip(p).map(|(s, p)| s * p).collect(),
        None => dets.scores.clone(),
    };
    let order = rank_and_cut(&finals, opts.top_k, opts.score_threshold);
    if order.is_empty() {
        return Ok(Vec::new());
    }
    let rows = Tensor::from_vec(
        order.iter().map(|&i| i as u32).collect::<Vec<_>>(),
        order.len(),
        masks.device(),
    )?;
    let full = backend.upsample_threshold(&masks.index_select(&rows, 0)?, img_h, img_w)?;
    let rel = boxes_to_host(&dets.boxes)?;
    // Checked before the clamp to the image, which turns NaN into the image's edges.
    if order.iter().any(|&i| rel[i].iter().any(|v| !v.is_finite())) {
        return Err(Error::Invalid(
            "the network produced NaN or infinite box coordinates; the weights are probably corrupt"
                .into(),
        ));
    }
    let boxes = boxes_to_pixels(&rel, img_w, img_h);
    Ok(order
        .iter()
        .zip(full)
        .map(|(&i, mask)| Detection {
            class_id: dets.classes[i] as usize,
            score: finals[i],
            class_score: dets.scores[i],
            mask_iou: ious.as_ref().map(|p| p[i]),
            bbox: boxes[i],
            mask,
        })
        .collect())
}
