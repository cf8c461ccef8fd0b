//! The reference's `MultiBoxLoss`: prior matching, the box, confidence (OHEM), lincomb mask,
//! semantic segmentation and mask-IoU terms, normalised as the reference does.
//!
//! Selections (matching, hard-negative mining, crops, targets) are computed on host values and
//! carry no gradient; the terms themselves are candle ops on the network's outputs, so
//! `total.backward()` reaches every parameter the reference's step reaches.
//!
//! Normalisation: B, M, C and I are divided by the positives of the whole batch, S by
//! the batch size, and the total sums them in the reference's dict order B, M, C, I, S.

pub mod bce;
pub mod conf;
pub mod encode;
pub mod mask;
pub mod maskiou;
pub mod matching;
pub mod semantic;

use candle_core::{bail, DType, Result, Tensor};

pub use crate::config::LossConfig;
use crate::model::{Logits, Yolact};
use crate::train::data::GroundTruth;
use mask::{MaskImage, MaskSettings};
use matching::{match_priors, Thresholds};

/// The loss terms of one batch, each a scalar f32 tensor with its graph.
#[derive(Debug, Clone)]
pub struct Losses {
    pub b: Tensor,
    pub m: Tensor,
    pub c: Tensor,
    /// Absent for configs without a mask-IoU net, and for batches where no trained mask has a
    /// ground truth above `discard_mask_area` (the reference's dict then has no `I`).
    pub i: Option<Tensor>,
    pub s: Tensor,
    /// B + M + C (+ I) + S, in that order.
    pub total: Tensor,
    /// Positive priors over the batch (the normaliser of B, M, C, I).
    pub num_pos: usize,
}

impl Losses {
    /// The terms' values in the reference's dict order.
    pub fn terms(&self) -> Result<Vec<(&'static str, f32)>> {
        let mut out = vec![("B", &self.b), ("M", &self.m), ("C", &self.c)];
        if let Some(i) = &self.i {
            out.push(("I", i));
        }
        out.push(("S", &self.s));
        out.into_iter()
            .map(|(k, t)| Ok((k, t.to_dtype(DType::F32)?.to_scalar::<f32>()?)))
            .collect()
    }
}

/// Sum of smooth L1 (beta 1) of `x - t`: 0.5 d^2 where |d| < 1, else |d| - 0.5.
pub fn smooth_l1_sum(x: &Tensor, t: &Tensor) -> Result<Tensor> {
    let d = x.sub(t)?;
    let ad = d.abs()?;
    let quad = d.sqr()?.affine(0.5, 0.0)?;
    let lin = ad.affine(1.0, -0.5)?;
    ad.lt(1.0)?.where_cond(&quad, &lin)?.sum_all()
}

fn rows_of(t: &Tensor) -> Result<Vec<[f32; 4]>> {
    let v = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    if v.len() % 4 != 0 {
        bail!("boxes must be (N, 4), got {:?}", t.dims());
    }
    Ok(v.chunks_exact(4)
        .map(|c| [c[0], c[1], c[2], c[3]])
        .collect())
}

/// The reference's `MultiBoxLoss` on one batch.
///
/// * `out`: the training pass's logits; `coef` before tanh (applied here), `proto` (B, Hp, Wp, D),
///   `segm` required (a model from [`Yolact::load_train`]).
/// * `priors`: (P, 4) cx, cy, w, h, the same the head's rows follow.
/// * `truths`: one per image, crowd rows last.
/// * `rng`: draws the `masks_to_train` subsample when an image has more positives.
///
/// Errors on an image without non-crowd ground truth (the reference crashes there).
pub fn multibox_loss<R: rand::Rng + ?Sized>(
    model: &Yolact,
    out: &Logits,
    priors: &Tensor,
    truths: &[GroundTruth],
    cfg: &LossConfig,
    rng: &mut R,
) -> Result<Losses> {
    let (bsz, p, _) = out.loc.dims3()?;
    let (_, _, classes) = out.conf.dims3()?;
    if truths.len() != bsz {
        bail!("{} ground truths for a batch of {bsz}", truths.len());
    }
    let Some(segm) = &out.segm else {
        bail!("the loss needs the semantic logits: build the model with Yolact::load_train");
    };
    let priors_v = rows_of(priors)?;
    if priors_v.len() != p {
        bail!("{} priors for {p} prediction rows", priors_v.len());
    }
    let th = Thresholds {
        pos: cfg.pos_threshold,
        neg: cfg.neg_threshold,
        crowd: cfg.crowd_iou_threshold,
    };
    let (_, hp, wp, _) = out.proto.dims4()?;
    let dev = out.loc.device();

    // Per image: split off the crowds, match, downsample the targets.
    let mut matches = Vec::with_capacity(bsz);
    let mut split = Vec::with_capacity(bsz);
    for (b, gt) in truths.iter().enumerate() {
        let boxes = rows_of(&gt.boxes)?;
        let k = boxes.len();
        if gt.labels.len() != k || gt.num_crowds > k {
            bail!(
                "image {b}: {k} boxes, {} labels, {} crowds",
                gt.labels.len(),
                gt.num_crowds
            );
        }
        let g = k - gt.num_crowds;
        let m = match_priors(&boxes[..g], &gt.labels[..g], &boxes[g..], &priors_v, th)
            .map_err(|e| candle_core::Error::Msg(format!("image {b}: {e}")))?;
        let masks = gt.masks.narrow(0, 0, g)?;
        split.push((boxes[..g].to_vec(), gt.labels[..g].to_vec(), masks));
        matches.push(m);
    }
    let positives: Vec<Vec<usize>> = matches.iter().map(|m| m.positives()).collect();
    let num_pos: usize = positives.iter().map(Vec::len).sum();
    if num_pos == 0 {
        bail!("no positive prior in the batch");
    }

    // B: smooth L1 over the positives' four coordinates.
    let mut rows = Vec::with_capacity(num_pos);
    let mut loc_t = Vec::with_capacity(num_pos * 4);
    for (b, pos) in positives.iter().enumerate() {
        for &j in pos {
            rows.push(
                u32::try_from(b * p + j)
                    .map_err(|_| candle_core::Error::Msg("too many priors".into()))?,
            );
            loc_t.extend_from_slice(&matches[b].loc[j]);
        }
    }
    let idx = Tensor::from_vec(rows, num_pos, dev)?;
    let loc_p = out.loc.reshape((bsz * p, 4))?.index_select(&idx, 0)?;
    let loc_t = Tensor::from_vec(loc_t, (num_pos, 4), dev)?;
    let b_raw = smooth_l1_sum(&loc_p, &loc_t)?.affine(cfg.bbox_alpha as f64, 0.0)?;

    // M (and the I term's inputs), image by image.
    let proto = out.proto.contiguous()?;
    let coef = out.coef.contiguous()?;
    let settings = MaskSettings {
        masks_to_train: cfg.masks_to_train,
        maskiou_area: cfg
            .maskiou_alpha
            .map(|_| cfg.discard_mask_area.unwrap_or(f32::NEG_INFINITY)),
    };
    let mut m_raw: Option<Tensor> = None;
    let mut iou_parts = Vec::new();
    for b in 0..bsz {
        let (boxes, labels, masks) = &split[b];
        let targets = mask::downsample_targets(masks, hp, wp)?;
        let proto_b = proto.get(b)?;
        let coef_b = coef.get(b)?;
        let img = MaskImage {
            proto: &proto_b,
            coef: &coef_b,
            positives: &positives[b],
            gt_of: &matches[b].gt,
            boxes,
            labels,
            targets: &targets,
        };
        if let Some((l, iou)) = mask::lincomb_image(&img, &settings, rng)? {
            m_raw = Some(match m_raw {
                Some(acc) => acc.add(&l)?,
                None => l,
            });
            iou_parts.extend(iou);
        }
    }
    let m_raw = match m_raw {
        Some(t) => t,
        None => Tensor::zeros((), DType::F32, dev)?,
    };
    let m_raw = m_raw.affine(cfg.mask_alpha as f64 / hp as f64 / wp as f64, 0.0)?;

    // C: positives and hard negatives.
    let conf_v = out
        .conf
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let confs: Vec<Vec<i64>> = matches.iter().map(|m| m.conf.clone()).collect();
    let (crow, ctgt) = conf::selected_rows(&conf_v, classes, &confs, cfg.negpos_ratio)?;
    let logits = out.conf.reshape((bsz * p, classes))?;
    let c_raw =
        conf::cross_entropy_sum(&logits, &crow, &ctgt)?.affine(cfg.conf_alpha as f64, 0.0)?;

    // I (YOLACT++).
    let i_raw = match cfg.maskiou_alpha {
        Some(alpha) => maskiou::maskiou_loss(model, &iou_parts, alpha)?,
        None => None,
    };

    // S, per image.
    let mut s_raw: Option<Tensor> = None;
    for (b, (_, labels, masks)) in split.iter().enumerate() {
        let s = semantic::semantic_image(&segm.get(b)?, masks, labels, cfg.semantic_alpha)?;
        s_raw = Some(match s_raw {
            Some(acc) => acc.add(&s)?,
            None => s,
        });
    }
    let s_raw = match s_raw {
        Some(t) => t,
        None => Tensor::zeros((), DType::F32, dev)?,
    };

    let npos = num_pos as f64;
    let b = b_raw.affine(1.0 / npos, 0.0)?;
    let m = m_raw.affine(1.0 / npos, 0.0)?;
    let c = c_raw.affine(1.0 / npos, 0.0)?;
    let i = i_raw.map(|t| t.affine(1.0 / npos, 0.0)).transpose()?;
    let s = s_raw.affine(1.0 / bsz as f64, 0.0)?;
    let mut total = b.add(&m)?.add(&c)?;
    if let Some(i) = &i {
        total = total.add(i)?;
    }
    let total = total.add(&s)?;
    Ok(Losses {
        b,
        m,
        c,
        i,
        s,
        total,
        num_pos,
    })
}
