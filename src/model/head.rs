//! Shared prediction head (docs/model.md §2.6, §5.4), applied to P3..P7 with the same weights.
//!
//! The head returns logits: box regressions, class logits and mask coefficients before their
//! activation. The caller applies them ([`activate`]): softmax over the classes at inference only,
//! tanh on the coefficients always (the reference's `PredictionModule` applies tanh in training
//! too, so the loss takes `tanh` of [`HeadOutput::coef`]).

use candle_core::{DType, Result, Tensor};
use candle_nn::VarBuilder;

use super::layers::{Conv2d, Mode};

/// The three output convs of the head.
#[derive(Debug, Clone)]
enum OutputConvs {
    /// bbox, conf and mask convs under their own keys, as trained and saved.
    Separate {
        bbox: Conv2d,
        conf: Conv2d,
        mask: Conv2d,
    },
    /// The inference form: the three stacked along the output channels, so each level needs one
    /// im2col of the upfeature map instead of three. Channel ranges: [0, 4A), [4A, 4A + C·A),
    /// rest.
    Stacked(Conv2d),
}

/// Head outputs over all levels (P3..P7 concatenated), rows ordered (y·W + x)·A + a per level.
#[derive(Debug, Clone)]
pub struct HeadOutput {
    /// (N, P, 4) box regressions.
    pub loc: Tensor,
    /// (N, P, num_classes) class logits, background at index 0.
    pub conf: Tensor,
    /// (N, P, mask_dim) mask coefficients before tanh.
    pub coef: Tensor,
}

/// The inference activations of the head's logits: (softmax over the classes, tanh).
pub fn activate(conf: &Tensor, coef: &Tensor) -> Result<(Tensor, Tensor)> {
    Ok((class_scores(conf)?, coef.tanh()?))
}

/// The class half of [`activate`]: softmax over the classes. The engine takes the coefficients'
/// tanh only for the rows NMS keeps (it is elementwise, so the values are the same), which spares
/// a tanh of every prior's coefficients, a tenth of a small model's frame on the CPU.
pub fn class_scores(conf: &Tensor) -> Result<Tensor> {
    candle_nn::ops::softmax_last_dim(conf)
}

#[derive(Debug, Clone)]
pub struct PredictionHead {
    upfeature: Conv2d,
    out: OutputConvs,
    anchors: usize,
    num_classes: usize,
    mask_dim: usize,
}

impl PredictionHead {
    /// `vb` is the `prediction_layers.0` prefix; `anchors` is priors per cell (A).
    pub fn load(
        vb: VarBuilder,
        f: usize,
        anchors: usize,
        num_classes: usize,
        mask_dim: usize,
    ) -> Result<Self> {
        let upfeature = Conv2d::load(vb.pp("upfeature").pp(0), f, f, 3, 1, 1, true)?;
        let conv = |name: &str, c: usize| Conv2d::load(vb.pp(name), f, c * anchors, 3, 1, 1, true);
        let out = OutputConvs::Separate {
            bbox: conv("bbox_layer", 4)?,
            conf: conv("conf_layer", num_classes)?,
            mask: conv("mask_layer", mask_dim)?,
        };
        Ok(Self {
            upfeature,
            out,
            anchors,
            num_classes,
            mask_dim,
        })
    }

    /// The inference step: the three output convs stacked into one.
    pub fn stack_convs(&self) -> Result<Self> {
        let OutputConvs::Separate { bbox, conf, mask } = &self.out else {
            return Ok(self.clone());
        };
        let parts = [bbox, conf, mask];
        let weights: Vec<&Tensor> = parts.iter().map(|c| c.weight()).collect();
        let biases = parts
            .iter()
            .map(|c| {
                c.bias()
                    .ok_or_else(|| candle_core::Error::Msg("head conv without bias".into()))
            })
            .collect::<Result<Vec<_>>>()?;
        let stacked = Conv2d::new(
            Tensor::cat(&weights, 0)?,
            Some(Tensor::cat(&biases, 0)?),
            1,
            1,
        )?;
        Ok(Self {
            out: OutputConvs::Stacked(stacked),
            upfeature: self.upfeature.clone(),
            ..*self
        })
    }

    pub fn to_dtype(&self, dtype: DType) -> Result<Self> {
        let out = match &self.out {
            OutputConvs::Separate { bbox, conf, mask } => OutputConvs::Separate {
                bbox: bbox.to_dtype(dtype)?,
                conf: conf.to_dtype(dtype)?,
                mask: mask.to_dtype(dtype)?,
            },
            OutputConvs::Stacked(c) => OutputConvs::Stacked(c.to_dtype(dtype)?),
        };
        Ok(Self {
            upfeature: self.upfeature.to_dtype(dtype)?,
            out,
            ..*self
        })
    }

    /// One level: (N, F, H, W) -> (loc (N, HWA, 4), conf logits (N, HWA, C), coefficients before
    /// tanh (N, HWA, mask_dim)).
    pub fn forward_level(&self, p: &Tensor, mode: Mode) -> Result<(Tensor, Tensor, Tensor)> {
        let y = self.upfeature.forward_fused_t(p, None, true, mode)?;
        let a = self.anchors;
        // Channel a·k + component, after NCHW -> NHWC, is exactly a (HWA, k) row-major view.
        let rows = |z: &Tensor, start: usize, k: usize| -> Result<Tensor> {
            let (n, _, h, w) = z.dims4()?;
            z.narrow(1, start * a, k * a)?
                .permute((0, 2, 3, 1))?
                .reshape((n, h * w * a, k))
        };
        let (nc, md) = (self.num_classes, self.mask_dim);
        match &self.out {
            OutputConvs::Stacked(conv) => {
                let z = conv.forward_t(&y, mode)?;
                Ok((rows(&z, 0, 4)?, rows(&z, 4, nc)?, rows(&z, 4 + nc, md)?))
            }
            OutputConvs::Separate { bbox, conf, mask } => Ok((
                rows(&bbox.forward_t(&y, mode)?, 0, 4)?,
                rows(&conf.forward_t(&y, mode)?, 0, nc)?,
                rows(&mask.forward_t(&y, mode)?, 0, md)?,
            )),
        }
    }

    /// All levels, concatenated P3..P7, as logits.
    pub fn forward_t(&self, levels: &[Tensor], mode: Mode) -> Result<HeadOutput> {
        let mut locs = Vec::with_capacity(levels.len());
        let mut confs = Vec::with_capacity(levels.len());
        let mut coefs = Vec::with_capacity(levels.len());
        for p in levels {
            let (l, c, m) = self.forward_level(p, mode)?;
            locs.push(l);
            confs.push(c);
            coefs.push(m);
        }
        Ok(HeadOutput {
            loc: Tensor::cat(&locs, 1)?,
            conf: Tensor::cat(&confs, 1)?,
            coef: Tensor::cat(&coefs, 1)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::test_util::{self as tu, Nd, Weights};

    #[test]
    fn head_logits_follow_the_reference_layout_separate_and_stacked() {
        let (f, a, nc, md) = (4, 3, 5, 2);
        let mut w = Weights::default();
        let up = (w.conv("upfeature.0", f, f, 3), w.bias("upfeature.0", f));
        let parts: Vec<_> = [("bbox_layer", 4), ("conf_layer", nc), ("mask_layer", md)]
            .iter()
            .map(|&(n, k)| (w.conv(n, k * a, f, 3), w.bias(n, k * a), k))
            .collect();
        let head = PredictionHead::load(w.vb(), f, a, nc, md).unwrap();
        let stacked = head.stack_convs().unwrap();
        assert!(matches!(stacked.out, OutputConvs::Stacked(_)));
        let levels = vec![tu::rand_input(2, f, 3, 4), tu::rand_input(2, f, 2, 2)];
        let rows = (12 + 4) * a;
        let outs = [
            ("separate", head.forward_t(&levels, Mode::Eval).unwrap()),
            ("stacked", stacked.forward_t(&levels, Mode::Eval).unwrap()),
            (
                "train",
                head.forward_t(&levels, Mode::TrainFrozenBn).unwrap(),
            ),
        ];
        for (name, out) in &outs {
            assert_eq!(out.loc.dims(), &[2, rows, 4], "{name}");
            assert_eq!(out.conf.dims(), &[2, rows, nc], "{name}");
            assert_eq!(out.coef.dims(), &[2, rows, md], "{name}");
            let got = [tu::vec1(&out.loc), tu::vec1(&out.conf), tu::vec1(&out.coef)];
            let mut row0 = 0;
            for p in &levels {
                let y = tu::conv(&Nd::from_tensor(p), &up.0, Some(&up.1), 1, 1).relu();
                let want: Vec<Nd> = parts
                    .iter()
                    .map(|(cw, cb, _)| tu::conv(&y, cw, Some(cb), 1, 1))
                    .collect();
                for n in 0..2 {
                    for yy in 0..y.h {
                        for xx in 0..y.w {
                            for ai in 0..a {
                                let row = row0 + (yy * y.w + xx) * a + ai;
                                for (pi, (_, _, k)) in parts.iter().enumerate() {
                                    for comp in 0..*k {
                                        let raw = want[pi].at(n, ai * k + comp, yy, xx);
                                        let g = got[pi][(n * rows + row) * k + comp];
                                        assert!(
                                            (g - raw).abs() < 1e-5,
                                            "{name} part {pi} row {row} comp {comp}: {g} vs {raw}"
                                        );
                                    }
                                }
                            }
                        }
                    }
                }
                row0 += y.h * y.w * a;
            }
        }
    }

    #[test]
    fn activate_is_softmax_over_classes_and_tanh() {
        let conf = Tensor::new(&[[[1.0f32, 2.0, 0.5]]], &candle_core::Device::Cpu).unwrap();
        let coef = Tensor::new(&[[[-3.0f32, 0.25]]], &candle_core::Device::Cpu).unwrap();
        let (p, t) = activate(&conf, &coef).unwrap();
        let z: f64 = [1.0f64, 2.0, 0.5].iter().map(|v| v.exp()).sum();
        for (g, l) in tu::vec1(&p).iter().zip([1.0f64, 2.0, 0.5]) {
            assert!((g - l.exp() / z).abs() < 1e-6);
        }
        for (g, v) in tu::vec1(&t).iter().zip([-3.0f64, 0.25]) {
            assert!((g - v.tanh()).abs() < 1e-6);
        }
    }
}
