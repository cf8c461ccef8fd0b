//! SSD-style box decoding (docs/model.md §6.1).

use candle_core::{DType, Tensor, D};

use crate::error::{Error, Result};

/// Decodes raw regressions `loc` (P, 4) against `priors` (P, 4, cx cy w h) into (P, 4) boxes
/// (x1, y1, x2, y2), relative to the image and unclipped.
///
/// The operation order follows the reference so rounding matches: the variances are multiplied
/// into `loc` first, and x2 = x1 + w rather than cx + w / 2. This is the host stage; the CUDA
/// backend's one kernel (kernels/decode.cu) does the same after the same [`check_shapes`].
pub fn decode_boxes(loc: &Tensor, priors: &Tensor) -> Result<Tensor> {
    check_shapes(loc, priors)?;
    if loc.device().is_cpu() {
        decode_host(loc, priors)
    } else {
        decode_ops(loc, priors)
    }
}

/// [`decode_boxes`] as tensor ops, for tensors off the host.
fn decode_ops(loc: &Tensor, priors: &Tensor) -> Result<Tensor> {
    let loc = loc.to_dtype(DType::F32)?;
    let priors = priors.to_dtype(DType::F32)?;
    let p_xy = priors.narrow(D::Minus1, 0, 2)?;
    let p_wh = priors.narrow(D::Minus1, 2, 2)?;
    let l_xy = loc.narrow(D::Minus1, 0, 2)?;
    let l_wh = loc.narrow(D::Minus1, 2, 2)?;
    // `affine` computes x * mul + add in f64 then casts; scaling by the f32 constant directly keeps
    // the reference's single f32 rounding.
    let var0 = Tensor::new(&[0.1f32], loc.device())?;
    let var1 = Tensor::new(&[0.2f32], loc.device())?;
    let cxy = p_xy.add(&l_xy.broadcast_mul(&var0)?.mul(&p_wh)?)?;
    let wh = p_wh.mul(&l_wh.broadcast_mul(&var1)?.exp()?)?;
    let half = Tensor::new(&[2f32], loc.device())?;
    let xy1 = cxy.sub(&wh.broadcast_div(&half)?)?;
    let xy2 = xy1.add(&wh)?;
    Ok(Tensor::cat(&[&xy1, &xy2], D::Minus1)?)
}

/// [`decode_boxes`] on the CPU: one loop with the tensor ops' arithmetic, in their order, instead of
/// ten passes over the priors.
fn decode_host(loc: &Tensor, priors: &Tensor) -> Result<Tensor> {
    let l = loc.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let p = priors
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let mut out = vec![0f32; l.len()];
    for ((o, l), p) in out
        .chunks_exact_mut(4)
        .zip(l.chunks_exact(4))
        .zip(p.chunks_exact(4))
    {
        for i in 0..2 {
            let cxy = p[i] + l[i] * 0.1 * p[i + 2];
            let wh = p[i + 2] * (l[i + 2] * 0.2).exp();
            let xy1 = cxy - wh / 2.0;
            o[i] = xy1;
            o[i + 2] = xy1 + wh;
        }
    }
    Ok(Tensor::from_vec(out, loc.dims(), loc.device())?)
}

/// `loc` and `priors` must both be (P, 4).
pub fn check_shapes(loc: &Tensor, priors: &Tensor) -> Result<()> {
    if loc.dims() != priors.dims() || loc.rank() != 2 || loc.dim(1)? != 4 {
        return Err(Error::Invalid(format!(
            "decode: loc {:?} and priors {:?} must both be (P, 4)",
            loc.dims(),
            priors.dims()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn the_host_loop_equals_the_tensor_ops_bit_for_bit() {
        let dev = Device::Cpu;
        let loc = Tensor::randn(0f32, 2.0, (500, 4), &dev).unwrap();
        let priors = Tensor::rand(0.01f32, 1.0, (500, 4), &dev).unwrap();
        let host = decode_host(&loc, &priors)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        let ops = decode_ops(&loc, &priors).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(host, ops);
    }
}
