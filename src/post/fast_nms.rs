//! Candidate filtering and non-maximum suppression (docs/model.md §6.2-6.4).
//!
//! The maths runs on host vectors in stages that each have a tensor-shaped contract, so a device
//! kernel can replace one stage at a time: [`candidates`] (P, 81) -> (C, P') scores,
//! [`fast_nms_keep`] (C, P') scores + (P', 4) boxes -> per-class keep lists, [`merge_top`] keep
//! lists -> globally sorted detections.

use candle_core::{DType, Tensor};

use crate::error::{Error, Result};
pub use crate::post::rank::{merge_top, stable_desc_order, stable_desc_top_k};
pub use crate::post::types::{Candidates, Dets, Kept, NmsKind, NmsOptions};

/// IoU of two (x1, y1, x2, y2) boxes in f32, without the +1 convention (reference `jaccard`).
/// Two empty boxes give NaN, as in the reference.
#[inline]
pub fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = iw * ih;
    let area_a = (a[2] - a[0]) * (a[3] - a[1]);
    let area_b = (b[2] - b[0]) * (b[3] - b[1]);
    inter / (area_a + area_b - inter)
}

/// Candidate filter (docs/model.md §6.2): drops the background column and keeps priors whose best
/// foreground score is strictly above `conf_thresh`. NaN scores are rejected, since no ordering of
/// them would match the reference.
pub fn candidates(conf: &Tensor, conf_thresh: f32) -> Result<Candidates> {
    let (p, c1) = conf.dims2()?;
    if c1 < 2 {
        return Err(Error::Invalid(format!(
            "conf must be (P, 1 + classes), got {:?}",
            conf.dims()
        )));
    }
    let flat = conf.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    if flat.iter().any(|v| v.is_nan()) {
        return Err(Error::Invalid("NaN in class confidences".into()));
    }
    let nc = c1 - 1;
    let mut priors = Vec::new();
    for (i, row) in flat.chunks_exact(c1).enumerate() {
        let best = row[1..].iter().copied().fold(f32::NEG_INFINITY, f32::max);
        if best > conf_thresh {
            priors.push(i as u32);
        }
    }
    let n = priors.len();
    let mut scores = vec![0f32; nc * n];
    for (j, &pi) in priors.iter().enumerate() {
        let row = &flat[pi as usize * c1 + 1..(pi as usize + 1) * c1];
        for (c, &s) in row.iter().enumerate() {
            scores[c * n + j] = s;
        }
    }
    debug_assert_eq!(p * c1, flat.len());
    Ok(Candidates {
        priors,
        num_classes: nc,
        scores,
    })
}

/// Fast NMS of one ranked list: `ranked` boxes in descending score order; returns, per position,
/// whether it survives. A box is dropped when any higher-ranked box (suppressed or not) overlaps it
/// by more than `iou_thresh`; a NaN IoU also drops it, as the reference's max propagates NaN.
pub fn fast_nms_ranked(ranked: &[[f32; 4]], iou_thresh: f32) -> Vec<bool> {
    (0..ranked.len())
        .map(|j| {
            ranked[..j]
                .iter()
                .all(|bi| iou(bi, &ranked[j]) <= iou_thresh)
        })
        .collect()
}

/// Class-wise Fast NMS core (docs/model.md §6.3 steps 1-5): `scores` (C, P') row-major and `boxes`
/// (P') in; per class, the kept candidates in rank order.
pub fn fast_nms_keep(
    scores: &[f32],
    num_classes: usize,
    boxes: &[[f32; 4]],
    top_k: usize,
    iou_thresh: f32,
) -> Result<Vec<Vec<Kept>>> {
    let n = boxes.len();
    if scores.len() != num_classes * n {
        return Err(Error::Invalid(format!(
            "fast_nms: {} scores for {num_classes} classes x {n} boxes",
            scores.len()
        )));
    }
    let mut out = Vec::with_capacity(num_classes);
    for c in 0..num_classes {
        let s = &scores[c * n..(c + 1) * n];
        let order = stable_desc_top_k(s, top_k.min(n));
        let ranked: Vec<[f32; 4]> = order.iter().map(|&i| boxes[i]).collect();
        let keep = fast_nms_ranked(&ranked, iou_thresh);
        out.push(
            order
                .iter()
                .zip(keep)
                .filter(|(_, k)| *k)
                .map(|(&i, _)| Kept {
                    cand: i,
                    class: c as u32,
                    score: s[i],
                })
                .collect(),
        );
    }
    Ok(out)
}

/// [`fast_nms_keep`] on tensors: `scores` (C, P'), `boxes` (P', 4). This is the contract a device
/// kernel replaces (the CUDA backend's `fast_nms_keep`).
pub fn fast_nms_keep_tensor(
    scores: &Tensor,
    boxes: &Tensor,
    top_k: usize,
    iou_thresh: f32,
) -> Result<Vec<Vec<Kept>>> {
    let (c, n) = scores.dims2()?;
    if boxes.dims() != [n, 4] {
        return Err(Error::Invalid(format!(
            "fast_nms: scores {:?} and boxes {:?}",
            scores.dims(),
            boxes.dims()
        )));
    }
    let s = scores
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    fast_nms_keep(&s, c, &boxes_to_host(boxes)?, top_k, iou_thresh)
}

/// Cross-class Fast NMS (docs/model.md §6.4): one score per candidate (its best class; first on
/// ties), top `top_k`, triu IoU, keep IoU max <= thresh. No global cap.
pub fn cross_class_fast_nms(
    cands: &Candidates,
    boxes: &[[f32; 4]],
    top_k: usize,
    iou_thresh: f32,
) -> Vec<Kept> {
    let n = cands.len();
    let mut best = vec![f32::NEG_INFINITY; n];
    let mut cls = vec![0u32; n];
    for c in 0..cands.num_classes {
        for (j, &s) in cands.class_scores(c).iter().enumerate() {
            if s > best[j] {
                best[j] = s;
                cls[j] = c as u32;
            }
        }
    }
    let order = stable_desc_top_k(&best, top_k.min(n));
    let ranked: Vec<[f32; 4]> = order.iter().map(|&i| boxes[i]).collect();
    order
        .iter()
        .zip(fast_nms_ranked(&ranked, iou_thresh))
        .filter(|(_, k)| *k)
        .map(|(&i, _)| Kept {
            cand: i,
            class: cls[i],
            score: best[i],
        })
        .collect()
}

/// (n, 4) boxes as host arrays.
pub(crate) fn boxes_to_host(boxes: &Tensor) -> candle_core::Result<Vec<[f32; 4]>> {
    let v = boxes
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    Ok(v.chunks_exact(4)
        .map(|c| [c[0], c[1], c[2], c[3]])
        .collect())
}

/// The (P, mask_dim) of one image's [`detect`] inputs: `boxes` (P, 4), `conf` (P, 1 + classes),
/// `coefs` (P, mask_dim); an error when they disagree.
pub fn detect_dims(boxes: &Tensor, conf: &Tensor, coefs: &Tensor) -> Result<(usize, usize)> {
    let (p, four) = boxes.dims2()?;
    let (pc, _) = conf.dims2()?;
    let (pm, mask_dim) = coefs.dims2()?;
    if four != 4 || pc != p || pm != p {
        return Err(Error::Invalid(format!(
            "detect: boxes {:?}, conf {:?}, coefs {:?} disagree on P",
            boxes.dims(),
            conf.dims(),
            coefs.dims()
        )));
    }
    Ok((p, mask_dim))
}

/// Runs the candidate filter and the selected NMS on one image, on the host (the tensors may
/// live on any device; the scores and boxes are copied once).
///
/// `boxes` (P, 4) decoded relative boxes, `conf` (P, 1 + classes) softmax scores, `coefs`
/// (P, mask_dim). Returns detections sorted by score descending.
pub fn detect(boxes: &Tensor, conf: &Tensor, coefs: &Tensor, opts: &NmsOptions) -> Result<Dets> {
    let (p, mask_dim) = detect_dims(boxes, conf, coefs)?;
    if p == 0 {
        return Ok(Dets::empty(mask_dim)?);
    }
    let device = boxes.device();
    let cands = candidates(conf, opts.conf_thresh)?;
    if cands.is_empty() {
        return Ok(Dets::empty(mask_dim)?);
    }
    let all_boxes = boxes_to_host(boxes)?;
    let cand_boxes: Vec<[f32; 4]> = cands
        .priors
        .iter()
        .map(|&i| all_boxes[i as usize])
        .collect();
    let kept = match opts.kind {
        NmsKind::Fast => merge_top(
            fast_nms_keep(
                &cands.scores,
                cands.num_classes,
                &cand_boxes,
                opts.top_k,
                opts.iou_thresh,
            )?,
            opts.max_num_detections,
        ),
        NmsKind::FastCrossClass => {
            cross_class_fast_nms(&cands, &cand_boxes, opts.top_k, opts.iou_thresh)
        }
        NmsKind::Traditional => crate::post::nms::traditional_nms(&cands, &cand_boxes, opts),
    };
    if kept.is_empty() {
        // top_k = 0: no row tensor (it would be a 0-byte device allocation on CUDA).
        return Ok(Dets::empty(mask_dim)?);
    }
    let rows: Vec<u32> = kept.iter().map(|k| cands.priors[k.cand]).collect();
    let n = rows.len();
    let rows_t = Tensor::from_vec(rows, n, device)?;
    let out_boxes = if opts.kind == NmsKind::Traditional {
        // The reference scales to pixels and back, which rounds in f32.
        let s = opts.max_size as f32;
        let v: Vec<f32> = kept
            .iter()
            .flat_map(|k| cand_boxes[k.cand].map(|x| (x * s) / s))
            .collect();
        Tensor::from_vec(v, (n, 4), device)?
    } else {
        boxes.to_dtype(DType::F32)?.index_select(&rows_t, 0)?
    };
    Ok(Dets {
        boxes: out_boxes,
        coefs: coefs.index_select(&rows_t, 0)?,
        classes: kept.iter().map(|k| k.class).collect(),
        scores: kept.iter().map(|k| k.score).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iou_of_empty_boxes_is_nan_and_suppresses() {
        let e = [0.5f32, 0.5, 0.5, 0.5];
        assert!(iou(&e, &e).is_nan());
        assert_eq!(fast_nms_ranked(&[e, e], 0.5), vec![true, false]);
        assert_eq!(iou(&[0.0, 0.0, 2.0, 1.0], &[0.0, 0.0, 1.0, 1.0]), 0.5);
    }
}
