//! The mask-IoU term I (the reference's `mask_iou_loss`, YOLACT++): the mask-IoU net predicts, for
//! each trained mask, the IoU of its binarisation with the ground truth; smooth L1 against the
//! measured IoU, at the ground truth's class.
//!
//! The net's input is *not* detached: this term also trains the protonet and the
//! coefficient head.

use candle_core::{bail, Result, Tensor};

use super::mask::MaskIouInputs;
use super::smooth_l1_sum;
use crate::model::Yolact;

/// `alpha * sum smoothL1(maskiou_net(masks)[k, label_k] - iou_k)` over the masks of all images
/// (concatenated in image order); `None` when no image contributed a mask.
pub fn maskiou_loss(model: &Yolact, parts: &[MaskIouInputs], alpha: f32) -> Result<Option<Tensor>> {
    if parts.is_empty() {
        return Ok(None);
    }
    let masks: Vec<&Tensor> = parts.iter().map(|p| &p.masks).collect();
    let x = Tensor::cat(&masks, 0)?;
    let n = x.dim(0)?;
    let iou: Vec<f32> = parts.iter().flat_map(|p| p.iou.iter().copied()).collect();
    let labels: Vec<u32> = parts
        .iter()
        .flat_map(|p| p.labels.iter().copied())
        .collect();
    if iou.len() != n || labels.len() != n {
        bail!(
            "mask-IoU loss: {n} masks, {} targets, {} labels",
            iou.len(),
            labels.len()
        );
    }
    let pred = model.maskiou_t(&x, true)?;
    let dev = x.device();
    let lab = Tensor::from_vec(labels, (n, 1), dev)?;
    let p = pred.gather(&lab, 1)?.squeeze(1)?;
    let t = Tensor::from_vec(iou, n, dev)?;
    Ok(Some(smooth_l1_sum(&p, &t)?.affine(alpha as f64, 0.0)?))
}
