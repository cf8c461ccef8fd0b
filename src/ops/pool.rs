//! Max pools for training whose backward sends each output's gradient to ONE input, the first
//! maximum in PyTorch's scan order (window rows top to bottom, each left to right).
//! candle's own rules differ: a max reduction gives every tied element the full gradient and
//! `maximum` splits it between ties. Built from candle ops (views, comparisons, `where_cond`,
//! `gather`), so they run and differentiate on every device; the inference pools stay the plain
//! candle ops. NaN inputs are not handled as PyTorch does (which lets a NaN win).

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;

/// `max_pool2d(x, k, stride, padding)` over (N, C, H, W), padding with −∞ as PyTorch
/// (`padding` ≤ k / 2, so every window holds a real element), floor output size.
pub fn max_pool2d(x: &Tensor, k: usize, stride: usize, padding: usize) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    if k == 0 || stride == 0 || 2 * padding > k || h + 2 * padding < k || w + 2 * padding < k {
        candle_core::bail!(
            "max_pool2d: kernel {k}, stride {stride}, padding {padding} do not fit {h}x{w}"
        );
    }
    let (ho, wo) = (
        (h + 2 * padding - k) / stride + 1,
        (w + 2 * padding - k) / stride + 1,
    );
    // Far-side padding so that every view spans stride·ho rows (stride·wo columns) from its start.
    let far_h = (k - 1 + stride * ho).saturating_sub(h + padding);
    let far_w = (k - 1 + stride * wo).saturating_sub(w + padding);
    let xp = pad_neg_inf(x, 2, padding, far_h)?;
    let xp = pad_neg_inf(&xp, 3, padding, far_w)?;
    let wp = xp.dim(3)?;
    let mut views = Vec::with_capacity(k * k);
    for dy in 0..k {
        let rows = xp
            .narrow(2, dy, stride * ho)?
            .reshape((n, c, ho, stride, wp))?
            .narrow(3, 0, 1)?
            .squeeze(3)?;
        for dx in 0..k {
            views.push(
                rows.narrow(3, dx, stride * wo)?
                    .reshape((n, c, ho, wo, stride))?
                    .narrow(4, 0, 1)?
                    .squeeze(4)?,
            );
        }
    }
    // The maxima, outside the graph: only the selection below carries gradients.
    let mut m = views[0].detach();
    for v in &views[1..] {
        m = m.maximum(&v.detach())?;
    }
    // Nested selections from the last view to the first, so the earliest maximum wins.
    let mut views = views.into_iter().rev();
    let mut out = views
        .next()
        .ok_or_else(|| candle_core::Error::Msg("max_pool2d: empty window".into()))?;
    for v in views {
        out = v.eq(&m)?.where_cond(&v, &out)?;
    }
    Ok(out)
}

/// Max over the whole spatial map, (N, C, H, W) -> (N, C): PyTorch's
/// `max_pool2d(x, kernel_size=x.size()[2:])` flattened.
pub fn global_max_pool(x: &Tensor) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let hw = h * w;
    if hw == 0 {
        candle_core::bail!("global max pool over an empty {h}x{w} map");
    }
    let flat = x.flatten_from(2)?;
    let m = flat.detach().max_keepdim(D::Minus1)?;
    // The smallest flat index among the maxima.
    let pos = Tensor::arange(0u32, hw as u32, x.device())?
        .reshape((1, 1, hw))?
        .broadcast_as((n, c, hw))?;
    let none = Tensor::full(hw as u32, (n, c, hw), x.device())?;
    let first = flat
        .broadcast_eq(&m)?
        .where_cond(&pos, &none)?
        .min_keepdim(D::Minus1)?;
    flat.gather(&first.to_dtype(DType::U32)?, D::Minus1)?
        .squeeze(D::Minus1)
}

/// Pads dimension `dim` with `before` and `after` entries of −∞.
fn pad_neg_inf(x: &Tensor, dim: usize, before: usize, after: usize) -> Result<Tensor> {
    if before == 0 && after == 0 {
        return Ok(x.clone());
    }
    let mut parts = Vec::with_capacity(3);
    let side = |len: usize| -> Result<Tensor> {
        let mut shape = x.dims().to_vec();
        shape[dim] = len;
        Tensor::zeros(shape, x.dtype(), x.device())?.affine(1.0, f64::NEG_INFINITY)
    };
    if before > 0 {
        parts.push(side(before)?);
    }
    parts.push(x.clone());
    if after > 0 {
        parts.push(side(after)?);
    }
    Tensor::cat(&parts, dim)
}

/// [`max_pool2d`]'s values without its gradient rule: on the CPU for f32 one pass over each
/// plane in parallel (the stem's pool is a tenth of a small model's backbone as tensor ops);
/// elsewhere the same ops as [`max_pool2d`].
pub fn max_pool2d_eval(x: &Tensor, k: usize, stride: usize, padding: usize) -> Result<Tensor> {
    if !x.device().is_cpu() || x.dtype() != DType::F32 {
        return max_pool2d(&x.detach(), k, stride, padding);
    }
    let (_, _, h, w) = x.dims4()?;
    if k == 0 || stride == 0 || 2 * padding > k || h + 2 * padding < k || w + 2 * padding < k {
        candle_core::bail!(
            "max_pool2d: kernel {k}, stride {stride}, padding {padding} do not fit {h}x{w}"
        );
    }
    x.contiguous()?
        .apply_op1_no_bwd(&MaxPool { k, stride, padding })
}

struct MaxPool {
    k: usize,
    stride: usize,
    padding: usize,
}

impl CustomOp1 for MaxPool {
    fn name(&self) -> &'static str {
        "max_pool2d_eval"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = layout.shape().dims4()?;
        let (k, s, p) = (self.k, self.stride, self.padding);
        let (ho, wo) = ((h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1);
        let src = super::im2col::f32_slice(storage, layout)?;
        let mut out = vec![0f32; n * c * ho * wo];
        out.par_chunks_mut(ho * wo)
            .zip(src.par_chunks(h * w))
            .for_each(|(o, plane)| {
                for oy in 0..ho {
                    // Window rows and columns clipped to the plane: the -inf padding never wins.
                    let y0 = (oy * s).saturating_sub(p);
                    let y1 = (oy * s + k - p).min(h);
                    for ox in 0..wo {
                        let x0 = (ox * s).saturating_sub(p);
                        let x1 = (ox * s + k - p).min(w);
                        let mut m = f32::NEG_INFINITY;
                        for row in plane[y0 * w..y1 * w].chunks_exact(w) {
                            for &v in &row[x0..x1] {
                                // NaN propagates, as PyTorch's max pool.
                                if v > m || v.is_nan() {
                                    m = v;
                                }
                            }
                        }
                        o[oy * wo + ox] = m;
                    }
                }
            });
        Ok((CpuStorage::F32(out), Shape::from((n, c, ho, wo))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn the_eval_pool_equals_the_training_pool() {
        let x = Tensor::randn(0f32, 1.0, (2, 3, 11, 8), &Device::Cpu).unwrap();
        for (k, s, p) in [(3, 2, 1), (3, 1, 1), (2, 2, 0), (3, 3, 0), (2, 2, 1)] {
            let want = max_pool2d(&x, k, s, p).unwrap();
            let got = max_pool2d_eval(&x, k, s, p).unwrap();
            assert_eq!(got.dims(), want.dims(), "k {k} s {s} p {p}");
            let (g, w) = (
                got.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                want.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            );
            assert_eq!(g, w, "k {k} s {s} p {p}");
        }
        assert!(max_pool2d_eval(&x, 3, 2, 2).is_err());
    }
}
