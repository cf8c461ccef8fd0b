//! Anchor boxes (docs/model.md §4): per level P3..P7, per cell, scale-major, aspect-ratio-minor.
//! The levels' sizes come from the network's geometry, [`crate::model::conv_sizes`].

use candle_core::{Device, Tensor};

use crate::config::YolactConfig;

/// All priors as (cx, cy, w, h), relative to the image, in the head's flattening order.
///
/// Computed in f64 and rounded to f32 once, as the reference builds them in Python doubles.
pub fn make_priors(cfg: &YolactConfig, conv_sizes: &[(usize, usize)]) -> Vec<[f32; 4]> {
    let max_size = cfg.max_size as f64;
    let mut out = Vec::with_capacity(
        conv_sizes.iter().map(|(h, w)| h * w).sum::<usize>() * cfg.priors_per_cell(),
    );
    for (level, &(conv_h, conv_w)) in conv_sizes.iter().enumerate() {
        let Some(scales) = cfg.pred_scales.get(level) else {
            break;
        };
        for y in 0..conv_h {
            for x in 0..conv_w {
                // Centres come from the feature-map size, not the stride (69 * 8 != 550).
                let cx = (x as f64 + 0.5) / conv_w as f64;
                let cy = (y as f64 + 0.5) / conv_h as f64;
                for &scale in scales {
                    for &ar in &cfg.aspect_ratios {
                        let r = ar.sqrt();
                        let w = scale * r / max_size;
                        let h = if cfg.use_square_anchors {
                            // v1 checkpoints were trained with this bug: squares of side s*sqrt(ar).
                            w
                        } else {
                            scale / r / max_size
                        };
                        out.push([cx as f32, cy as f32, w as f32, h as f32]);
                    }
                }
            }
        }
    }
    out
}

/// [`make_priors`] as a (P, 4) f32 tensor on `device`.
pub fn priors_tensor(
    cfg: &YolactConfig,
    conv_sizes: &[(usize, usize)],
    device: &Device,
) -> candle_core::Result<Tensor> {
    let priors = make_priors(cfg, conv_sizes);
    let n = priors.len();
    let flat: Vec<f32> = priors.into_iter().flatten().collect();
    Tensor::from_vec(flat, (n, 4), device)
}
