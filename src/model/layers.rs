//! Building blocks shared by every part of the network: convolutions with eval-mode batch norm folded
//! in at load time, and the modulated deformable 3x3 conv of YOLACT++.

use candle_core::{DType, Result, Tensor, D};
use candle_nn::{init, VarBuilder};

/// PyTorch's BatchNorm2d default; every BN in the reference uses it.
pub const BN_EPS: f64 = 1e-5;

/// Eval-mode batch-norm statistics and affine parameters, each of shape (C,).
#[derive(Debug, Clone)]
pub struct BatchNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    pub running_mean: Tensor,
    pub running_var: Tensor,
}

impl BatchNorm {
    /// Requests exactly the four float keys; `num_batches_tracked` is never read. Always f32: the
    /// statistics are only folded into convs, which are cast to the model dtype afterwards.
    pub fn load(vb: VarBuilder, c: usize) -> Result<Self> {
        Ok(Self {
            weight: vb.get_with_hints_dtype(c, "weight", init::ONE, DType::F32)?,
            bias: vb.get_with_hints_dtype(c, "bias", init::ZERO, DType::F32)?,
            running_mean: vb.get_with_hints_dtype(c, "running_mean", init::ZERO, DType::F32)?,
            running_var: vb.get_with_hints_dtype(c, "running_var", init::ONE, DType::F32)?,
        })
    }

    /// Per-channel (scale, shift) such that bn(y) = y * scale + shift.
    fn scale_shift(&self) -> Result<(Tensor, Tensor)> {
        // Folding happens once at load time, so do it in f64 to keep the extra rounding to one step.
        let g = self.weight.to_dtype(DType::F64)?;
        let b = self.bias.to_dtype(DType::F64)?;
        let m = self.running_mean.to_dtype(DType::F64)?;
        let v = self.running_var.to_dtype(DType::F64)?;
        let scale = g.div(&(v + BN_EPS)?.sqrt()?)?;
        let shift = b.sub(&m.mul(&scale)?)?;
        Ok((scale, shift))
    }
}

/// Folds `bn` into a conv with OIHW `weight` and optional `bias`: returns (weight', bias') with
/// conv(x, weight') + bias' == bn(conv(x, weight) + bias).
pub fn fold_bn(weight: &Tensor, bias: Option<&Tensor>, bn: &BatchNorm) -> Result<(Tensor, Tensor)> {
    let dtype = weight.dtype();
    let (scale, shift) = bn.scale_shift()?;
    let w = weight
        .to_dtype(DType::F64)?
        .broadcast_mul(&scale.reshape(((), 1, 1, 1))?)?;
    let b = match bias {
        Some(b) => b.to_dtype(DType::F64)?.mul(&scale)?.add(&shift)?,
        None => shift,
    };
    Ok((w.to_dtype(dtype)?, b.to_dtype(dtype)?))
}

/// A 2-D convolution (dilation 1, groups 1) with an optional (O,) bias that the GEMM accumulates
/// onto (no separate broadcast pass over the output).
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

    /// Loads a bias-free conv from `vb_conv` and folds the batch norm at `vb_bn` into it.
    pub fn load_bn(
        vb_conv: VarBuilder,
        vb_bn: VarBuilder,
        c_in: usize,
        c_out: usize,
        k: usize,
        stride: usize,
        padding: usize,
    ) -> Result<Self> {
        // Fold in full precision, then cast once to the model dtype (`--half`).
        let dtype = vb_conv.dtype();
        let weight = vb_conv.get_with_hints_dtype(
            (c_out, c_in, k, k),
            "weight",
            init::DEFAULT_KAIMING_NORMAL,
            DType::F32,
        )?;
        let bn = BatchNorm::load(vb_bn, c_out)?;
        let (w, b) = fold_bn(&weight, None, &bn)?;
        Self::new(
            w.to_dtype(dtype)?,
            Some(b.to_dtype(dtype)?),
            stride,
            padding,
        )
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

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.fused(x, None, false)
    }

    /// relu(forward(x)), the ReLU folded into the conv's output pass.
    pub fn forward_relu(&self, x: &Tensor) -> Result<Tensor> {
        self.fused(x, None, true)
    }

    /// relu(forward(x) + residual), as at the end of a ResNet bottleneck, in one output pass.
    pub fn forward_add_relu(&self, x: &Tensor, residual: &Tensor) -> Result<Tensor> {
        self.fused(x, Some(residual), true)
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

/// DCNv2 3x3 conv, padding 1 (docs/model.md §3): a plain conv predicts 18 offsets and 9 modulation
/// logits from the input, then the deformable conv samples with them. Batch norm is folded into the
/// main weight and its (learned) bias.
#[derive(Debug, Clone)]
pub struct DeformConv2d {
    offset_mask: Conv2d,
    weight: Tensor,
    bias: Tensor,
    stride: usize,
}

impl DeformConv2d {
    /// `vb` is the DCN module (`...conv2`), `vb_bn` the batch norm that follows it (`...bn2`).
    pub fn load_bn(
        vb: VarBuilder,
        vb_bn: VarBuilder,
        c_in: usize,
        c_out: usize,
        stride: usize,
    ) -> Result<Self> {
        let dtype = vb.dtype();
        let weight = vb.get_with_hints_dtype(
            (c_out, c_in, 3, 3),
            "weight",
            init::DEFAULT_KAIMING_NORMAL,
            DType::F32,
        )?;
        let bias = vb.get_with_hints_dtype(c_out, "bias", init::ZERO, DType::F32)?;
        let offset_mask = Conv2d::load(vb.pp("conv_offset_mask"), c_in, 27, 3, stride, 1, true)?;
        let bn = BatchNorm::load(vb_bn, c_out)?;
        let (weight, bias) = fold_bn(&weight, Some(&bias), &bn)?;
        let (weight, bias) = (weight.to_dtype(dtype)?, bias.to_dtype(dtype)?);
        Ok(Self {
            offset_mask,
            weight,
            bias,
            stride,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let raw = self.offset_mask.forward(x)?;
        // Channels 0..18 are already the interleaved (dy, dx) pairs; the reference's chunk + cat
        // leaves their order unchanged.
        let offset = raw.narrow(1, 0, 18)?;
        let mask = candle_nn::ops::sigmoid(&raw.narrow(1, 18, 9)?)?;
        crate::ops::dcn::modulated_deform_conv2d(
            x,
            &offset,
            &mask,
            &self.weight,
            &self.bias,
            self.stride,
        )
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::test_util::{self as tu, Nd, Weights};

    #[test]
    fn conv_bn_fold_equals_conv_then_explicit_bn() {
        let mut w = Weights::default();
        w.conv("c", 6, 8, 3);
        w.bn("bn", 6);
        let vb = w.vb();
        let conv = Conv2d::load_bn(vb.pp("c"), vb.pp("bn"), 8, 6, 3, 2, 1).unwrap();
        let x = tu::rand_input(2, 8, 9, 7);
        let got = conv.forward(&x).unwrap();

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
        assert_eq!(got.dims(), &[2, 6, 5, 4]);
        let err = tu::rel_err(&got, &Nd::from_tensor(&want));
        assert!(err < 1e-5, "fold error {err}");
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
        let err = tu::rel_err(&conv.forward_relu(&x).unwrap(), &lin.relu());
        assert!(err < 1e-5, "relu {err}");
        let want = lin.add(&Nd::from_tensor(&res)).relu();
        let err = tu::rel_err(&conv.forward_add_relu(&x, &res).unwrap(), &want);
        assert!(err < 1e-5, "add relu {err}");
        // Half the outputs are negative before the ReLU, so a missing ReLU cannot pass.
        assert!(lin.data.iter().any(|&v| v < 0.0));
        assert!(conv
            .forward_add_relu(&x, &tu::rand_input(2, 6, 9, 7))
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
        let dcn = DeformConv2d::load_bn(vb.pp("d"), vb.pp("bn"), c, c, 1).unwrap();
        let x = tu::rand_input(1, c, h, wd);
        let got = dcn.forward(&x).unwrap();

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
        assert!(err < 1e-5, "{err}");
    }
}
