//! Building blocks shared by every part of the network: convolutions, batch norm kept as a layer,
//! the conv + batch-norm pair with its explicit inference step ([`ConvBn::absorb_bn`], which folds
//! the norm into the conv), and the modulated deformable 3x3 conv of YOLACT++.
//!
//! Every layer runs in one of three [`Mode`]s. Inference uses the banded im2col conv, which has no
//! backward; the training modes use convs with one (on the CPU the same im2col conv with a GEMM
//! backward, `ops::conv_train`; elsewhere candle's conv2d), so gradients reach the weights, and
//! batch statistics on the CPU are one op with its analytic backward (`ops::bn_train`).
//! Training passes also take PyTorch's gradient rules where candle's differ: ReLU passes
//! no gradient at exactly 0 ([`relu_t`]) and max pools send it to the first maximum only
//! ([`global_max_pool_t`], `resnet::max_pool_3x3_s2_train`); the eval path keeps candle's ops.

use candle_core::{DType, Module, Result, Tensor, Var, D};
use candle_nn::{init, VarBuilder};

/// PyTorch's BatchNorm2d default; every BN in the reference uses it.
pub const BN_EPS: f64 = 1e-5;
/// PyTorch's BatchNorm2d default momentum for the running averages.
pub const BN_MOMENTUM: f64 = 0.1;

/// How a forward pass treats batch norm and which convolution it uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Inference: running statistics, the banded im2col conv (no backward).
    #[default]
    Eval,
    /// Training with batch norm frozen as the reference's `freeze_bn`: running statistics, and no
    /// gradient for the norm's weight and bias. Convs have a backward.
    TrainFrozenBn,
    /// Training with batch statistics; the running averages are updated in place (PyTorch's
    /// momentum and unbiased variance). Needs the weights in a trainable store.
    Train,
}

impl Mode {
    pub fn is_train(self) -> bool {
        self != Mode::Eval
    }
}

/// Batch norm over (N, C, H, W): affine parameters and running statistics, each of shape (C,).
#[derive(Debug, Clone)]
pub struct BatchNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    pub running_mean: Tensor,
    pub running_var: Tensor,
    pub eps: f64,
    pub momentum: f64,
}

impl BatchNorm {
    /// Requests exactly the four float keys; `num_batches_tracked` is never read. Always f32: the
    /// statistics are folded into convs in f64 and the model cast afterwards.
    pub fn load(vb: VarBuilder, c: usize) -> Result<Self> {
        Ok(Self {
            weight: vb.get_with_hints_dtype(c, "weight", init::ONE, DType::F32)?,
            bias: vb.get_with_hints_dtype(c, "bias", init::ZERO, DType::F32)?,
            running_mean: vb.get_with_hints_dtype(c, "running_mean", init::ZERO, DType::F32)?,
            running_var: vb.get_with_hints_dtype(c, "running_var", init::ONE, DType::F32)?,
            eps: BN_EPS,
            momentum: BN_MOMENTUM,
        })
    }

    /// Per-channel (scale, shift) in f64 such that bn(y) = y * scale + shift (eval statistics).
    fn scale_shift_f64(&self) -> Result<(Tensor, Tensor)> {
        // Folding happens once per model, so do it in f64 to keep the extra rounding to one step.
        let g = self.weight.to_dtype(DType::F64)?;
        let b = self.bias.to_dtype(DType::F64)?;
        let m = self.running_mean.to_dtype(DType::F64)?;
        let v = self.running_var.to_dtype(DType::F64)?;
        let scale = g.div(&(v + self.eps)?.sqrt()?)?;
        let shift = b.sub(&m.mul(&scale)?)?;
        Ok((scale, shift))
    }

    pub fn forward_t(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let c = self.weight.dim(0)?;
        if x.rank() != 4 || x.dim(1)? != c {
            candle_core::bail!(
                "batch norm over {c} channels got an input of shape {:?}",
                x.dims()
            );
        }
        let per_channel =
            |t: &Tensor| -> Result<Tensor> { t.reshape((1, c, 1, 1))?.to_dtype(x.dtype()) };
        // Running statistics never receive gradients; neither do frozen affine parameters.
        let (mean, var) = (self.running_mean.detach(), self.running_var.detach());
        match mode {
            Mode::Eval | Mode::TrainFrozenBn => {
                let (w, b) = if mode == Mode::Eval {
                    (self.weight.clone(), self.bias.clone())
                } else {
                    (self.weight.detach(), self.bias.detach())
                };
                let scale = w.div(&(var + self.eps)?.sqrt()?)?;
                let shift = b.sub(&mean.mul(&scale)?)?;
                x.broadcast_mul(&per_channel(&scale)?)?
                    .broadcast_add(&per_channel(&shift)?)
            }
            Mode::Train => self.forward_batch_stats(x, c),
        }
    }

    /// Normalises with the batch's own mean and biased variance (gradients flow through both, as
    /// in PyTorch), then moves the running averages towards the batch's mean and unbiased variance.
    fn forward_batch_stats(&self, x: &Tensor, c: usize) -> Result<Tensor> {
        let count = x.elem_count() / c;
        if x.device().is_cpu() && x.dtype() == DType::F32 {
            let (y, mean, var) =
                crate::ops::bn_train::batch_norm_train(x, &self.weight, &self.bias, self.eps)?;
            let dev = x.device();
            self.update_running(
                &Tensor::new(mean.as_slice(), dev)?,
                &Tensor::new(var.as_slice(), dev)?,
                count,
            )?;
            return Ok(y);
        }
        if count < 2 {
            candle_core::bail!(
                "batch norm with batch statistics needs more than one value per channel, got {:?}",
                x.dims()
            );
        }
        let xf = x.to_dtype(DType::F32)?;
        let mean = xf.mean_keepdim(0)?.mean_keepdim(2)?.mean_keepdim(3)?;
        let centred = xf.broadcast_sub(&mean)?;
        let var = centred
            .sqr()?
            .mean_keepdim(0)?
            .mean_keepdim(2)?
            .mean_keepdim(3)?;
        let inv_std = (var.clone() + self.eps)?.sqrt()?.recip()?;
        let w = self.weight.reshape((1, c, 1, 1))?;
        let b = self.bias.reshape((1, c, 1, 1))?;
        let y = centred
            .broadcast_mul(&inv_std)?
            .broadcast_mul(&w)?
            .broadcast_add(&b)?;
        self.update_running(
            &mean.detach().flatten_all()?,
            &var.detach().flatten_all()?,
            count,
        )?;
        y.to_dtype(x.dtype())
    }

    fn update_running(&self, mean: &Tensor, var_biased: &Tensor, count: usize) -> Result<()> {
        if !self.running_mean.is_variable() || !self.running_var.is_variable() {
            candle_core::bail!(
                "batch norm with batch statistics updates its running averages in place: load the \
                 model from a trainable store (weights::WeightStore), not from plain tensors"
            );
        }
        let m = self.momentum;
        let unbiased = (var_biased * (count as f64 / (count - 1) as f64))?;
        let new_mean = ((&self.running_mean.detach() * (1.0 - m))? + (mean * m)?)?;
        let new_var = ((&self.running_var.detach() * (1.0 - m))? + (unbiased * m)?)?;
        // A variable tensor from the store is the store's own Var: `set` updates it in place.
        Var::from_tensor(&self.running_mean)?.set(&new_mean)?;
        Var::from_tensor(&self.running_var)?.set(&new_var)?;
        Ok(())
    }
}

/// Folds `bn` into a conv with OIHW `weight` and optional `bias`: returns (weight', bias') with
/// conv(x, weight') + bias' == bn(conv(x, weight) + bias), in `weight`'s dtype.
pub fn fold_bn(weight: &Tensor, bias: Option<&Tensor>, bn: &BatchNorm) -> Result<(Tensor, Tensor)> {
    let dtype = weight.dtype();
    let (scale, shift) = bn.scale_shift_f64()?;
    let w = weight
        .to_dtype(DType::F64)?
        .broadcast_mul(&scale.reshape(((), 1, 1, 1))?)?;
    let b = match bias {
        Some(b) => b.to_dtype(DType::F64)?.mul(&scale)?.add(&shift)?,
        None => shift,
    };
    Ok((w.to_dtype(dtype)?, b.to_dtype(dtype)?))
}

/// A 2-D convolution (dilation 1, groups 1) with an optional (O,) bias. At inference the GEMM
/// accumulates the bias (no separate broadcast pass over the output).
#[derive(Debug, Clone)]
pub struct Conv2d {
    weight: Tensor,
    bias: Option<Tensor>,
    stride: usize,
    padding: usize,
}

impl Conv2d {
    pub fn new(
        weight: Tensor,
        bias: Option<Tensor>,
        stride: usize,
        padding: usize,
    ) -> Result<Self> {
        let (o, _, _, _) = weight.dims4()?;
        let bias = match bias {
            Some(b) => Some(b.reshape(o)?),
            None => None,
        };
        Ok(Self {
            weight,
            bias,
            stride,
            padding,
        })
    }

    /// Loads `weight` (out, in, k, k) and, if `bias`, `bias` (out,) from `vb`.
    pub fn load(
        vb: VarBuilder,
        c_in: usize,
        c_out: usize,
        k: usize,
        stride: usize,
        padding: usize,
        bias: bool,
    ) -> Result<Self> {
        let weight =
            vb.get_with_hints((c_out, c_in, k, k), "weight", init::DEFAULT_KAIMING_NORMAL)?;
        let bias = if bias {
            Some(vb.get_with_hints(c_out, "bias", init::ZERO)?)
        } else {
            None
        };
        Self::new(weight, bias, stride, padding)
    }

    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The bias as (O,), if any.
    pub fn bias(&self) -> Option<Tensor> {
        self.bias.clone()
    }

    pub fn stride(&self) -> usize {
        self.stride
    }

    pub fn padding(&self) -> usize {
        self.padding
    }

    /// The same conv with its weight and bias in `dtype`.
    pub fn to_dtype(&self, dtype: DType) -> Result<Self> {
        Ok(Self {
            weight: self.weight.to_dtype(dtype)?,
            bias: self.bias.as_ref().map(|b| b.to_dtype(dtype)).transpose()?,
            ..*self
        })
    }

    /// The inference pass ([`Mode::Eval`]).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_t(x, Mode::Eval)
    }

    pub fn forward_t(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        if !mode.is_train() {
            return self.fused(x, None, false);
        }
        if x.device().is_cpu() && x.dtype() == DType::F32 {
            return crate::ops::conv_train::conv2d(
                x,
                &self.weight,
                self.bias.as_ref(),
                self.stride,
                self.padding,
            );
        }
        let y = self.train_conv(x)?;
        match &self.bias {
            Some(b) => y.broadcast_add(&b.reshape((1, (), 1, 1))?),
            None => Ok(y),
        }
    }

    /// Off the CPU (where [`crate::ops::conv_train`] serves): candle's conv2d, whose backward recovers the input size with a transposed conv whose
    /// output padding candle 0.11 derives from the height alone: wrong whenever height and width
    /// leave different remainders under the stride. So the input is padded here and cropped to
    /// exactly the rows and columns the conv reads, and no output padding is needed.
    fn train_conv(&self, x: &Tensor) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let (k, s, p) = (self.weight.dim(2)?, self.stride, self.padding);
        if h + 2 * p < k || w + 2 * p < k {
            candle_core::bail!(
                "conv2d: input {h}x{w} with padding {p} is smaller than the {k}x{k} kernel"
            );
        }
        let (ho, wo) = (conv_out(h, k, s, p), conv_out(w, k, s, p));
        let (hn, wn) = ((ho - 1) * s + k, (wo - 1) * s + k);
        let mut xp = if p > 0 {
            x.pad_with_zeros(2, p, p)?.pad_with_zeros(3, p, p)?
        } else {
            x.clone()
        };
        if xp.dim(2)? != hn {
            xp = xp.narrow(2, 0, hn)?;
        }
        if xp.dim(3)? != wn {
            xp = xp.narrow(3, 0, wn)?;
        }
        xp.conv2d(&self.weight, 0, s, 1, 1)
    }

    /// relu?(forward_t(x) + residual) as `mode` needs it: at inference the addition and the ReLU
    /// ride on the conv's output pass (a separate pass over a small map costs as much as its
    /// GEMM on two cores); training composes the ops so gradients reach every input.
    pub fn forward_fused_t(
        &self,
        x: &Tensor,
        residual: Option<&Tensor>,
        relu: bool,
        mode: Mode,
    ) -> Result<Tensor> {
        if !mode.is_train() {
            return self.fused(x, residual, relu);
        }
        compose(self.forward_t(x, mode)?, residual, relu, mode)
    }

    fn fused(&self, x: &Tensor, residual: Option<&Tensor>, relu: bool) -> Result<Tensor> {
        crate::ops::im2col::conv2d_fused(
            x,
            &self.weight,
            self.bias.as_ref(),
            residual,
            relu,
            self.stride,
            self.padding,
        )
    }
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Conv2d::forward(self, x)
    }
}

/// A bias-free conv followed by batch norm, as every backbone conv of the reference. Until
/// [`ConvBn::absorb_bn`] the norm is a layer of its own (trainable, savable under its keys); after
/// it, the conv carries the folded weight and bias and the norm is gone.
#[derive(Debug, Clone)]
pub struct ConvBn {
    conv: Conv2d,
    bn: Option<BatchNorm>,
}

impl ConvBn {
    /// The conv's `weight` from `vb_conv`, the norm from `vb_bn`.
    pub fn load(
        vb_conv: VarBuilder,
        vb_bn: VarBuilder,
        c_in: usize,
        c_out: usize,
        k: usize,
        stride: usize,
        padding: usize,
    ) -> Result<Self> {
        Ok(Self {
            conv: Conv2d::load(vb_conv, c_in, c_out, k, stride, padding, false)?,
            bn: Some(BatchNorm::load(vb_bn, c_out)?),
        })
    }

    /// The inference step: the norm folded into the conv (in f64, then the conv's dtype).
    pub fn absorb_bn(&self) -> Result<Self> {
        let Some(bn) = &self.bn else {
            return Ok(self.clone());
        };
        let c = &self.conv;
        let (w, b) = fold_bn(&c.weight, c.bias.as_ref(), bn)?;
        Ok(Self {
            conv: Conv2d::new(w, Some(b), c.stride, c.padding)?,
            bn: None,
        })
    }

    /// Whether the norm is still a separate layer.
    pub fn has_bn(&self) -> bool {
        self.bn.is_some()
    }

    /// Only for an absorbed layer (the norm's statistics stay f32 otherwise).
    pub fn to_dtype(&self, dtype: DType) -> Result<Self> {
        Ok(Self {
            conv: self.conv.to_dtype(dtype)?,
            bn: self.bn.clone(),
        })
    }

    /// The inference pass ([`Mode::Eval`]).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_t(x, Mode::Eval)
    }

    pub fn forward_t(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let y = self.conv.forward_t(x, mode)?;
        match &self.bn {
            Some(bn) => bn.forward_t(&y, mode),
            None => Ok(y),
        }
    }

    /// relu?(forward_t(x) + residual): one output pass once the norm is absorbed
    /// ([`Conv2d::forward_fused_t`]).
    pub fn forward_fused_t(
        &self,
        x: &Tensor,
        residual: Option<&Tensor>,
        relu: bool,
        mode: Mode,
    ) -> Result<Tensor> {
        match &self.bn {
            None => self.conv.forward_fused_t(x, residual, relu, mode),
            Some(_) => compose(self.forward_t(x, mode)?, residual, relu, mode),
        }
    }
}

/// relu?(y + residual) as separate ops (the training form of the fused convs).
fn compose(y: Tensor, residual: Option<&Tensor>, relu: bool, mode: Mode) -> Result<Tensor> {
    let y = match residual {
        Some(r) => (y + r)?,
        None => y,
    };
    if relu {
        relu_t(&y, mode)
    } else {
        Ok(y)
    }
}

impl Module for ConvBn {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        ConvBn::forward(self, x)
    }
}

/// DCNv2 3x3 conv, padding 1 (docs/model.md §3): a plain conv predicts 18 offsets and 9 modulation
/// logits from the input, then the deformable conv samples with them; batch norm follows, as a
/// layer until [`DeformConv2d::absorb_bn`] folds it into the main weight and its (learned) bias.
///
/// Gradients reach the input, the offset conv (through offsets and modulation) and the main
/// weight and bias ([`crate::ops::dcn_bwd`] gives the rules).
#[derive(Debug, Clone)]
pub struct DeformConv2d {
    offset_mask: Conv2d,
    weight: Tensor,
    bias: Tensor,
    bn: Option<BatchNorm>,
    stride: usize,
}

impl DeformConv2d {
    /// `vb` is the DCN module (`...conv2`), `vb_bn` the batch norm that follows it (`...bn2`).
    pub fn load(
        vb: VarBuilder,
        vb_bn: VarBuilder,
        c_in: usize,
        c_out: usize,
        stride: usize,
    ) -> Result<Self> {
        let weight =
            vb.get_with_hints((c_out, c_in, 3, 3), "weight", init::DEFAULT_KAIMING_NORMAL)?;
        let bias = vb.get_with_hints(c_out, "bias", init::ZERO)?;
        let offset_mask = Conv2d::load(vb.pp("conv_offset_mask"), c_in, 27, 3, stride, 1, true)?;
        let bn = BatchNorm::load(vb_bn, c_out)?;
        Ok(Self {
            offset_mask,
            weight,
            bias,
            bn: Some(bn),
            stride,
        })
    }

    /// [`DeformConv2d::load`] then [`DeformConv2d::absorb_bn`]: the inference layer in one call,
    /// folded in full precision and then cast to `vb`'s dtype.
    pub fn load_bn(
        vb: VarBuilder,
        vb_bn: VarBuilder,
        c_in: usize,
        c_out: usize,
        stride: usize,
    ) -> Result<Self> {
        let dtype = vb.dtype();
        Self::load(vb.set_dtype(DType::F32), vb_bn, c_in, c_out, stride)?
            .absorb_bn()?
            .to_dtype(dtype)
    }

    /// The inference step: the norm folded into the main weight and bias.
    pub fn absorb_bn(&self) -> Result<Self> {
        let Some(bn) = &self.bn else {
            return Ok(self.clone());
        };
        let (weight, bias) = fold_bn(&self.weight, Some(&self.bias), bn)?;
        Ok(Self {
            offset_mask: self.offset_mask.clone(),
            weight,
            bias,
            bn: None,
            stride: self.stride,
        })
    }

    /// Only for an absorbed layer (the norm's statistics stay f32 otherwise).
    pub fn to_dtype(&self, dtype: DType) -> Result<Self> {
        Ok(Self {
            offset_mask: self.offset_mask.to_dtype(dtype)?,
            weight: self.weight.to_dtype(dtype)?,
            bias: self.bias.to_dtype(dtype)?,
            bn: self.bn.clone(),
            stride: self.stride,
        })
    }

    /// The inference pass ([`Mode::Eval`]).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_t(x, Mode::Eval)
    }

    pub fn forward_t(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let raw = self.offset_mask.forward_t(x, mode)?;
        // Channels 0..18 are already the interleaved (dy, dx) pairs; the reference's chunk + cat
        // leaves their order unchanged.
        let offset = raw.narrow(1, 0, 18)?;
        let mask = candle_nn::ops::sigmoid(&raw.narrow(1, 18, 9)?)?;
        let y = crate::ops::dcn::modulated_deform_conv2d(
            x,
            &offset,
            &mask,
            &self.weight,
            &self.bias,
            self.stride,
        )?;
        match &self.bn {
            Some(bn) => bn.forward_t(&y, mode),
            None => Ok(y),
        }
    }
}

impl Module for DeformConv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        DeformConv2d::forward(self, x)
    }
}

/// Output size of a conv / pool along one axis.
pub fn conv_out(size: usize, k: usize, stride: usize, padding: usize) -> usize {
    (size + 2 * padding).saturating_sub(k) / stride + 1
}

/// Global max over the spatial axes: (N, C, H, W) -> (N, C).
pub fn global_max_pool(x: &Tensor) -> Result<Tensor> {
    x.flatten_from(2)?.max(D::Minus1)
}

/// [`global_max_pool`] as `mode` needs it: in training the gradient goes to the first maximum
/// only, as PyTorch's `max_pool2d` (whole 3x3 maps of exact zeros are common there).
pub fn global_max_pool_t(x: &Tensor, mode: Mode) -> Result<Tensor> {
    if mode.is_train() {
        crate::ops::pool::global_max_pool(x)
    } else {
        global_max_pool(x)
    }
}

/// ReLU as `mode` needs it: candle's (no graph) at inference, PyTorch's gradient rule (none at
/// exactly 0) in training, with bit-identical values.
pub fn relu_t(x: &Tensor, mode: Mode) -> Result<Tensor> {
    if mode.is_train() {
        crate::ops::relu::relu(x)
    } else {
        x.relu()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::test_util::{self as tu, Nd, Weights};

    #[test]
    fn conv_bn_layer_and_its_absorbed_fold_equal_conv_then_explicit_bn() {
        let mut w = Weights::default();
        w.conv("c", 6, 8, 3);
        w.bn("bn", 6);
        let vb = w.vb();
        let layer = ConvBn::load(vb.pp("c"), vb.pp("bn"), 8, 6, 3, 2, 1).unwrap();
        let absorbed = layer.absorb_bn().unwrap();
        assert!(layer.has_bn() && !absorbed.has_bn());
        let x = tu::rand_input(2, 8, 9, 7);

        // Unfolded path in candle ops: conv, then (y - mean) / sqrt(var + eps) * gamma + beta.
        let get = |k: &str| w.map[k].reshape((1, (), 1, 1)).unwrap();
        let y = x.conv2d(&w.map["c.weight"], 1, 2, 1, 1).unwrap();
        let want = y
            .broadcast_sub(&get("bn.running_mean"))
            .unwrap()
            .broadcast_div(&(get("bn.running_var") + BN_EPS).unwrap().sqrt().unwrap())
            .unwrap()
            .broadcast_mul(&get("bn.weight"))
            .unwrap()
            .broadcast_add(&get("bn.bias"))
            .unwrap();
        let want = Nd::from_tensor(&want);
        for (name, got) in [
            ("layer eval", layer.forward(&x).unwrap()),
            (
                "layer frozen",
                layer.forward_t(&x, Mode::TrainFrozenBn).unwrap(),
            ),
            ("absorbed", absorbed.forward(&x).unwrap()),
        ] {
            assert_eq!(got.dims(), &[2, 6, 5, 4], "{name}");
            let err = tu::rel_err(&got, &want);
            assert!(err < 1e-5, "{name}: error {err}");
        }
    }

    /// Gradient of sum(r * f(x)) with respect to every element of `x`, by central differences in
    /// f64 (exact up to rounding for the linear maps tested here).
    fn finite_diff(x: &[f64], f: impl Fn(&[f64]) -> f64) -> Vec<f64> {
        let h = 1e-3;
        (0..x.len())
            .map(|i| {
                let mut p = x.to_vec();
                p[i] += h;
                let mut m = x.to_vec();
                m[i] -= h;
                (f(&p) - f(&m)) / (2.0 * h)
            })
            .collect()
    }

    fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
        assert_eq!(a.len(), b.len());
        a.iter().zip(b).fold(0.0, |m, (x, y)| m.max((x - y).abs()))
    }

    /// Training convolutions use candle's conv2d; its backward (a transposed conv whose output
    /// padding recovers odd input sizes under stride 2) is checked against finite differences.
    #[test]
    fn train_conv_gradients_match_finite_differences() {
        let dev = candle_core::Device::Cpu;
        for (stride, pad, k, h, wd) in [
            (2, 1, 3, 7, 6),
            (2, 1, 3, 6, 7),
            (1, 1, 3, 5, 5),
            (2, 0, 1, 6, 7),
            (2, 3, 7, 9, 8),
        ] {
            let (ci, co) = (3, 4);
            let xs: Vec<f64> = tu::vec1(&tu::rand_input(2, ci, h, wd));
            let ws: Vec<f64> = tu::vec1(&tu::rand_input(co, ci, k, k));
            let bs: Vec<f64> = tu::vec1(&tu::rand_input(1, co, 1, 1));
            let (ho, wo) = (conv_out(h, k, stride, pad), conv_out(wd, k, stride, pad));
            let r = Tensor::randn(0f64, 1.0, (2, co, ho, wo), &dev).unwrap();
            let loss = |x: &Tensor, w: &Tensor, b: &Tensor| -> Tensor {
                let conv = Conv2d::new(w.clone(), Some(b.clone()), stride, pad).unwrap();
                (conv.forward_t(x, Mode::Train).unwrap() * &r)
                    .unwrap()
                    .sum_all()
                    .unwrap()
            };
            let t = |v: &[f64], s: &[usize]| Tensor::from_slice(v, s, &dev).unwrap();
            let xv = Var::from_tensor(&t(&xs, &[2, ci, h, wd])).unwrap();
            let wv = Var::from_tensor(&t(&ws, &[co, ci, k, k])).unwrap();
            let bv = Var::from_tensor(&t(&bs, &[co])).unwrap();
            let grads = loss(xv.as_tensor(), wv.as_tensor(), bv.as_tensor())
                .backward()
                .unwrap();
            let scalar = |l: Tensor| l.to_scalar::<f64>().unwrap();
            let (xt, wt, bt) = (
                t(&xs, &[2, ci, h, wd]),
                t(&ws, &[co, ci, k, k]),
                t(&bs, &[co]),
            );
            let fx = finite_diff(&xs, |v| scalar(loss(&t(v, &[2, ci, h, wd]), &wt, &bt)));
            let fw = finite_diff(&ws, |v| scalar(loss(&xt, &t(v, &[co, ci, k, k]), &bt)));
            let fb = finite_diff(&bs, |v| scalar(loss(&xt, &wt, &t(v, &[co]))));
            for (name, var, fd) in [("x", &xv, fx), ("weight", &wv, fw), ("bias", &bv, fb)] {
                let g = tu::vec1(grads.get(var.as_tensor()).expect("a gradient"));
                let d = max_abs_diff(&g, &fd);
                assert!(
                    d < 1e-6,
                    "stride {stride} k {k} {h}x{wd}: d{name} off by {d}"
                );
            }
        }
    }

    #[test]
    fn batch_statistics_normalise_and_move_the_running_averages() {
        let dev = candle_core::Device::Cpu;
        let c = 3;
        let varmap = candle_nn::VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
        let bn = BatchNorm::load(vb, c).unwrap();
        let w = [0.5f32, 1.5, 2.0];
        let b = [0.1f32, -0.2, 0.3];
        let rm = [0.2f32, -0.1, 0.4];
        let rv = [1.0f32, 0.5, 2.0];
        {
            let data = varmap.data().lock().unwrap();
            for (k, v) in [
                ("weight", w),
                ("bias", b),
                ("running_mean", rm),
                ("running_var", rv),
            ] {
                data[k].set(&Tensor::new(&v, &dev).unwrap()).unwrap();
            }
        }
        let x = tu::rand_input(2, c, 4, 5);
        let y = tu::vec1(&bn.forward_t(&x, Mode::Train).unwrap());
        let xn = Nd::from_tensor(&x);
        let cnt = (2 * 4 * 5) as f64;
        let data = varmap.data().lock().unwrap();
        let new_rm = tu::vec1(data["running_mean"].as_tensor());
        let new_rv = tu::vec1(data["running_var"].as_tensor());
        for ch in 0..c {
            let vals: Vec<f64> = (0..2)
                .flat_map(|n| (0..4).flat_map(move |yy| (0..5).map(move |xx| (n, yy, xx))))
                .map(|(n, yy, xx)| xn.at(n, ch, yy, xx))
                .collect();
            let mean = vals.iter().sum::<f64>() / cnt;
            let var = vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / cnt;
            for n in 0..2 {
                for yy in 0..4 {
                    for xx in 0..5 {
                        let want = (xn.at(n, ch, yy, xx) - mean) / (var + BN_EPS).sqrt()
                            * w[ch] as f64
                            + b[ch] as f64;
                        let got = y[xn.idx(n, ch, yy, xx)];
                        assert!((got - want).abs() < 1e-5, "ch {ch}: {got} vs {want}");
                    }
                }
            }
            let want_rm = 0.9 * rm[ch] as f64 + 0.1 * mean;
            let want_rv = 0.9 * rv[ch] as f64 + 0.1 * var * cnt / (cnt - 1.0);
            assert!((new_rm[ch] - want_rm).abs() < 1e-6, "running mean {ch}");
            assert!((new_rv[ch] - want_rv).abs() < 1e-6, "running var {ch}");
        }
    }

    #[test]
    fn frozen_bn_gives_no_gradient_to_its_parameters_and_batch_bn_does() {
        let dev = candle_core::Device::Cpu;
        let varmap = candle_nn::VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
        let bn = BatchNorm::load(vb, 2).unwrap();
        let x = tu::rand_input(2, 2, 3, 3);
        let frozen = bn
            .forward_t(&x, Mode::TrainFrozenBn)
            .unwrap()
            .sum_all()
            .unwrap();
        let g = frozen.backward().unwrap();
        assert!(g.get(&bn.weight).is_none() && g.get(&bn.bias).is_none());
        let batch = bn
            .forward_t(&x, Mode::Train)
            .unwrap()
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap();
        let g = batch.backward().unwrap();
        assert!(g.get(&bn.weight).is_some() && g.get(&bn.bias).is_some());
        assert!(g.get(&bn.running_mean).is_none() && g.get(&bn.running_var).is_none());
        // Plain tensors cannot hold updated running averages.
        let mut w = Weights::default();
        w.bn("bn", 2);
        let plain = BatchNorm::load(w.vb().pp("bn"), 2).unwrap();
        let e = plain.forward_t(&x, Mode::Train).unwrap_err().to_string();
        assert!(e.contains("trainable store"), "{e}");
        assert!(plain
            .forward_t(&tu::rand_input(1, 3, 2, 2), Mode::Eval)
            .is_err());
    }

    #[test]
    fn fold_keeps_a_conv_bias() {
        // DCN convs carry a learned bias that must survive folding.
        let mut w = Weights::default();
        let wn = w.conv("c", 5, 3, 3);
        let b = w.bias("c", 5);
        let bnp = w.bn("bn", 5);
        let bn = BatchNorm::load(w.vb().pp("bn"), 5).unwrap();
        let (fw, fb) = fold_bn(&w.map["c.weight"], Some(&w.map["c.bias"]), &bn).unwrap();
        let conv = Conv2d::new(fw, Some(fb), 1, 1).unwrap();
        let x = tu::rand_input(1, 3, 6, 6);
        let want = tu::bn(&tu::conv(&Nd::from_tensor(&x), &wn, Some(&b), 1, 1), &bnp);
        let err = tu::rel_err(&conv.forward(&x).unwrap(), &want);
        assert!(err < 1e-5, "fold error {err}");
    }

    #[test]
    fn plain_conv_matches_naive_conv() {
        let mut w = Weights::default();
        let wn = w.conv("c", 4, 3, 3);
        let b = w.bias("c", 4);
        let conv = Conv2d::load(w.vb().pp("c"), 3, 4, 3, 2, 0, true).unwrap();
        let x = tu::rand_input(1, 3, 11, 8);
        let want = tu::conv(&Nd::from_tensor(&x), &wn, Some(&b), 2, 0);
        let got = conv.forward(&x).unwrap();
        assert_eq!(got.dims(), &[1, 4, 5, 3]);
        assert!(tu::rel_err(&got, &want) < 1e-5);
        assert_eq!(conv_out(11, 3, 2, 0), 5);
        assert_eq!(conv_out(550, 7, 2, 3), 275);
    }

    #[test]
    fn fused_relu_and_residual_match_separate_ops() {
        let mut w = Weights::default();
        let wn = w.conv("c", 6, 5, 3);
        let b = w.bias("c", 6);
        let conv = Conv2d::load(w.vb().pp("c"), 5, 6, 3, 1, 1, true).unwrap();
        let x = tu::rand_input(2, 5, 9, 8);
        let res = tu::rand_input(2, 6, 9, 8);
        let lin = tu::conv(&Nd::from_tensor(&x), &wn, Some(&b), 1, 1);
        let err = tu::rel_err(
            &conv.forward_fused_t(&x, None, true, Mode::Eval).unwrap(),
            &lin.relu(),
        );
        assert!(err < 1e-5, "relu {err}");
        let want = lin.add(&Nd::from_tensor(&res)).relu();
        let err = tu::rel_err(
            &conv
                .forward_fused_t(&x, Some(&res), true, Mode::Eval)
                .unwrap(),
            &want,
        );
        assert!(err < 1e-5, "add relu {err}");
        // Half the outputs are negative before the ReLU, so a missing ReLU cannot pass.
        assert!(lin.data.iter().any(|&v| v < 0.0));
        assert!(conv
            .forward_fused_t(&x, Some(&tu::rand_input(2, 6, 9, 7)), true, Mode::Eval)
            .is_err());
    }

    #[test]
    fn global_max_pool_takes_the_spatial_max() {
        let x = tu::rand_input(2, 3, 4, 5);
        let got = tu::vec1(&global_max_pool(&x).unwrap());
        let xn = Nd::from_tensor(&x);
        for n in 0..2 {
            for c in 0..3 {
                let mut m = f64::NEG_INFINITY;
                for y in 0..4 {
                    for xx in 0..5 {
                        m = m.max(xn.at(n, c, y, xx));
                    }
                }
                assert_eq!(got[n * 3 + c], m);
            }
        }
    }

    /// Offsets and modulation come from the offset conv's bias only (its weight is zero), so the
    /// deformable conv reduces to a plain conv with per-tap scaled weights over a shifted input.
    #[test]
    fn deform_conv_splits_offsets_and_modulation_as_the_reference() {
        let (c, h, wd) = (3, 7, 6);
        let mut w = Weights::default();
        let wn = w.conv("d", c, c, 3);
        let b = w.bias("d", c);
        let bnp = w.bn("bn", c);
        let dev = candle_core::Device::Cpu;
        w.map.insert(
            "d.conv_offset_mask.weight".into(),
            Tensor::zeros((27, c, 3, 3), DType::F32, &dev).unwrap(),
        );
        // dy = +1 for every tap (sample one row down), dx = 0, mask logits differ per tap.
        let logits: Vec<f32> = (0..9).map(|k| k as f32 * 0.5 - 2.0).collect();
        let mut om = vec![0f32; 27];
        for (k, &l) in logits.iter().enumerate() {
            om[2 * k] = 1.0;
            om[18 + k] = l;
        }
        w.map.insert(
            "d.conv_offset_mask.bias".into(),
            Tensor::new(om, &dev).unwrap(),
        );
        let vb = w.vb();
        let dcn = DeformConv2d::load(vb.pp("d"), vb.pp("bn"), c, c, 1).unwrap();
        let x = tu::rand_input(1, c, h, wd);
        let got = dcn.forward(&x).unwrap();
        let absorbed = dcn.absorb_bn().unwrap().forward(&x).unwrap();

        // Tap (i, j) reads x(ho + i, wo - 1 + j): an unpadded conv over x framed by zero columns
        // left and right and two zero rows below.
        let xn = Nd::from_tensor(&x);
        let mut framed = Nd::zeros(1, c, h + 2, wd + 2);
        for ch in 0..c {
            for y in 0..h {
                for xx in 0..wd {
                    let i = framed.idx(0, ch, y, xx + 1);
                    framed.data[i] = xn.at(0, ch, y, xx);
                }
            }
        }
        let mut scaled = wn.clone();
        for o in 0..c {
            for i in 0..c {
                for (k, &l) in logits.iter().enumerate() {
                    let m = 1.0 / (1.0 + (-(l as f64)).exp());
                    let idx = scaled.idx(o, i, k / 3, k % 3);
                    scaled.data[idx] *= m;
                }
            }
        }
        let want = tu::bn(&tu::conv(&framed, &scaled, Some(&b), 1, 0), &bnp);
        let err = tu::rel_err(&got, &want);
        assert!(err < 1e-5, "layer: {err}");
        let err = tu::rel_err(&absorbed, &want);
        assert!(err < 1e-5, "absorbed: {err}");
    }
}
