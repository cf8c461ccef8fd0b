//! The lincomb mask term M (the reference's `lincomb_mask_loss`), per image, and the mask-IoU net's
//! inputs and targets it hands to the I term.
//!
//! Prediction: `sigmoid(proto @ tanh(coef)^T)` for the positives' coefficients, cropped with the
//! *ground-truth* box (padding 1, bounds in f32), against the ground-truth mask downsampled to the
//! prototype size (bilinear, then strictly > 0.5). Each mask's BCE sum over all prototype pixels is
//! divided by its box area in prototype pixels.

use candle_core::{bail, Result, Tensor};
use rand::seq::SliceRandom;

use super::bce::binary_cross_entropy;
use crate::ops::interp::resize_threshold_planes;

/// Binarisation threshold of the downsampled ground truth and of the predicted masks (strict).
const HALF: f32 = 0.5;
/// Crop padding in prototype pixels.
const CROP_PAD: f32 = 1.0;

/// (G, S, S) 0/1 masks -> (G, h, w) bilinear downsample (align_corners = false, no antialias)
/// thresholded at > 0.5, as 0/1 bytes.
pub fn downsample_targets(masks: &Tensor, h: usize, w: usize) -> Result<Vec<u8>> {
    let (g, sh, sw) = masks.dims3()?;
    if g == 0 {
        return Ok(Vec::new());
    }
    let v = masks.flatten_all()?.to_vec1::<f32>()?;
    resize_threshold_planes(&v, sh, sw, h, w, HALF)
        .map_err(|e| candle_core::Error::Msg(e.to_string()))
}

/// The crop window of a relative box (x1, y1, x2, y2) on an (h, w) grid: columns c with
/// x1' <= c < x2', rows likewise, where x1' = max(min(x1 w, x2 w) - 1, 0) and
/// x2' = min(max(x1 w, x2 w) + 1, w), in f32.
pub fn crop_bounds(b: [f32; 4], h: usize, w: usize) -> ([f32; 2], [f32; 2]) {
    let side = |a: f32, c: f32, n: usize| {
        let (a, c) = (a * n as f32, c * n as f32);
        let lo = (a.min(c) - CROP_PAD).max(0.0);
        let hi = (a.max(c) + CROP_PAD).min(n as f32);
        [lo, hi]
    };
    (side(b[0], b[2], w), side(b[1], b[3], h))
}

fn inside(c: usize, [lo, hi]: [f32; 2]) -> bool {
    let c = c as f32;
    c >= lo && c < hi
}

/// One image's inputs to the mask term.
pub struct MaskImage<'a> {
    /// (Hp, Wp, D) prototypes.
    pub proto: &'a Tensor,
    /// (P, D) mask coefficients before tanh.
    pub coef: &'a Tensor,
    /// Positive priors, ascending.
    pub positives: &'a [usize],
    /// Per prior, its ground-truth index.
    pub gt_of: &'a [usize],
    /// Non-crowd ground-truth boxes (relative x1y1x2y2) and labels.
    pub boxes: &'a [[f32; 4]],
    pub labels: &'a [i64],
    /// (G, Hp, Wp) downsampled ground truth ([`downsample_targets`]).
    pub targets: &'a [u8],
}

/// What the I term needs from one image: the cropped soft masks (with their gradient), the IoU of
/// their binarisation with the ground truth, and the ground truth's class.
pub struct MaskIouInputs {
    /// (n, 1, Hp, Wp).
    pub masks: Tensor,
    pub iou: Vec<f32>,
    pub labels: Vec<u32>,
}

pub struct MaskSettings {
    pub masks_to_train: usize,
    /// `Some(area)`: collect mask-IoU inputs for masks with GT area (proto pixels) > area (the
    /// reference's discard_mask_area; `Some(f32::NEG_INFINITY)` keeps all); `None`: no I term.
    pub maskiou_area: Option<f32>,
}

/// The image's un-normalised M contribution (sum over its masks of BCE sum / box area * Hp * Wp,
/// times n_old / n when subsampled), and its mask-IoU inputs. `None` without positives.
pub fn lincomb_image<R: rand::Rng + ?Sized>(
    img: &MaskImage,
    s: &MaskSettings,
    rng: &mut R,
) -> Result<Option<(Tensor, Option<MaskIouInputs>)>> {
    let (hp, wp, d) = img.proto.dims3()?;
    let (p, dc) = img.coef.dims2()?;
    if dc != d || img.gt_of.len() != p {
        bail!(
            "mask loss: coefficients {:?} / {} matches do not fit prototypes {:?}",
            img.coef.dims(),
            img.gt_of.len(),
            img.proto.dims()
        );
    }
    if img.targets.len() != img.boxes.len() * hp * wp || img.labels.len() != img.boxes.len() {
        bail!(
            "mask loss: {} target pixels / {} labels for {} boxes of {hp}x{wp}",
            img.targets.len(),
            img.labels.len(),
            img.boxes.len()
        );
    }
    let mut sel: Vec<usize> = img.positives.to_vec();
    if sel.is_empty() {
        return Ok(None);
    }
    let n_old = sel.len();
    if n_old > s.masks_to_train {
        // The reference keeps randperm(n)[:masks_to_train], in permutation order.
        let mut perm: Vec<usize> = (0..n_old).collect();
        perm.shuffle(rng);
        sel = perm[..s.masks_to_train].iter().map(|&k| sel[k]).collect();
    }
    let n = sel.len();
    let gts: Vec<usize> = sel.iter().map(|&j| img.gt_of[j]).collect();
    if let Some(&g) = gts.iter().find(|&&g| g >= img.boxes.len()) {
        bail!(
            "mask loss: match to ground truth {g} of {}",
            img.boxes.len()
        );
    }
    let dev = img.proto.device();
    let idx: Vec<u32> = sel.iter().map(|&j| j as u32).collect();
    let idx = Tensor::from_vec(idx, n, dev)?;
    let coef = img.coef.index_select(&idx, 0)?.tanh()?;
    let pred = img.proto.reshape((hp * wp, d))?.matmul(&coef.t()?)?;
    let pred = candle_nn::ops::sigmoid(&pred)?;

    // Host-side crop and targets, (Hp * Wp, n) like the prediction.
    let plane = hp * wp;
    let mut crop = vec![0f32; plane * n];
    let mut target = vec![0f32; plane * n];
    let mut area = vec![0f32; n];
    let (mut bw, mut bh) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for (k, &g) in gts.iter().enumerate() {
        let b = img.boxes[g];
        let (cx, cy) = crop_bounds(b, hp, wp);
        let t = &img.targets[g * plane..(g + 1) * plane];
        for y in 0..hp {
            let row = inside(y, cy);
            for x in 0..wp {
                let i = y * wp + x;
                if row && inside(x, cx) {
                    crop[i * n + k] = 1.0;
                }
                target[i * n + k] = f32::from(t[i]);
            }
        }
        area[k] = t.iter().map(|&v| f32::from(v)).sum();
        // The reference's center_size width / height, scaled to prototype pixels.
        bw.push((b[2] - b[0]) * wp as f32);
        bh.push((b[3] - b[1]) * hp as f32);
    }
    let crop = Tensor::from_vec(crop, (plane, n), dev)?;
    let target_t = Tensor::from_vec(target.clone(), (plane, n), dev)?;
    let m = pred.mul(&crop)?;
    // The reference clamps m to [0, 1] first: a no-op on a cropped sigmoid, forward and backward
    // (PyTorch's clamp passes the gradient at the bounds), so it is left out.
    let bce = binary_cross_entropy(&m, &target_t)?.sum(0)?;
    let bw = Tensor::from_vec(bw, n, dev)?;
    let bh = Tensor::from_vec(bh, n, dev)?;
    let mut per_mask = bce.div(&bw)?.div(&bh)?.affine(plane as f64, 0.0)?;
    if n_old > n {
        per_mask = per_mask.affine(n_old as f64 / n as f64, 0.0)?;
    }
    let loss = per_mask.sum_all()?;

    let iou_inputs = match s.maskiou_area {
        None => None,
        Some(min_area) => {
            let keep: Vec<usize> = (0..n).filter(|&k| area[k] > min_area).collect();
            if keep.is_empty() {
                None
            } else {
                let mv = m.detach().flatten_all()?.to_vec1::<f32>()?;
                let mut iou = Vec::with_capacity(keep.len());
                for &k in &keep {
                    let (mut inter, mut a1) = (0f32, 0f32);
                    for i in 0..plane {
                        let b = if mv[i * n + k] > HALF { 1.0 } else { 0.0 };
                        inter += b * target[i * n + k];
                        a1 += b;
                    }
                    iou.push(inter / ((a1 + area[k]) - inter));
                }
                let labels = keep
                    .iter()
                    .map(|&k| u32::try_from(img.labels[gts[k]]))
                    .collect::<std::result::Result<Vec<u32>, _>>()
                    .map_err(|_| {
                        candle_core::Error::Msg("negative label in the mask loss".into())
                    })?;
                let kidx: Vec<u32> = keep.iter().map(|&k| k as u32).collect();
                let kidx = Tensor::from_vec(kidx, keep.len(), dev)?;
                let masks = m.index_select(&kidx, 1)?.t()?.contiguous()?.reshape((
                    keep.len(),
                    1,
                    hp,
                    wp,
                ))?;
                Some(MaskIouInputs { masks, iou, labels })
            }
        }
    };
    Ok(Some((loss, iou_inputs)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn crop_bounds_pad_by_one_in_f32_and_clip_to_the_grid() {
        // 0.1 * 138 = 13.8 -> 12.8; 0.5 * 138 = 69 -> 70; reversed boxes are ordered.
        let (cx, cy) = crop_bounds([0.5, 0.0, 0.1, 1.0], 138, 138);
        assert_eq!(cx, [0.1f32 * 138.0 - 1.0, 70.0]);
        assert_eq!(cy, [0.0, 138.0]);
        assert!(!inside(12, cx) && inside(13, cx) && inside(69, cx) && !inside(70, cx));
    }

    /// P4's table (the reference's measured figures): loss and gradient w.r.t. the logit of one
    /// pixel through sigmoid, crop and BCE.
    #[test]
    fn saturated_pixels_follow_pytorch() {
        let logits = Var::new(&[-50f32, -30.0, 20.0, 0.3], &Device::Cpu).unwrap();
        let t = Tensor::new(&[1f32, 1.0, 0.0, 1.0], &Device::Cpu).unwrap();
        // The last pixel is cropped out.
        let crop = Tensor::new(&[1f32, 1.0, 1.0, 0.0], &Device::Cpu).unwrap();
        let p = candle_nn::ops::sigmoid(logits.as_tensor())
            .unwrap()
            .mul(&crop)
            .unwrap();
        let l = binary_cross_entropy(&p, &t).unwrap();
        let lv = l.to_vec1::<f32>().unwrap();
        let g = l.sum_all().unwrap().backward().unwrap();
        let g = g.get(logits.as_tensor()).unwrap().to_vec1::<f32>().unwrap();
        let close = |a: f32, b: f32, rel: f32| (a - b).abs() <= rel * b.abs();
        assert!(
            close(lv[0], 50.0, 1e-5) && close(lv[1], 30.0, 1e-5),
            "{lv:?}"
        );
        assert_eq!(&lv[2..], &[100.0, 100.0]);
        assert!(close(g[0], -1.9e-10, 0.03), "{g:?}");
        assert!(close(g[1], -0.094, 0.01), "{g:?}");
        assert_eq!(&g[2..], &[0.0, 0.0]);
    }
}
