//! Shared prediction head (spec §2.6, §5.4), applied to P3..P7 with the same weights.

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
