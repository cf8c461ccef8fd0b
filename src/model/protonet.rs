//! Prototype branch (docs/model.md §2.5, §5.3): 3x (conv3x3 + ReLU), bilinear x2, conv3x3 + ReLU,
//! 1x1 to 32, ReLU (the prototype activation), NHWC.

use candle_core::{DType, Result, Tensor};
use candle_nn::VarBuilder;

use super::layers::{Conv2d, Mode};
use crate::ops::interp::resize_bilinear;

#[derive(Debug, Clone)]
pub struct ProtoNet {
    pre: Vec<Conv2d>,
    post: Conv2d,
    out: Conv2d,
}

impl ProtoNet {
    /// `vb` is the `proto_net` prefix (Sequential indices 0, 2, 4, 8, 10 carry the weights).
    pub fn load(vb: VarBuilder, f: usize, mask_dim: usize) -> Result<Self> {
        let pre = [0, 2, 4]
            .iter()
            .map(|&i| Conv2d::load(vb.pp(i), f, f, 3, 1, 1, true))
            .collect::<Result<Vec<_>>>()?;
        let post = Conv2d::load(vb.pp(8), f, f, 3, 1, 1, true)?;
        let out = Conv2d::load(vb.pp(10), f, mask_dim, 1, 1, 0, true)?;
        Ok(Self { pre, post, out })
    }

    pub fn to_dtype(&self, dtype: DType) -> Result<Self> {
        Ok(Self {
            pre: self
                .pre
                .iter()
                .map(|c| c.to_dtype(dtype))
                .collect::<Result<_>>()?,
            post: self.post.to_dtype(dtype)?,
            out: self.out.to_dtype(dtype)?,
        })
    }

    /// P3 (N, F, H, W) -> prototypes (N, 2H, 2W, mask_dim), contiguous, ReLU applied.
    pub fn forward(&self, p3: &Tensor) -> Result<Tensor> {
        self.forward_t(p3, Mode::Eval)
    }

    /// The prototype ReLU is part of the branch in training too, as in the reference.
    pub fn forward_t(&self, p3: &Tensor, mode: Mode) -> Result<Tensor> {
        let mut x = p3.clone();
        for conv in &self.pre {
            x = conv.forward_fused_t(&x, None, true, mode)?;
        }
        let (_, _, h, w) = x.dims4()?;
        // The ReLU the reference applies after the upsample is a no-op on non-negative input, and
        // its gradient too: an upsampled 0 has only zero (ReLU-blocked) sources with weight > 0.
        let x = resize_bilinear(&x, 2 * h, 2 * w)?;
        let x = self.post.forward_fused_t(&x, None, true, mode)?;
        self.out
            .forward_fused_t(&x, None, true, mode)?
            .permute((0, 2, 3, 1))?
            .contiguous()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::test_util::{self as tu, Nd, Weights};

    #[test]
    fn protonet_matches_naive_composition_in_nhwc() {
        let (f, k) = (4, 3);
        let mut w = Weights::default();
        let convs: Vec<_> = [0, 2, 4, 8]
            .iter()
            .map(|i| (w.conv(&i.to_string(), f, f, 3), w.bias(&i.to_string(), f)))
            .collect();
        let last = (w.conv("10", k, f, 1), w.bias("10", k));
        let net = ProtoNet::load(w.vb(), f, k).unwrap();
        let p3 = tu::rand_input(1, f, 5, 6);
        let got = net.forward(&p3).unwrap();
        assert_eq!(got.dims(), &[1, 10, 12, k]);

        let mut x = Nd::from_tensor(&p3);
        for (cw, cb) in &convs[..3] {
            x = tu::conv(&x, cw, Some(cb), 1, 1).relu();
        }
        x = tu::bilinear(&x, 10, 12);
        x = tu::conv(&x, &convs[3].0, Some(&convs[3].1), 1, 1).relu();
        let want = tu::conv(&x, &last.0, Some(&last.1), 1, 0).relu();
        let g = tu::vec1(&got);
        let scale = want.data.iter().fold(1.0f64, |m, v| m.max(v.abs()));
        for y in 0..10 {
            for xx in 0..12 {
                for c in 0..k {
                    let d = (g[(y * 12 + xx) * k + c] - want.at(0, c, y, xx)).abs();
                    assert!(d / scale < 1e-5, "({y},{xx},{c}) off by {d}");
                }
            }
        }
    }
}
