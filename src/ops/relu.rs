//! ReLU with PyTorch's gradient: the gradient passes where the output is > 0 and is 0 at
//! exactly 0, where candle's own ReLU backward (mask x >= 0) passes it. Exact zeros are common in
//! training (cropped-out mask-IoU inputs, zero-initialised biases), so the rule matters.

use candle_core::{backend::BackendStorage, CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};

/// relu(x) = max(x, 0), computed by candle's own ReLU kernel on every device (so the values are
/// bit-identical to `Tensor::relu`), with PyTorch's `threshold_backward(grad, result, 0)`:
/// grad where result > 0 (or NaN), else 0.
#[derive(Debug, Clone, Copy)]
pub struct TorchRelu;

/// `relu(x)` with PyTorch's gradient rule; see [`TorchRelu`].
pub fn relu(x: &Tensor) -> Result<Tensor> {
    x.apply_op1(TorchRelu)
}

impl CustomOp1 for TorchRelu {
    fn name(&self) -> &'static str {
        "relu-torch-grad"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        Ok((s.unary_impl::<candle_core::op::Relu>(l)?, l.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &candle_core::CudaStorage,
        l: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        Ok((s.unary_impl::<candle_core::op::Relu>(l)?, l.shape().clone()))
    }

    fn bwd(&self, _arg: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        // PyTorch masks with `result <= 0`, so a NaN output passes its gradient on.
        let blocked = res.le(0.0)?;
        Ok(Some(blocked.where_cond(&grad.zeros_like()?, grad)?))
    }
}
