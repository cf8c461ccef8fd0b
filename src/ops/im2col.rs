//! Convolution as tiled im2col + GEMM, written straight into the NCHW output.
//!
//! The output of one image is the (O, Ho·Wo) matrix W·cols, W the (O, C·k·k) weight and cols the
//! (C·k·k, Ho·Wo) column matrix. Building cols whole costs k·k times the input (175 MB for the
//! 138x138 protonet conv) and makes the conv memory-bound, so the output is cut into bands of rows:
//! each band's columns are built into a per-thread buffer small enough to stay in L2 and
//! multiplied at once by a single-threaded GEMM whose destination is the band's slice of the
//! output, with the bias pre-loaded so the GEMM accumulates onto it. Bands run in parallel on
//! rayon. A 1x1 stride-1 conv needs no columns: its band of the input already is the right matrix.

use std::cell::Cell;

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Target size of one band's column buffer: half of a core's L2 (2 MiB) on the AVX-512 Xeons we
/// run on, leaving room for the GEMM's packed tiles.
const BAND_BYTES: usize = 1024 * 1024;
/// Band width, relative to the number of output channels, below which re-packing the weight for
/// every band costs more memory traffic than the columns themselves.
const WEIGHT_REUSE: usize = 1;
const MIN_BAND_COLS: usize = 64;

thread_local! {
    /// Reused column buffer of each rayon worker; grows to the largest band seen.
    static COLS: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
}

/// Geometry of one conv: square kernel `k`, `stride`, zero padding `pad`, dilation 1, groups 1.
#[derive(Debug, Clone, Copy)]
pub(super) struct Geom {
    pub(super) k: usize,
    pub(super) stride: usize,
    pub(super) pad: usize,
}

impl Geom {
    pub(super) fn out_hw(&self, h: usize, w: usize) -> (usize, usize) {
        (
            (h + 2 * self.pad - self.k) / self.stride + 1,
            (w + 2 * self.pad - self.k) / self.stride + 1,
        )
    }

    pub(super) fn is_pointwise(&self) -> bool {
        self.k == 1 && self.stride == 1 && self.pad == 0
    }

    /// Output columns [lo, hi) of one output row whose input column ox·s + kx - pad lies in [0, w).
    pub(super) fn valid_cols(&self, kx: usize, w: usize, wo: usize) -> (usize, usize) {
        let (s, p, kx) = (self.stride, self.pad as isize, kx as isize);
        let lo = if kx >= p {
            0
        } else {
            ((p - kx) as usize).div_ceil(s)
        };
        let lim = w as isize - kx + p; // need ox·s < lim
        let hi = if lim <= 0 {
            0
        } else {
            (lim as usize).div_ceil(s).min(wo)
        };
        (lo.min(hi), hi)
    }

    /// Fills the column matrix of output rows [oy0, oy1) for all channels of one image `x`
    /// (C, h, w): row c·k·k + ky·k + kx (OIHW weight order), each (oy1 - oy0)·wo long.
    pub(super) fn fill_band(
        &self,
        x: &[f32],
        h: usize,
        w: usize,
        oy0: usize,
        oy1: usize,
        cols: &mut [f32],
    ) {
        let (_, wo) = self.out_hw(h, w);
        let (k, s) = (self.k, self.stride);
        let n = (oy1 - oy0) * wo;
        for (t, row) in cols.chunks_exact_mut(n).enumerate() {
            let (c, ky, kx) = (t / (k * k), (t / k) % k, t % k);
            let plane = &x[c * h * w..(c + 1) * h * w];
            let (lo, hi) = self.valid_cols(kx, w, wo);
            for (oy, dst) in (oy0..oy1).zip(row.chunks_exact_mut(wo)) {
                let iy = (oy * s + ky) as isize - self.pad as isize;
                if iy < 0 || iy >= h as isize {
                    dst.fill(0.0);
                    continue;
                }
                let src = &plane[iy as usize * w..(iy as usize + 1) * w];
                dst[..lo].fill(0.0);
                dst[hi..].fill(0.0);
                if lo == hi {
                    continue;
                }
                // lo·s + kx - pad >= 0 by construction of `lo` when the range is not empty.
                let first = lo * s + kx - self.pad;
                if s == 1 {
                    dst[lo..hi].copy_from_slice(&src[first..first + hi - lo]);
                } else {
                    for (d, v) in dst[lo..hi].iter_mut().zip(src[first..].iter().step_by(s)) {
                        *d = *v;
                    }
                }
            }
        }
    }
}

/// Output rows per band, or `None` for a single band over the whole image that leaves the
/// threading to the GEMM. A band's column buffer aims at `BAND_BYTES`, and it is at least
/// `WEIGHT_REUSE` times as wide as the weight is tall, since every band's GEMM packs the whole
/// (O, C·k·k) weight again. Band parallelism needs at least two bands per worker to balance.
fn band_rows(kdim: usize, o: usize, ho: usize, wo: usize) -> Option<usize> {
    let cols = (BAND_BYTES / 4 / kdim.max(1))
        .max(WEIGHT_REUSE * o)
        .max(MIN_BAND_COLS);
    let rows = cols.div_ceil(wo).clamp(1, ho);
    (ho.div_ceil(rows) >= 2 * rayon::current_num_threads()).then_some(rows)
}

/// Raw output pointer shared by bands that write disjoint column ranges of the same rows.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: every band writes only its own columns [oy0·wo, oy1·wo) of each output row, and the
// buffer outlives the parallel loop that uses it.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// A method (not a field access) so closures capture the whole `Send` wrapper.
    ///
    /// # Safety
    /// `off` must lie inside the output buffer.
    unsafe fn add(self, off: usize) -> *mut f32 {
        self.0.add(off)
    }
}

/// What is folded into the GEMM's output pass: a per-channel bias and a residual (O, Ho·Wo) are
/// pre-loaded into the destination, ReLU is applied to each band while it is still in cache.
#[derive(Clone, Copy, Default)]
struct Epilogue<'a> {
    bias: Option<&'a [f32]>,
    residual: Option<&'a [f32]>,
    relu: bool,
}

/// Convolves one image `x` (C, h, w) with `wt` (O, C·k·k) into `out` (O, Ho·Wo).
#[allow(clippy::too_many_arguments)]
fn conv_image(
    g: Geom,
    x: &[f32],
    c: usize,
    h: usize,
    w: usize,
    wt: &[f32],
    o: usize,
    ep: Epilogue,
    out: &mut [f32],
) {
    let Epilogue {
        bias,
        residual,
        relu,
    } = ep;
    let (ho, wo) = g.out_hw(h, w);
    let kdim = c * g.k * g.k;
    let npix = ho * wo;
    debug_assert_eq!(x.len(), c * h * w);
    debug_assert_eq!(wt.len(), o * kdim);
    debug_assert_eq!(out.len(), o * npix);
    debug_assert!(residual.is_none_or(|r| r.len() == o * npix));
    let read_dst = bias.is_some() || residual.is_some();
    let split = band_rows(kdim, o, ho, wo);
    let (rows, par) = match split {
        Some(r) => (r, gemm::Parallelism::None),
        None => (ho, gemm::Parallelism::Rayon(rayon::current_num_threads())),
    };
    let dst = OutPtr(out.as_mut_ptr());
    let band = |b: usize| {
        let (oy0, oy1) = (b * rows, ((b + 1) * rows).min(ho));
        let (j0, n) = (oy0 * wo, (oy1 - oy0) * wo);
        // SAFETY: columns [j0, j0 + n) of each of the O rows (row stride npix) lie inside `out`
        // and belong to this band alone (see `OutPtr`).
        let d = unsafe { dst.add(j0) };
        // SAFETY: as above, row `oc` of this band.
        let row = |oc: usize| unsafe { std::slice::from_raw_parts_mut(d.add(oc * npix), n) };
        match (bias, residual) {
            (Some(bias), None) => {
                for (oc, &bv) in bias.iter().enumerate() {
                    row(oc).fill(bv);
                }
            }
            (bias, Some(res)) => {
                for oc in 0..o {
                    let bv = bias.map_or(0.0, |b| b[oc]);
                    let src = &res[oc * npix + j0..oc * npix + j0 + n];
                    for (dv, &rv) in row(oc).iter_mut().zip(src) {
                        *dv = rv + bv;
                    }
                }
            }
            (None, None) => {}
        }
        let gemm_into = |rhs: *const f32, rhs_rs: isize| {
            // SAFETY: dst (O, n) with strides (npix, 1), lhs (O, kdim) contiguous, rhs (kdim, n)
            // with strides (rhs_rs, 1); all in bounds. dst := [dst] + wt·rhs.
            unsafe {
                gemm::gemm(
                    o,
                    n,
                    kdim,
                    d,
                    1,
                    npix as isize,
                    read_dst,
                    wt.as_ptr(),
                    1,
                    kdim as isize,
                    rhs,
                    1,
                    rhs_rs,
                    1.0f32,
                    1.0f32,
                    false,
                    false,
                    false,
                    par,
                )
            }
        };
        if g.is_pointwise() {
            gemm_into(x[j0..].as_ptr(), npix as isize);
        } else {
            // Taken out of the cell, not borrowed: while a parallel GEMM waits, rayon lets this
            // worker run a band of another caller's conv (another engine's or camera's frame),
            // which then starts with an empty buffer of its own instead of finding this one
            // borrowed.
            let mut cols = COLS.with(|cell| cell.take());
            if cols.len() < kdim * n {
                cols.resize(kdim * n, 0.0);
            }
            let band_cols = &mut cols[..kdim * n];
            g.fill_band(x, h, w, oy0, oy1, band_cols);
            gemm_into(band_cols.as_ptr(), n as isize);
            COLS.with(|cell| {
                // Keep the larger buffer if a stolen job left one behind.
                let left = cell.take();
                cell.set(if left.len() > cols.len() { left } else { cols });
            });
        }
        if relu {
            for oc in 0..o {
                for v in row(oc) {
                    *v = v.max(0.0);
                }
            }
        }
    };
    let bands = ho.div_ceil(rows);
    if bands == 1 {
        band(0);
    } else {
        (0..bands).into_par_iter().for_each(band);
    }
}

/// (O, k) of an OIHW square-kernel `weight` whose input channels are those of NCHW `x`.
pub(super) fn check_weight(x: &Tensor, weight: &Tensor) -> Result<(usize, usize)> {
    let (_, c, _, _) = x.dims4()?;
    let (o, ci, k, k2) = weight.dims4()?;
    if ci != c || k != k2 {
        candle_core::bail!(
            "conv2d: weight {:?} does not fit input {:?}",
            weight.dims(),
            x.dims()
        );
    }
    Ok((o, k))
}

/// The plain conv (no bias, residual or ReLU) of NCHW `x` by OIHW `w`, both f32 and contiguous:
/// the forward of the trainable conv ([`super::conv_train`]).
pub(super) fn conv_forward(
    geom: Geom,
    x: (&CpuStorage, &Layout),
    w: (&CpuStorage, &Layout),
) -> Result<(CpuStorage, Shape)> {
    ConvOp {
        geom,
        bias: None,
        relu: false,
    }
    .run(x, w, None)
}

/// [`conv_forward`] plus a per-channel `bias`.
pub(super) fn conv_forward_bias(
    geom: Geom,
    x: (&CpuStorage, &Layout),
    w: (&CpuStorage, &Layout),
    bias: &[f32],
) -> Result<(CpuStorage, Shape)> {
    ConvOp {
        geom,
        bias: Some(bias.to_vec()),
        relu: false,
    }
    .run(x, w, None)
}

/// The conv as a candle op over (input, weight[, residual]), bias carried by value.
struct ConvOp {
    geom: Geom,
    bias: Option<Vec<f32>>,
    relu: bool,
}

impl ConvOp {
    fn run(
        &self,
        (xs, xl): (&CpuStorage, &Layout),
        (ws, wl): (&CpuStorage, &Layout),
        residual: Option<(&CpuStorage, &Layout)>,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = xl.shape().dims4()?;
        let (o, ci, k, _) = wl.shape().dims4()?;
        let g = self.geom;
        if ci != c || k != g.k {
            candle_core::bail!("conv2d: weight {:?} does not fit input {:?}", wl, xl);
        }
        if h == 0 || w == 0 || h + 2 * g.pad < g.k || w + 2 * g.pad < g.k || g.stride == 0 {
            candle_core::bail!("conv2d: input {h}x{w} too small for kernel {}", g.k);
        }
        let (ho, wo) = g.out_hw(h, w);
        let xd = f32_slice(xs, xl)?;
        let wd = f32_slice(ws, wl)?;
        let res = match residual {
            Some((rs, rl)) => {
                if rl.shape().dims() != [n, o, ho, wo] {
                    candle_core::bail!("conv2d: residual {:?} is not ({n}, {o}, {ho}, {wo})", rl);
                }
                Some(f32_slice(rs, rl)?)
            }
            None => None,
        };
        let bias = self.bias.as_deref();
        if bias.is_some_and(|b| b.len() != o) {
            candle_core::bail!("conv2d: bias does not have {o} entries");
        }
        let per_out = o * ho * wo;
        let mut out = vec![0f32; n * per_out];
        for (i, (img, dst)) in xd
            .chunks_exact(c * h * w)
            .zip(out.chunks_exact_mut(per_out))
            .enumerate()
        {
            let ep = Epilogue {
                bias,
                residual: res.map(|r| &r[i * per_out..(i + 1) * per_out]),
                relu: self.relu,
            };
            conv_image(g, img, c, h, w, wd, o, ep, dst);
        }
        Ok((CpuStorage::F32(out), Shape::from((n, o, ho, wo))))
    }
}

pub(super) fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    let CpuStorage::F32(d) = s else {
        candle_core::bail!("conv2d: only f32 is supported");
    };
    let Some((a, b)) = l.contiguous_offsets() else {
        candle_core::bail!("conv2d: operands must be contiguous");
    };
    Ok(&d[a..b])
}

impl CustomOp2 for ConvOp {
    fn name(&self) -> &'static str {
        "im2col-conv2d"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.run((xs, xl), (ws, wl), None)
    }
}

impl CustomOp3 for ConvOp {
    fn name(&self) -> &'static str {
        "im2col-conv2d-residual"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        rs: &CpuStorage,
        rl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.run((xs, xl), (ws, wl), Some((rs, rl)))
    }
}

/// relu?(conv2d(x, weight) + bias + residual) for NCHW f32 `x`, OIHW `weight`, (O,) `bias` and a
/// `residual` of the output's shape (dilation 1, groups 1). On CPU the additions and the ReLU ride
/// on the GEMM's output pass instead of separate passes over the output.
pub fn conv2d_fused(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    residual: Option<&Tensor>,
    relu: bool,
    stride: usize,
    pad: usize,
) -> Result<Tensor> {
    let (o, k) = check_weight(x, weight)?;
    if !x.device().is_cpu() || x.dtype() != candle_core::DType::F32 {
        let mut y = x.conv2d(weight, pad, stride, 1, 1)?;
        if let Some(b) = bias {
            y = y.broadcast_add(&b.reshape((1, o, 1, 1))?)?;
        }
        if let Some(r) = residual {
            y = (y + r)?;
        }
        return if relu { y.relu() } else { Ok(y) };
    }
    let bias = match bias {
        Some(b) => Some(
            b.flatten_all()?
                .to_dtype(candle_core::DType::F32)?
                .to_vec1()?,
        ),
        None => None,
    };
    let op = ConvOp {
        geom: Geom { k, stride, pad },
        bias,
        relu,
    };
    let (x, weight) = (x.contiguous()?, weight.contiguous()?);
    match residual {
        Some(r) => x.apply_op3_no_bwd(&weight, &r.contiguous()?, &op),
        None => x.apply_op2_no_bwd(&weight, &op),
    }
}

/// conv2d(x, weight) + bias for NCHW f32 `x`, OIHW `weight` and (O,) `bias` (dilation 1, groups 1).
pub fn conv2d_bias(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
    pad: usize,
) -> Result<Tensor> {
    conv2d_fused(x, weight, bias, None, false, stride, pad)
}

/// conv2d(x, weight) for NCHW f32 `x` and OIHW `weight` (dilation 1, groups 1), no bias.
pub fn conv2d(x: &Tensor, weight: &Tensor, stride: usize, pad: usize) -> Result<Tensor> {
    conv2d_bias(x, weight, None, stride, pad)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::test_util::{self as tu, Nd};

    #[test]
    fn im2col_conv_matches_naive_conv_for_all_geometries() {
        for &(k, s, p, h, w) in &[
            (3, 1, 1, 7, 9),
            (3, 2, 1, 7, 9),
            (3, 2, 1, 8, 6),
            (3, 2, 0, 9, 11),
            (7, 2, 3, 13, 10),
            (1, 1, 0, 5, 4),
            (1, 2, 0, 5, 7),
            (3, 1, 1, 1, 1),
            (3, 2, 1, 1, 2),
        ] {
            let x = tu::rand_input(2, 3, h, w);
            let wt = tu::rand_input(5, 3, k, k);
            let got = conv2d(&x, &wt, s, p).unwrap();
            let want = tu::conv(&Nd::from_tensor(&x), &Nd::from_tensor(&wt), None, s, p);
            assert_eq!(
                got.dims(),
                &[2, 5, want.h, want.w],
                "k{k} s{s} p{p} {h}x{w}"
            );
            let err = tu::rel_err(&got, &want);
            assert!(err < 1e-5, "k{k} s{s} p{p} {h}x{w}: {err}");
        }
    }

    /// Sizes that split into many bands of several rows, with a ragged last band, and enough
    /// channels that each band's GEMM has a deep reduction; bias accumulated by the GEMM.
    #[test]
    fn banded_conv_with_bias_matches_naive_conv() {
        for &(c, o, k, s, p, h, w) in &[
            (64, 24, 3, 1, 1, 37, 29),
            (48, 16, 3, 2, 1, 41, 23),
            (96, 40, 1, 1, 0, 45, 31),
            (32, 8, 1, 2, 0, 33, 35),
            (3, 8, 7, 2, 3, 61, 47),
        ] {
            let x = tu::rand_input(2, c, h, w);
            let wt = tu::rand_input(o, c, k, k);
            let b: Vec<f32> = (0..o).map(|i| i as f32 * 0.25 - 1.5).collect();
            let bt = Tensor::new(b.as_slice(), x.device()).unwrap();
            let got = conv2d_bias(&x, &wt, Some(&bt), s, p).unwrap();
            let bd: Vec<f64> = b.iter().map(|&v| v as f64).collect();
            let want = tu::conv(&Nd::from_tensor(&x), &Nd::from_tensor(&wt), Some(&bd), s, p);
            assert_eq!(got.dims(), &[2, o, want.h, want.w]);
            let err = tu::rel_err(&got, &want);
            assert!(err < 1e-5, "c{c} o{o} k{k} s{s} p{p} {h}x{w}: {err}");
        }
    }

    /// Bias, residual and ReLU folded into a banded and a single-band conv, against the naive conv
    /// followed by the separate ops.
    #[test]
    fn fused_epilogue_matches_separate_ops() {
        for &(c, o, k, s, p, h, w) in &[(64, 24, 3, 1, 1, 37, 29), (16, 12, 1, 2, 0, 9, 7)] {
            let x = tu::rand_input(2, c, h, w);
            let wt = tu::rand_input(o, c, k, k);
            let b: Vec<f32> = (0..o).map(|i| i as f32 * 0.25 - 1.5).collect();
            let bt = Tensor::new(b.as_slice(), x.device()).unwrap();
            let bd: Vec<f64> = b.iter().map(|&v| v as f64).collect();
            let lin = tu::conv(&Nd::from_tensor(&x), &Nd::from_tensor(&wt), Some(&bd), s, p);
            let res = tu::rand_input(2, o, lin.h, lin.w);
            let relu = conv2d_fused(&x, &wt, Some(&bt), None, true, s, p).unwrap();
            assert!(tu::rel_err(&relu, &lin.relu()) < 1e-5);
            let want = lin.add(&Nd::from_tensor(&res)).relu();
            let got = conv2d_fused(&x, &wt, Some(&bt), Some(&res), true, s, p).unwrap();
            assert!(tu::rel_err(&got, &want) < 1e-5);
            let want = lin.add(&Nd::from_tensor(&res));
            let got = conv2d_fused(&x, &wt, Some(&bt), Some(&res), false, s, p).unwrap();
            assert!(tu::rel_err(&got, &want) < 1e-5);
        }
    }

    #[test]
    fn band_rows_cover_the_output_and_split_for_every_worker() {
        let workers = rayon::current_num_threads();
        for &(kdim, o, ho, wo) in &[
            (2304, 256, 138, 138),
            (147, 64, 275, 275),
            (4608, 512, 18, 18),
            (9, 4, 1, 1),
        ] {
            if let Some(r) = band_rows(kdim, o, ho, wo) {
                assert!(r >= 1 && r <= ho, "{kdim} {ho} {wo}: {r}");
                assert!(ho.div_ceil(r) >= 2 * workers);
                assert!(r * wo >= WEIGHT_REUSE * o || r == ho);
            }
        }
        assert!(band_rows(2304, 256, 138, 138).is_some());
        assert!(band_rows(9, 4, 1, 1).is_none());
    }

    /// Two callers' convs on one pool, as two engines' frames are: a worker waiting inside a
    /// parallel single-band GEMM steals a band of the other conv and runs it on the same thread
    /// while the first still uses its column buffer (a buffer borrowed from a RefCell across the
    /// GEMM panicked with "already borrowed" in the parity tests). Each must still get the right
    /// answer.
    #[test]
    fn concurrent_convs_on_one_pool_share_no_column_buffer() {
        let shapes = [(256, 256, 3, 1, 1, 20, 20), (64, 24, 3, 1, 1, 160, 29)];
        let cases: Vec<_> = shapes
            .iter()
            .map(|&(c, o, k, s, p, h, w)| {
                let x = tu::rand_input(1, c, h, w);
                let wt = tu::rand_input(o, c, k, k);
                let want = tu::conv(&Nd::from_tensor(&x), &Nd::from_tensor(&wt), None, s, p);
                (x, wt, s, p, want)
            })
            .collect();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        pool.install(|| {
            assert!(
                band_rows(256 * 9, 256, 20, 20).is_none(),
                "first shape: one band"
            );
            assert!(
                band_rows(64 * 9, 24, 160, 29).is_some(),
                "second shape: banded"
            );
        });
        // Each frame enters the pool from outside, as `Engine::infer_batch` does from the
        // caller's thread, so a waiting worker's queue holds only GEMM halves to steal.
        let worst = std::thread::scope(|s| {
            let runs: Vec<_> = cases
                .iter()
                .map(|(x, wt, st, p, want)| {
                    let pool = &pool;
                    s.spawn(move || {
                        (0..40)
                            .map(|_| {
                                pool.install(|| tu::rel_err(&conv2d(x, wt, *st, *p).unwrap(), want))
                            })
                            .fold(0.0, f64::max)
                    })
                })
                .collect();
            runs.into_iter()
                .map(|r| r.join().expect("a conv panicked"))
                .fold(0.0, f64::max)
        });
        assert!(worst < 1e-5, "{worst}");
    }

    #[test]
    fn mismatched_weight_is_an_error() {
        let x = tu::rand_input(1, 3, 5, 5);
        let wt = tu::rand_input(4, 2, 3, 3);
        assert!(conv2d(&x, &wt, 1, 1).is_err());
        let wt = tu::rand_input(4, 3, 5, 5);
        assert!(conv2d(&tu::rand_input(1, 3, 2, 2), &wt, 1, 0).is_err());
    }
}
