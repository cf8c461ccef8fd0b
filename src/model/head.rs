//! Shared prediction head (docs/model.md §2.6, §5.4), applied to P3..P7 with the same weights.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

use super::layers::Conv2d;

#[derive(Debug, Clone)]
pub struct PredictionHead {
    upfeature: Conv2d,
    /// bbox, conf and mask convs stacked along the output channels, so each level needs one im2col
    /// of the upfeature map instead of three. Channel ranges: [0, 4A), [4A, 4A + C·A), rest.
    fused: Conv2d,
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
        let parts = [
            ("bbox_layer", 4 * anchors),
            ("conf_layer", num_classes * anchors),
            ("mask_layer", mask_dim * anchors),
        ]
        .iter()
        .map(|&(name, c)| Conv2d::load(vb.pp(name), f, c, 3, 1, 1, true))
        .collect::<Result<Vec<_>>>()?;
        let weights: Vec<&Tensor> = parts.iter().map(|c| c.weight()).collect();
        let biases = parts
            .iter()
            .map(|c| {
                c.bias()
                    .ok_or_else(|| candle_core::Error::Msg("head conv without bias".into()))
            })
            .collect::<Result<Vec<_>>>()?;
        let fused = Conv2d::new(
            Tensor::cat(&weights, 0)?,
            Some(Tensor::cat(&biases, 0)?),
            1,
            1,
        )?;
        Ok(Self {
            upfeature,
            fused,
            anchors,
            num_classes,
            mask_dim,
        })
    }

    /// One level: (N, F, H, W) -> (loc (N, HWA, 4), conf logits (N, HWA, C), raw coefficients
    /// (N, HWA, mask_dim)), rows ordered (y·W + x)·A + a.
    pub fn forward_level(&self, p: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        let y = self.upfeature.forward(p)?.relu()?;
        let z = self.fused.forward(&y)?;
        let (n, _, h, w) = z.dims4()?;
        let a = self.anchors;
        let rows = h * w * a;
        // Channel a·k + component, after NCHW -> NHWC, is exactly a (HWA, k) row-major view.
        let part = |start: usize, k: usize| -> Result<Tensor> {
            z.narrow(1, start * a, k * a)?
                .permute((0, 2, 3, 1))?
                .reshape((n, rows, k))
        };
        let loc = part(0, 4)?;
        let conf = part(4, self.num_classes)?;
        let mask = part(4 + self.num_classes, self.mask_dim)?;
        Ok((loc, conf, mask))
    }

    /// All levels, concatenated P3..P7: loc raw, conf softmax over all classes, mask tanh.
    pub fn forward(&self, levels: &[Tensor]) -> Result<(Tensor, Tensor, Tensor)> {
        let mut locs = Vec::with_capacity(levels.len());
        let mut confs = Vec::with_capacity(levels.len());
        let mut masks = Vec::with_capacity(levels.len());
        for p in levels {
            let (l, c, m) = self.forward_level(p)?;
            locs.push(l);
            confs.push(c);
            masks.push(m);
        }
        let loc = Tensor::cat(&locs, 1)?;
        let conf = candle_nn::ops::softmax_last_dim(&Tensor::cat(&confs, 1)?)?;
        let mask = Tensor::cat(&masks, 1)?.tanh()?;
        Ok((loc, conf, mask))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::test_util::{self as tu, Nd, Weights};

    #[test]
    fn head_rows_follow_the_reference_layout() {
        let (f, a, nc, md) = (4, 3, 5, 2);
        let mut w = Weights::default();
        let up = (w.conv("upfeature.0", f, f, 3), w.bias("upfeature.0", f));
        let parts: Vec<_> = [("bbox_layer", 4), ("conf_layer", nc), ("mask_layer", md)]
            .iter()
            .map(|&(n, k)| (w.conv(n, k * a, f, 3), w.bias(n, k * a), k))
            .collect();
        let head = PredictionHead::load(w.vb(), f, a, nc, md).unwrap();
        let levels = vec![tu::rand_input(2, f, 3, 4), tu::rand_input(2, f, 2, 2)];
        let (loc, conf, mask) = head.forward(&levels).unwrap();
        let rows = (12 + 4) * a;
        assert_eq!(loc.dims(), &[2, rows, 4]);
        assert_eq!(conf.dims(), &[2, rows, nc]);
        assert_eq!(mask.dims(), &[2, rows, md]);
        let got = [tu::vec1(&loc), tu::vec1(&conf), tu::vec1(&mask)];

        let mut row0 = 0;
        for p in &levels {
            let y = tu::conv(&Nd::from_tensor(p), &up.0, Some(&up.1), 1, 1).relu();
            let outs: Vec<Nd> = parts
                .iter()
                .map(|(cw, cb, _)| tu::conv(&y, cw, Some(cb), 1, 1))
                .collect();
            for n in 0..2 {
                for yy in 0..y.h {
                    for xx in 0..y.w {
                        for ai in 0..a {
                            let row = row0 + (yy * y.w + xx) * a + ai;
                            let logits: Vec<f64> = (0..nc)
                                .map(|c| outs[1].at(n, ai * nc + c, yy, xx))
                                .collect();
                            let mx = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                            let z: f64 = logits.iter().map(|l| (l - mx).exp()).sum();
                            for (pi, (_, _, k)) in parts.iter().enumerate() {
                                for comp in 0..*k {
                                    let raw = outs[pi].at(n, ai * k + comp, yy, xx);
                                    let want = match pi {
                                        0 => raw,
                                        1 => (raw - mx).exp() / z,
                                        _ => raw.tanh(),
                                    };
                                    let g = got[pi][(n * rows + row) * k + comp];
                                    assert!(
                                        (g - want).abs() < 1e-5,
                                        "part {pi} row {row} comp {comp}: {g} vs {want}"
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
