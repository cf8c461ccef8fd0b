//! Modulated deformable convolution (DCNv2), spec §3.

use candle_core::{Result, Tensor};

/// out = bias + weight · deform_im2col(x, offset, mask)
///
/// * `x`: (N, C, H, W); `offset`: (N, 18, Ho, Wo) interleaved (dy, dx) per tap; `mask`: (N, 9, Ho, Wo),
///   already passed through a sigmoid; `weight`: (O, C, 3, 3); `bias`: (O,).
/// * kernel 3x3, padding 1, dilation 1, `stride` 1 or 2.
///
/// STUB: the real implementation lands with the DCN work.
pub fn modulated_deform_conv2d(
    _x: &Tensor,
    _offset: &Tensor,
    _mask: &Tensor,
    _weight: &Tensor,
    _bias: &Tensor,
    _stride: usize,
) -> Result<Tensor> {
    candle_core::bail!("modulated_deform_conv2d: not implemented yet")
}
