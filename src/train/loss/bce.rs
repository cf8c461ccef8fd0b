//! PyTorch's `binary_cross_entropy` on probabilities, elementwise, as a candle custom
//! op because its backward is not the derivative of its forward:
//!
//! * forward: `(t - 1) * max(ln(1 - p), -100) - t * max(ln p, -100)` (`ln(1 - p)` as
//!   `ln_1p(-p)`, as PyTorch's CPU kernel);
//! * backward w.r.t. p: `g * (p - t) / max((1 - p) * p, 1e-12)`; none w.r.t. the target.
//!
//! In saturated pixels this differs from the true gradient by orders of magnitude (a logit of -50
//! with target 1: -1.9e-10 instead of -1), and the reference trains with it.
//!
//! A CPU kernel and a CUDA one (kernels/loss.cu, the same formula). On another device
//! [`binary_cross_entropy`] runs the op on host copies (the copies are differentiable, so the
//! gradient returns to the device).

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp2, Device, Layout, Result, Shape, Tensor};

use crate::ops::copy_contiguous;

/// PyTorch's lower bound on the log terms and on the backward's denominator.
const LOG_FLOOR: f32 = -100.0;
const EPSILON: f32 = 1e-12;

struct Bce;

fn loss(p: f32, t: f32) -> f32 {
    (t - 1.0) * (-p).ln_1p().max(LOG_FLOOR) - t * p.ln().max(LOG_FLOOR)
}

fn contiguous(s: &CpuStorage, l: &Layout) -> Result<Vec<f32>> {
    let (s, l) = match l.contiguous_offsets() {
        Some(_) => (std::borrow::Cow::Borrowed(s), l.clone()),
        None => {
            let (s, l) = copy_contiguous(s, l)?;
            (std::borrow::Cow::Owned(s), l)
        }
    };
    let Some((start, end)) = l.contiguous_offsets() else {
        bail!("binary_cross_entropy: could not make the operand contiguous");
    };
    match s.as_ref() {
        CpuStorage::F32(v) => Ok(v[start..end].to_vec()),
        other => bail!(
            "binary_cross_entropy: f32 operands only, got {:?}",
            other.dtype()
        ),
    }
}

fn same_shape(l1: &Layout, l2: &Layout) -> Result<()> {
    if l1.shape() != l2.shape() {
        bail!(
            "binary_cross_entropy: prediction {:?} and target {:?} differ in shape",
            l1.dims(),
            l2.dims()
        );
    }
    Ok(())
}

impl CustomOp2 for Bce {
    fn name(&self) -> &'static str {
        "binary-cross-entropy"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        same_shape(l1, l2)?;
        let (p, t) = (contiguous(s1, l1)?, contiguous(s2, l2)?);
        let out = p.iter().zip(&t).map(|(&p, &t)| loss(p, t)).collect();
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        same_shape(l1, l2)?;
        let out = crate::cuda::ops::bce((s1, l1), (s2, l2))?;
        Ok((out, l1.shape().clone()))
    }

    fn bwd(
        &self,
        p: &Tensor,
        t: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        // (1 - p) * p in this order, then the floor, as PyTorch's backward kernel.
        let denom = p.affine(-1.0, 1.0)?.mul(p)?.maximum(EPSILON)?;
        let g = grad_res.mul(&p.sub(t)?)?.div(&denom)?;
        Ok((Some(g), None))
    }
}

/// Elementwise BCE of probabilities `p` (in [0, 1]) against targets `t` of the same shape, f32.
pub fn binary_cross_entropy(p: &Tensor, t: &Tensor) -> Result<Tensor> {
    if p.device().is_cpu() || p.device().is_cuda() {
        return p.apply_op2(t, Bce);
    }
    let dev = p.device().clone();
    p.to_device(&Device::Cpu)?
        .apply_op2(&t.to_device(&Device::Cpu)?, Bce)?
        .to_device(&dev)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Var;

    #[test]
    fn forward_clamps_the_logs_at_minus_100() {
        let p = Tensor::new(&[0.0f32, 1.0, 0.5, 0.25], &Device::Cpu).unwrap();
        let t = Tensor::new(&[1.0f32, 0.0, 1.0, 0.0], &Device::Cpu).unwrap();
        let l = binary_cross_entropy(&p, &t)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(&l[..2], &[100.0, 100.0]);
        assert!((l[2] - 2f32.ln()).abs() < 1e-7 && (l[3] - (4f32 / 3.0).ln()).abs() < 1e-7);
    }

    #[test]
    fn backward_floors_the_denominator() {
        let p = Var::new(&[0.0f32, 0.5, 1.0], &Device::Cpu).unwrap();
        let t = Tensor::new(&[1.0f32, 0.0, 1.0], &Device::Cpu).unwrap();
        let l = binary_cross_entropy(p.as_tensor(), &t)
            .unwrap()
            .sum_all()
            .unwrap();
        let g = l.backward().unwrap();
        let g = g.get(p.as_tensor()).unwrap().to_vec1::<f32>().unwrap();
        // (0 - 1) / 1e-12, (0.5 - 0) / 0.25, (1 - 1) / 1e-12.
        assert_eq!(g, vec![-1.0 / EPSILON, 2.0, 0.0]);
    }
}
