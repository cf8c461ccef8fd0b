//! The trainable conv2d of the CPU: the forward is the banded im2col + GEMM of
//! [`super::im2col`], the backward two GEMMs per band of output rows, where candle's own conv
//! backward recovers the input gradient with a transposed conv that loops over dot products
//! (about 90% of a training step of a small model went there).
//!
//! For one image, with cols the (C·k·k, Ho·Wo) column matrix of the input x, W the (O, C·k·k)
//! weight and G the (O, Ho·Wo) output gradient:
//! * dW += G · colsᵀ (summed over the batch);
//! * dcols = Wᵀ · G, and dx is dcols scattered back to the input positions each column came from
//!   (col2im, summing overlaps); a 1x1 stride-1 conv needs no columns: dx = Wᵀ · G.
//!
//! The sums run in a different order than PyTorch's (its CPU backward is also im2col + GEMM, with
//! other blocking), so gradients agree to rounding, as the step parity tests check.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::im2col::{f32_slice, Geom};

/// Column buffer of one band in the backward: large enough that the GEMMs stay efficient, small
/// enough to bound the memory of a big conv (the 138x138 protonet conv of a 550 model would need
/// 175 MB of columns at once).
const BAND_BYTES: usize = 8 * 1024 * 1024;

/// conv2d(x, weight) + bias (NCHW f32 `x`, OIHW `weight`, (O,) `bias`, dilation 1, groups 1,
/// zero padding `pad`) with gradients for every operand. CPU only: other devices use candle's
/// conv (see the caller).
pub fn conv2d(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
    pad: usize,
) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let (_, k) = super::im2col::check_weight(x, weight)?;
    if stride == 0 || h + 2 * pad < k || w + 2 * pad < k {
        candle_core::bail!("conv2d: input {h}x{w} with padding {pad} is too small for kernel {k}");
    }
    let geom = Geom { k, stride, pad };
    let (x, weight) = (x.contiguous()?, weight.contiguous()?);
    match bias {
        None => x.apply_op2(&weight, TrainConv { geom }),
        Some(b) => {
            if b.dims() != [weight.dim(0)?] {
                candle_core::bail!("conv2d: bias {:?} for weight {:?}", b.dims(), weight.dims());
            }
            x.apply_op3(&weight, &b.contiguous()?, TrainConv { geom })
        }
    }
}

struct TrainConv {
    geom: Geom,
}

impl CustomOp2 for TrainConv {
    fn name(&self) -> &'static str {
        "im2col-conv2d-train"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        super::im2col::conv_forward(self.geom, (xs, xl), (ws, wl))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, _) = self.grads(x, w, grad, false)?;
        Ok((Some(dx), Some(dw)))
    }
}

impl CustomOp3 for TrainConv {
    fn name(&self) -> &'static str {
        "im2col-conv2d-bias-train"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        super::im2col::conv_forward_bias(self.geom, (xs, xl), (ws, wl), f32_slice(bs, bl)?)
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _bias: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, db) = self.grads(x, w, grad, true)?;
        Ok((Some(dx), Some(dw), db))
    }
}

impl TrainConv {
    /// dx, dweight and (when asked) dbias, from one pass of [`ConvGrads`].
    fn grads(
        &self,
        x: &Tensor,
        w: &Tensor,
        grad: &Tensor,
        bias: bool,
    ) -> Result<(Tensor, Tensor, Option<Tensor>)> {
        let op = ConvGrads {
            geom: self.geom,
            bias,
        };
        let all = x.apply_op3_no_bwd(w, &grad.contiguous()?, &op)?;
        let (nx, nw) = (x.elem_count(), w.elem_count());
        let dx = all.narrow(0, 0, nx)?.reshape(x.shape())?;
        let dw = all.narrow(0, nx, nw)?.reshape(w.shape())?;
        let db = if bias {
            Some(all.narrow(0, nx + nw, w.dim(0)?)?)
        } else {
            None
        };
        Ok((dx, dw, db))
    }
}

/// (x, weight, output gradient) -> [dx flattened, dweight flattened, dbias if `bias`] in one
/// buffer.
struct ConvGrads {
    geom: Geom,
    bias: bool,
}

impl CustomOp3 for ConvGrads {
    fn name(&self) -> &'static str {
        "im2col-conv2d-grads"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = xl.shape().dims4()?;
        let (o, _, _, _) = wl.shape().dims4()?;
        let g = self.geom;
        let (ho, wo) = g.out_hw(h, w);
        if gl.shape().dims() != [n, o, ho, wo] {
            candle_core::bail!(
                "conv2d backward: gradient {:?} is not ({n}, {o}, {ho}, {wo})",
                gl
            );
        }
        let (xd, wd, gd) = (f32_slice(xs, xl)?, f32_slice(ws, wl)?, f32_slice(gs, gl)?);
        let nx = n * c * h * w;
        let nb = if self.bias { o } else { 0 };
        let mut out = vec![0f32; nx + wd.len() + nb];
        let (dx, rest) = out.split_at_mut(nx);
        let (dw, db) = rest.split_at_mut(wd.len());
        let dims = ImageDims { c, h, w, o };
        for (i, ((x_i, g_i), dx_i)) in xd
            .chunks_exact(c * h * w)
            .zip(gd.chunks_exact(o * ho * wo))
            .zip(dx.chunks_exact_mut(c * h * w))
            .enumerate()
        {
            image_grads(g, dims, x_i, wd, g_i, dx_i, dw, i > 0);
        }
        if self.bias {
            let npix = ho * wo;
            let sums: Vec<f64> = (0..o)
                .into_par_iter()
                .map(|oc| {
                    gd.chunks_exact(o * npix)
                        .map(|img| {
                            img[oc * npix..(oc + 1) * npix]
                                .iter()
                                .map(|&v| f64::from(v))
                                .sum::<f64>()
                        })
                        .sum()
                })
                .collect();
            for (d, s) in db.iter_mut().zip(sums) {
                *d = s as f32;
            }
        }
        let len = out.len();
        Ok((CpuStorage::F32(out), Shape::from(len)))
    }
}

#[derive(Debug, Clone, Copy)]
struct ImageDims {
    c: usize,
    h: usize,
    w: usize,
    o: usize,
}

fn parallelism() -> gemm::Parallelism {
    gemm::Parallelism::Rayon(rayon::current_num_threads())
}

/// dst (m, n) [+]= lhs (m, k) · rhs (k, n), each operand given by its pointer and
/// (column stride, row stride).
///
/// # Safety
/// Every operand's strided extent must lie inside its buffer, and `dst` must not alias the
/// others.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_strided(
    (m, n, k): (usize, usize, usize),
    dst: (*mut f32, isize, isize),
    accumulate: bool,
    lhs: (*const f32, isize, isize),
    rhs: (*const f32, isize, isize),
) {
    gemm::gemm(
        m,
        n,
        k,
        dst.0,
        dst.1,
        dst.2,
        accumulate,
        lhs.0,
        lhs.1,
        lhs.2,
        rhs.0,
        rhs.1,
        rhs.2,
        1.0f32,
        1.0f32,
        false,
        false,
        false,
        parallelism(),
    )
}

/// One image's input gradient into `dx` (C, h, w) and its weight gradient added to `dw`
/// (overwritten when `accumulate` is false).
#[allow(clippy::too_many_arguments)]
fn image_grads(
    g: Geom,
    d: ImageDims,
    x: &[f32],
    wt: &[f32],
    grad: &[f32],
    dx: &mut [f32],
    dw: &mut [f32],
    accumulate: bool,
) {
    let ImageDims { c, h, w, o } = d;
    let (ho, wo) = g.out_hw(h, w);
    let npix = ho * wo;
    let kdim = c * g.k * g.k;
    debug_assert_eq!(wt.len(), o * kdim);
    debug_assert_eq!(dw.len(), o * kdim);
    if g.is_pointwise() {
        // SAFETY: x is (C, npix) row-major, read as its transpose (npix, C); grad (O, npix);
        // dw (O, C); wt (O, C) read as its transpose (C, O); dx (C, npix). All in bounds, and
        // the destinations are distinct buffers from the sources.
        unsafe {
            gemm_strided(
                (o, c, npix),
                (dw.as_mut_ptr(), 1, c as isize),
                accumulate,
                (grad.as_ptr(), 1, npix as isize),
                (x.as_ptr(), npix as isize, 1),
            );
            gemm_strided(
                (c, npix, o),
                (dx.as_mut_ptr(), 1, npix as isize),
                false,
                (wt.as_ptr(), c as isize, 1),
                (grad.as_ptr(), 1, npix as isize),
            );
        }
        return;
    }
    let rows = (BAND_BYTES / 4 / (kdim * wo).max(1)).clamp(1, ho);
    let mut cols = vec![0f32; kdim * rows * wo];
    let mut dcols = vec![0f32; kdim * rows * wo];
    for (b, oy0) in (0..ho).step_by(rows).enumerate() {
        let oy1 = (oy0 + rows).min(ho);
        let nb = (oy1 - oy0) * wo;
        let (cols, dcols) = (&mut cols[..kdim * nb], &mut dcols[..kdim * nb]);
        g.fill_band(x, h, w, oy0, oy1, cols);
        let g_band = &grad[oy0 * wo..];
        // SAFETY: the band of grad is columns [oy0·wo, oy0·wo + nb) of each of its O rows (row
        // stride npix), inside `grad`; cols (kdim, nb) read as its transpose (nb, kdim); wt
        // (O, kdim) read as (kdim, O); dw (O, kdim) and dcols (kdim, nb) are separate buffers.
        unsafe {
            gemm_strided(
                (o, kdim, nb),
                (dw.as_mut_ptr(), 1, kdim as isize),
                accumulate || b > 0,
                (g_band.as_ptr(), 1, npix as isize),
                (cols.as_ptr(), nb as isize, 1),
            );
            gemm_strided(
                (kdim, nb, o),
                (dcols.as_mut_ptr(), 1, nb as isize),
                false,
                (wt.as_ptr(), kdim as isize, 1),
                (g_band.as_ptr(), 1, npix as isize),
            );
        }
        col2im_band(g, h, w, oy0, oy1, dcols, dx);
    }
}

/// Adds the column gradients of output rows [oy0, oy1) to the input positions they were read
/// from (the transpose of [`Geom::fill_band`]); channels in parallel, each owning its plane.
fn col2im_band(g: Geom, h: usize, w: usize, oy0: usize, oy1: usize, dcols: &[f32], dx: &mut [f32]) {
    let (_, wo) = g.out_hw(h, w);
    let (k, s) = (g.k, g.stride);
    let nb = (oy1 - oy0) * wo;
    dx.par_chunks_mut(h * w)
        .zip(dcols.par_chunks(k * k * nb))
        .for_each(|(plane, rows)| {
            for (t, row) in rows.chunks_exact(nb).enumerate() {
                let (ky, kx) = (t / k, t % k);
                let (lo, hi) = g.valid_cols(kx, w, wo);
                if lo == hi {
                    continue;
                }
                for (oy, src) in (oy0..oy1).zip(row.chunks_exact(wo)) {
                    let iy = (oy * s + ky) as isize - g.pad as isize;
                    if iy < 0 || iy >= h as isize {
                        continue;
                    }
                    let dst = &mut plane[iy as usize * w..(iy as usize + 1) * w];
                    // lo·s + kx - pad >= 0 by construction of `lo` (see `valid_cols`).
                    let first = lo * s + kx - g.pad;
                    if s == 1 {
                        for (d, v) in dst[first..first + hi - lo].iter_mut().zip(&src[lo..hi]) {
                            *d += *v;
                        }
                    } else {
                        for (d, v) in dst[first..].iter_mut().step_by(s).zip(&src[lo..hi]) {
                            *d += *v;
                        }
                    }
                }
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// Gradients of sum(conv(x, w) * r) by candle's own conv (its backward is independent of
    /// ours: a transposed conv for x, a conv for w), on inputs padded and cropped so that candle's
    /// output-padding rule is not involved.
    fn candle_grads(
        x: &Tensor,
        w: &Tensor,
        r: &Tensor,
        s: usize,
        p: usize,
    ) -> (Vec<f32>, Vec<f32>) {
        let (xv, wv) = (Var::from_tensor(x).unwrap(), Var::from_tensor(w).unwrap());
        let (_, _, h, wd) = x.dims4().unwrap();
        let k = w.dim(2).unwrap();
        let (ho, wo) = ((h + 2 * p - k) / s + 1, (wd + 2 * p - k) / s + 1);
        let xp = xv
            .as_tensor()
            .pad_with_zeros(2, p, p)
            .unwrap()
            .pad_with_zeros(3, p, p)
            .unwrap();
        let xp = xp
            .narrow(2, 0, (ho - 1) * s + k)
            .unwrap()
            .narrow(3, 0, (wo - 1) * s + k)
            .unwrap();
        let y = xp.conv2d(wv.as_tensor(), 0, s, 1, 1).unwrap();
        let gs = (y * r).unwrap().sum_all().unwrap().backward().unwrap();
        let v = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        (
            v(gs.get(xv.as_tensor()).unwrap()),
            v(gs.get(wv.as_tensor()).unwrap()),
        )
    }

    fn rel(a: &[f32], b: &[f32]) -> f64 {
        let num: f64 = a.iter().zip(b).map(|(p, q)| f64::from(p - q).powi(2)).sum();
        let den: f64 = b.iter().map(|q| f64::from(*q).powi(2)).sum();
        (num / den.max(1e-30)).sqrt()
    }

    #[test]
    fn values_and_gradients_match_candles_conv() {
        let dev = Device::Cpu;
        // (n, c, h, w, o, k, stride, pad): 3x3 same, strided with odd and even sizes, 7x7 stem,
        // 1x1 pointwise (the no-column path), strided 1x1 (downsample), tiny inputs.
        for (n, c, h, w, o, k, s, p) in [
            (2, 3, 9, 7, 4, 3, 1, 1),
            (2, 4, 10, 9, 5, 3, 2, 1),
            (1, 3, 17, 14, 6, 7, 2, 3),
            (3, 6, 5, 8, 4, 1, 1, 0),
            (2, 6, 9, 6, 3, 1, 2, 0),
            (1, 2, 3, 3, 2, 3, 2, 1),
        ] {
            let x = Tensor::randn(0f32, 1.0, (n, c, h, w), &dev).unwrap();
            let wt = Tensor::randn(0f32, 1.0, (o, c, k, k), &dev).unwrap();
            let xv = Var::from_tensor(&x).unwrap();
            let wv = Var::from_tensor(&wt).unwrap();
            let y = conv2d(xv.as_tensor(), wv.as_tensor(), None, s, p).unwrap();
            let want = x.conv2d(&wt, p, s, 1, 1).unwrap();
            assert_eq!(y.dims(), want.dims(), "{:?}", (n, c, h, w, o, k, s, p));
            let v = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert!(rel(&v(&y), &v(&want)) < 1e-5);
            let r = Tensor::randn(0f32, 1.0, y.dims(), &dev).unwrap();
            let gs = (y * &r).unwrap().sum_all().unwrap().backward().unwrap();
            let (gx, gw) = (
                v(gs.get(xv.as_tensor()).unwrap()),
                v(gs.get(wv.as_tensor()).unwrap()),
            );
            let (cx, cw) = candle_grads(&x, &wt, &r, s, p);
            let (ex, ew) = (rel(&gx, &cx), rel(&gw, &cw));
            assert!(
                ex < 1e-5 && ew < 1e-5,
                "{:?}: dx {ex}, dw {ew}",
                (n, c, h, w, o, k, s, p)
            );
        }
    }

    #[test]
    fn the_bias_gradient_is_the_sum_of_the_output_gradient() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (3, 4, 6, 5), &dev).unwrap();
        let wt = Tensor::randn(0f32, 1.0, (5, 4, 3, 3), &dev).unwrap();
        let b = Tensor::randn(0f32, 1.0, 5, &dev).unwrap();
        let vars = [&x, &wt, &b].map(|t| Var::from_tensor(t).unwrap());
        let y = conv2d(
            vars[0].as_tensor(),
            vars[1].as_tensor(),
            Some(vars[2].as_tensor()),
            2,
            1,
        )
        .unwrap();
        let plain = x
            .conv2d(&wt, 1, 2, 1, 1)
            .unwrap()
            .broadcast_add(&b.reshape((1, 5, 1, 1)).unwrap())
            .unwrap();
        let v = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(rel(&v(&y), &v(&plain)) < 1e-5);
        let r = Tensor::randn(0f32, 1.0, y.dims(), &dev).unwrap();
        let gs = (y * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let want = r
            .sum_keepdim(0)
            .unwrap()
            .sum_keepdim(2)
            .unwrap()
            .sum_keepdim(3)
            .unwrap();
        assert!(rel(&v(gs.get(vars[2].as_tensor()).unwrap()), &v(&want)) < 1e-6);
        let (cx, cw) = candle_grads(&x, &wt, &r, 2, 1);
        assert!(rel(&v(gs.get(vars[0].as_tensor()).unwrap()), &cx) < 1e-5);
        assert!(rel(&v(gs.get(vars[1].as_tensor()).unwrap()), &cw) < 1e-5);
    }

    #[test]
    fn a_large_conv_is_cut_into_bands_with_the_same_gradients() {
        // 64 channels at 3x3 over 40 rows of 120: more than one backward band.
        let dev = Device::Cpu;
        let (c, h, w) = (64, 40, 120);
        assert!(c * 9 * w * h * 4 > BAND_BYTES);
        let x = Tensor::randn(0f32, 1.0, (1, c, h, w), &dev).unwrap();
        let wt = Tensor::randn(0f32, 0.1, (8, c, 3, 3), &dev).unwrap();
        let (xv, wv) = (
            Var::from_tensor(&x).unwrap(),
            Var::from_tensor(&wt).unwrap(),
        );
        let y = conv2d(xv.as_tensor(), wv.as_tensor(), None, 1, 1).unwrap();
        let r = Tensor::randn(0f32, 1.0, y.dims(), &dev).unwrap();
        let gs = (y * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let v = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let (cx, cw) = candle_grads(&x, &wt, &r, 1, 1);
        assert!(rel(&v(gs.get(xv.as_tensor()).unwrap()), &cx) < 1e-5);
        assert!(rel(&v(gs.get(wv.as_tensor()).unwrap()), &cw) < 1e-5);
    }

    #[test]
    fn a_kernel_larger_than_the_padded_input_is_an_error() {
        let dev = Device::Cpu;
        let x = Tensor::zeros((1, 2, 2, 2), candle_core::DType::F32, &dev).unwrap();
        let wt = Tensor::zeros((1, 2, 7, 7), candle_core::DType::F32, &dev).unwrap();
        assert!(conv2d(&x, &wt, None, 1, 1).is_err());
        assert!(conv2d(&x, &wt.narrow(1, 0, 1).unwrap(), None, 1, 3).is_err());
        let b = Tensor::zeros(2, candle_core::DType::F32, &dev).unwrap();
        let w1 = Tensor::zeros((1, 2, 1, 1), candle_core::DType::F32, &dev).unwrap();
        assert!(
            conv2d(&x, &w1, Some(&b), 1, 0).is_err(),
            "bias of 2 for 1 output channel"
        );
    }
}
