//! Batch norm with batch statistics as one CPU op with its analytic backward. Composed from
//! candle ops (mean, subtract, multiply by broadcast per-channel tensors), every per-channel
//! tensor's gradient is a reduction over (N, H, W) that candle runs element by element through
//! index arithmetic; here each channel is N contiguous planes, reduced in one pass.
//!
//! Per channel over its M = N·H·W values: mean, biased variance v (sums in f64, kept as f32 as
//! PyTorch's CPU kernel keeps them), x̂ = (x - mean) / √(v + ε), y = γ·x̂ + β. Backward, the
//! gradients through the statistics included as PyTorch's: dβ = Σ dy, dγ = Σ dy·x̂,
//! dx = γ/√(v + ε) · (dy - Σdy/M - x̂·Σ(dy·x̂)/M).

use candle_core::{CpuStorage, CustomOp1, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::im2col::f32_slice;

/// `weight · x̂ + bias` for NCHW f32 `x` on the CPU with gradients for x, weight and bias, and the
/// batch's per-channel mean and biased variance (for the running averages).
pub fn batch_norm_train(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
) -> Result<(Tensor, Vec<f32>, Vec<f32>)> {
    let (n, c, h, w) = x.dims4()?;
    if weight.dims() != [c] || bias.dims() != [c] {
        candle_core::bail!(
            "batch norm over {c} channels: weight {:?}, bias {:?}",
            weight.dims(),
            bias.dims()
        );
    }
    if n * h * w < 2 {
        candle_core::bail!(
            "batch norm with batch statistics needs more than one value per channel, got {:?}",
            x.dims()
        );
    }
    let x = x.contiguous()?;
    let stats = x.apply_op1_no_bwd(&ChannelStats)?.to_vec2::<f32>()?;
    let (mean, var) = (stats[0].clone(), stats[1].clone());
    let op = BnTrain {
        mean: mean.clone(),
        inv_std: var
            .iter()
            .map(|&v| (1.0 / (f64::from(v) + eps).sqrt()) as f32)
            .collect(),
    };
    let y = x.apply_op3(&weight.contiguous()?, &bias.contiguous()?, op)?;
    Ok((y, mean, var))
}

/// Channel `ch`'s N planes of H·W values in NCHW `data`.
fn planes(data: &[f32], c: usize, plane: usize, ch: usize) -> impl Iterator<Item = &[f32]> {
    data.chunks_exact(c * plane)
        .map(move |img| &img[ch * plane..(ch + 1) * plane])
}

/// (2, C): each channel's mean and biased variance (two passes, f64 sums).
struct ChannelStats;

impl CustomOp1 for ChannelStats {
    fn name(&self) -> &'static str {
        "bn-channel-stats"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = l.shape().dims4()?;
        let x = f32_slice(s, l)?;
        let plane = h * w;
        let m = (n * plane) as f64;
        let per: Vec<(f32, f32)> = (0..c)
            .into_par_iter()
            .map(|ch| {
                let sum: f64 = planes(x, c, plane, ch)
                    .map(|p| p.iter().map(|&v| f64::from(v)).sum::<f64>())
                    .sum();
                let mean = sum / m;
                let sq: f64 = planes(x, c, plane, ch)
                    .map(|p| {
                        p.iter()
                            .map(|&v| (f64::from(v) - mean).powi(2))
                            .sum::<f64>()
                    })
                    .sum();
                (mean as f32, (sq / m) as f32)
            })
            .collect();
        let (mean, var): (Vec<f32>, Vec<f32>) = per.into_iter().unzip();
        Ok((CpuStorage::F32([mean, var].concat()), Shape::from((2, c))))
    }
}

/// (x, weight, bias) -> y with the batch's statistics fixed at construction.
struct BnTrain {
    mean: Vec<f32>,
    inv_std: Vec<f32>,
}

impl CustomOp3 for BnTrain {
    fn name(&self) -> &'static str {
        "batch-norm-train"
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
        let (_, c, h, w) = xl.shape().dims4()?;
        let (x, gamma, beta) = (f32_slice(xs, xl)?, f32_slice(ws, wl)?, f32_slice(bs, bl)?);
        let plane = h * w;
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(plane)
            .zip(x.par_chunks(plane))
            .enumerate()
            .for_each(|(i, (yp, xp))| {
                let ch = i % c;
                let scale = gamma[ch] * self.inv_std[ch];
                let shift = beta[ch] - self.mean[ch] * scale;
                for (o, &v) in yp.iter_mut().zip(xp) {
                    *o = v * scale + shift;
                }
            });
        Ok((CpuStorage::F32(y), xl.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        _bias: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let c = weight.elem_count();
        let op = BnGrads {
            mean: self.mean.clone(),
            inv_std: self.inv_std.clone(),
        };
        let all = x.apply_op3_no_bwd(weight, &grad.contiguous()?, &op)?;
        let nx = x.elem_count();
        let dx = all.narrow(0, 0, nx)?.reshape(x.shape())?;
        let dw = all.narrow(0, nx, c)?;
        let db = all.narrow(0, nx + c, c)?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

/// (x, weight, dy) -> [dx, dweight, dbias] flattened into one buffer.
struct BnGrads {
    mean: Vec<f32>,
    inv_std: Vec<f32>,
}

impl CustomOp3 for BnGrads {
    fn name(&self) -> &'static str {
        "batch-norm-train-grads"
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
        if gl.shape() != xl.shape() {
            candle_core::bail!("batch norm backward: gradient {:?} for input {:?}", gl, xl);
        }
        let (x, gamma, dy) = (f32_slice(xs, xl)?, f32_slice(ws, wl)?, f32_slice(gs, gl)?);
        let plane = h * w;
        let m = (n * plane) as f64;
        let xhat = |ch: usize, v: f32| f64::from(v - self.mean[ch]) * f64::from(self.inv_std[ch]);
        // Per channel: Σ dy and Σ dy·x̂.
        let sums: Vec<(f64, f64)> = (0..c)
            .into_par_iter()
            .map(|ch| {
                planes(x, c, plane, ch).zip(planes(dy, c, plane, ch)).fold(
                    (0.0, 0.0),
                    |(s, sx), (xp, gp)| {
                        let (a, b) = xp.iter().zip(gp).fold((0.0, 0.0), |(a, b), (&v, &g)| {
                            (a + f64::from(g), b + f64::from(g) * xhat(ch, v))
                        });
                        (s + a, sx + b)
                    },
                )
            })
            .collect();
        let nx = x.len();
        let mut out = vec![0f32; nx + 2 * c];
        let (dx, rest) = out.split_at_mut(nx);
        dx.par_chunks_mut(plane)
            .zip(x.par_chunks(plane).zip(dy.par_chunks(plane)))
            .enumerate()
            .for_each(|(i, (dp, (xp, gp)))| {
                let ch = i % c;
                let (s, sx) = sums[ch];
                let k = f64::from(gamma[ch]) * f64::from(self.inv_std[ch]);
                let (mean_dy, mean_dy_xhat) = (s / m, sx / m);
                for ((d, &v), &g) in dp.iter_mut().zip(xp).zip(gp) {
                    *d = (k * (f64::from(g) - mean_dy - xhat(ch, v) * mean_dy_xhat)) as f32;
                }
            });
        let (dw, db) = rest.split_at_mut(c);
        for (ch, &(s, sx)) in sums.iter().enumerate() {
            dw[ch] = sx as f32;
            db[ch] = s as f32;
        }
        let len = out.len();
        Ok((CpuStorage::F32(out), Shape::from(len)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};

    /// The batch norm composed of candle ops (autograd through mean and variance): an independent
    /// derivation of the same gradients.
    fn composed(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Tensor {
        let c = w.elem_count();
        let mean = x
            .mean_keepdim(0)
            .unwrap()
            .mean_keepdim(2)
            .unwrap()
            .mean_keepdim(3)
            .unwrap();
        let cen = x.broadcast_sub(&mean).unwrap();
        let var = cen
            .sqr()
            .unwrap()
            .mean_keepdim(0)
            .unwrap()
            .mean_keepdim(2)
            .unwrap();
        let var = var.mean_keepdim(3).unwrap();
        let inv = (var + eps).unwrap().sqrt().unwrap().recip().unwrap();
        cen.broadcast_mul(&inv)
            .unwrap()
            .broadcast_mul(&w.reshape((1, c, 1, 1)).unwrap())
            .unwrap()
            .broadcast_add(&b.reshape((1, c, 1, 1)).unwrap())
            .unwrap()
    }

    fn rel(a: &Tensor, b: &Tensor) -> f64 {
        let v = |t: &Tensor| {
            t.to_dtype(DType::F64)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap()
        };
        let (a, b) = (v(a), v(b));
        let num: f64 = a.iter().zip(&b).map(|(p, q)| (p - q).powi(2)).sum();
        let den: f64 = b.iter().map(|q| q * q).sum();
        (num / den.max(1e-30)).sqrt()
    }

    #[test]
    fn output_statistics_and_gradients_match_the_composed_norm() {
        let dev = Device::Cpu;
        for (n, c, h, w) in [(2, 3, 4, 5), (4, 8, 7, 3), (1, 2, 2, 3)] {
            let x = (Tensor::randn(0f32, 2.0, (n, c, h, w), &dev).unwrap() + 0.7).unwrap();
            let wt = Tensor::randn(1f32, 0.3, c, &dev).unwrap();
            let bs = Tensor::randn(0f32, 0.3, c, &dev).unwrap();
            let vars = [&x, &wt, &bs].map(|t| Var::from_tensor(t).unwrap());
            let [xv, wv, bv] = &vars;
            let r = Tensor::randn(0f32, 1.0, (n, c, h, w), &dev).unwrap();
            let (y, mean, var) =
                batch_norm_train(xv.as_tensor(), wv.as_tensor(), bv.as_tensor(), 1e-5).unwrap();
            let y2 = composed(xv.as_tensor(), wv.as_tensor(), bv.as_tensor(), 1e-5);
            assert!(rel(&y, &y2) < 1e-5, "{:?}: output", (n, c, h, w));
            let want_mean = x.mean_keepdim(0).unwrap().mean_keepdim(2).unwrap();
            let want_mean = want_mean.mean_keepdim(3).unwrap().flatten_all().unwrap();
            assert!(rel(&Tensor::new(mean.as_slice(), &dev).unwrap(), &want_mean) < 1e-6);
            assert_eq!(var.len(), c);
            let g1 = (y * &r).unwrap().sum_all().unwrap().backward().unwrap();
            let g2 = (y2 * &r).unwrap().sum_all().unwrap().backward().unwrap();
            for (name, v) in [("x", xv), ("weight", wv), ("bias", bv)] {
                let e = rel(
                    g1.get(v.as_tensor()).unwrap(),
                    g2.get(v.as_tensor()).unwrap(),
                );
                assert!(e < 1e-4, "{:?}: d{name} {e}", (n, c, h, w));
            }
        }
    }

    #[test]
    fn one_value_per_channel_is_an_error() {
        let dev = Device::Cpu;
        let x = Tensor::ones((1, 3, 1, 1), DType::F32, &dev).unwrap();
        let w = Tensor::ones(3, DType::F32, &dev).unwrap();
        assert!(batch_norm_train(&x, &w, &w, 1e-5).is_err());
        assert!(batch_norm_train(
            &x.repeat((2, 1, 1, 1)).unwrap(),
            &w.narrow(0, 0, 2).unwrap(),
            &w,
            1e-5
        )
        .is_err());
    }
}
