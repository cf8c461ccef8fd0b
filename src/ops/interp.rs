//! Bilinear resize with PyTorch's `align_corners=False`, no-antialias semantics (spec §9.3).

use candle_core::{Result, Tensor};

/// Resizes an (N, C, H, W) tensor to (N, C, out_h, out_w).
///
/// STUB: delegates to candle until the exact half-pixel custom op lands.
pub fn resize_bilinear(x: &Tensor, out_h: usize, out_w: usize) -> Result<Tensor> {
    x.upsample_bilinear2d(out_h, out_w, false)
}
