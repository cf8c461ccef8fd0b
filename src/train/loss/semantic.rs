//! The semantic segmentation term S (the reference's `semantic_segmentation_loss`): per image,
//! BCE-with-logits of the (C, h, w) logits against multi-label class maps built from the non-crowd
//! ground truth (downsampled, > 0.5, max over the objects of each class), summed and divided by h *
//! w.

use candle_core::{bail, Result, Tensor};

use super::mask::downsample_targets;

/// The (C, h, w) 0/1 class maps of one image from its non-crowd masks (G, S, S) and labels.
pub fn class_targets(
    masks: &Tensor,
    labels: &[i64],
    c: usize,
    h: usize,
    w: usize,
) -> Result<Vec<f32>> {
    let d = downsample_targets(masks, h, w)?;
    if d.len() != labels.len() * h * w {
        bail!(
            "semantic loss: {} masks for {} labels",
            d.len() / (h * w).max(1),
            labels.len()
        );
    }
    let plane = h * w;
    let mut t = vec![0f32; c * plane];
    for (k, &l) in labels.iter().enumerate() {
        let Some(cls) = usize::try_from(l).ok().filter(|&v| v < c) else {
            bail!("semantic loss: label {l} outside 0..{c}");
        };
        let dst = &mut t[cls * plane..(cls + 1) * plane];
        for (o, &v) in dst.iter_mut().zip(&d[k * plane..(k + 1) * plane]) {
            if v != 0 {
                *o = 1.0;
            }
        }
    }
    Ok(t)
}

/// Sum of the numerically stable BCE-with-logits, `max(x, 0) - x t + ln(1 + exp(-|x|))`; its
/// gradient is `sigmoid(x) - t`.
pub fn bce_with_logits_sum(x: &Tensor, t: &Tensor) -> Result<Tensor> {
    let pos = x.relu()?;
    let soft = x.abs()?.neg()?.exp()?.affine(1.0, 1.0)?.log()?;
    pos.sub(&x.mul(t)?)?.add(&soft)?.sum_all()
}

/// One image's S contribution before the batch division: (C, h, w) logits `segm`.
pub fn semantic_image(segm: &Tensor, masks: &Tensor, labels: &[i64], alpha: f32) -> Result<Tensor> {
    let (c, h, w) = segm.dims3()?;
    let t = class_targets(masks, labels, c, h, w)?;
    let t = Tensor::from_vec(t, (c, h, w), segm.device())?;
    bce_with_logits_sum(segm, &t)?.affine(1.0 / (h * w) as f64 * alpha as f64, 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn bce_with_logits_value_and_gradient() {
        let x = Var::new(&[-3f32, 0.0, 2.0], &Device::Cpu).unwrap();
        let t = Tensor::new(&[0f32, 1.0, 1.0], &Device::Cpu).unwrap();
        let l = bce_with_logits_sum(x.as_tensor(), &t).unwrap();
        let sig = |v: f32| 1.0 / (1.0 + (-v).exp());
        let want = -(1.0 - sig(-3.0)).ln() - sig(0.0).ln() - sig(2.0).ln();
        assert!((l.to_scalar::<f32>().unwrap() - want).abs() < 1e-6);
        let g = l.backward().unwrap();
        let g = g.get(x.as_tensor()).unwrap().to_vec1::<f32>().unwrap();
        for (gi, (v, ti)) in g.iter().zip([(-3f32, 0f32), (0.0, 1.0), (2.0, 1.0)]) {
            assert!((gi - (sig(v) - ti)).abs() < 1e-6, "{g:?}");
        }
    }

    #[test]
    fn class_maps_take_the_max_over_objects_of_a_class() {
        // Two 4x4 masks of class 1 (left and right halves) and one of class 0, at full size.
        let mut m = vec![0f32; 3 * 16];
        for y in 0..4 {
            for x in 0..4 {
                m[y * 4 + x] = (x < 2) as u8 as f32;
                m[16 + y * 4 + x] = (x >= 2) as u8 as f32;
                m[32 + y * 4 + x] = (y == 0) as u8 as f32;
            }
        }
        let m = Tensor::from_vec(m, (3, 4, 4), &Device::Cpu).unwrap();
        let t = class_targets(&m, &[1, 1, 0], 3, 4, 4).unwrap();
        assert!(t[16..32].iter().all(|&v| v == 1.0));
        assert_eq!(t[..16].iter().sum::<f32>(), 4.0);
        assert!(t[32..].iter().all(|&v| v == 0.0));
    }
}
