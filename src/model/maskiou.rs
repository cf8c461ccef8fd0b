//! YOLACT++ mask-IoU net (docs/model.md §2.7): five stride-2 3x3 convs and a 1x1 to 80 classes,
//! every conv unpadded and followed by a ReLU, then a global max pool.

use candle_core::{DType, Result, Tensor};
use candle_nn::VarBuilder;

use super::layers::{global_max_pool_t, Conv2d, Mode};

#[derive(Debug, Clone)]
pub struct MaskIouNet {
    convs: Vec<Conv2d>,
}

impl MaskIouNet {
    /// `vb` is the `maskiou_net.maskiou_net` prefix.
    pub fn load(vb: VarBuilder, num_fg_classes: usize) -> Result<Self> {
        let mut convs = Vec::with_capacity(6);
        let mut c_in = 1;
        for (i, c_out) in [8, 16, 32, 64, 128].into_iter().enumerate() {
            convs.push(Conv2d::load(vb.pp(2 * i), c_in, c_out, 3, 2, 0, true)?);
            c_in = c_out;
        }
        convs.push(Conv2d::load(
            vb.pp(10),
            c_in,
            num_fg_classes,
            1,
            1,
            0,
            true,
        )?);
        Ok(Self { convs })
    }

    pub fn to_dtype(&self, dtype: DType) -> Result<Self> {
        Ok(Self {
            convs: self
                .convs
                .iter()
                .map(|c| c.to_dtype(dtype))
                .collect::<Result<_>>()?,
        })
    }

    /// Soft cropped masks (n, 1, Hp, Wp) -> (n, num_fg_classes).
    pub fn forward(&self, masks: &Tensor) -> Result<Tensor> {
        self.forward_t(masks, Mode::Eval)
    }

    pub fn forward_t(&self, masks: &Tensor, mode: Mode) -> Result<Tensor> {
        let mut x = masks.clone();
        for conv in &self.convs {
            x = conv.forward_fused_t(&x, None, true, mode)?;
        }
        global_max_pool_t(&x, mode)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::test_util::{self as tu, Nd, Weights};

    #[test]
    fn maskiou_matches_naive_composition() {
        let classes = 5;
        let mut w = Weights::default();
        let mut layers = Vec::new();
        let mut c_in = 1;
        for (i, c_out) in [8, 16, 32, 64, 128].into_iter().enumerate() {
            let name = (2 * i).to_string();
            layers.push((w.conv(&name, c_out, c_in, 3), w.bias(&name, c_out), 2));
            c_in = c_out;
        }
        layers.push((w.conv("10", classes, 128, 1), w.bias("10", classes), 1));
        let net = MaskIouNet::load(w.vb(), classes).unwrap();
        // 69 -> 34 -> 16 -> 7 -> 3 -> 1.
        let masks = Tensor::rand(0f32, 1.0, (2, 1, 69, 69), &candle_core::Device::Cpu).unwrap();
        let got = tu::vec1(&net.forward(&masks).unwrap());
        let mut x = Nd::from_tensor(&masks);
        for (cw, cb, s) in &layers {
            x = tu::conv(&x, cw, Some(cb), *s, 0).relu();
        }
        assert_eq!(got.len(), 2 * classes);
        for n in 0..2 {
            for c in 0..classes {
                let mut m = f64::NEG_INFINITY;
                for y in 0..x.h {
                    for xx in 0..x.w {
                        m = m.max(x.at(n, c, y, xx));
                    }
                }
                assert!((got[n * classes + c] - m).abs() < 1e-5 * m.max(1.0));
            }
        }
    }
}
