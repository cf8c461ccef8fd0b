//! DarkNet-53 backbone of yolact_darknet53 (docs/model.md §2.2). Every conv is conv -> BN ->
//! LeakyReLU(0.1).

use candle_core::{DType, Result, Tensor};
use candle_nn::VarBuilder;

use super::layers::{ConvBn, Mode};

const LEAKY_SLOPE: f64 = 0.1;

/// Conv and BN followed by LeakyReLU(0.1); keys `<prefix>.0.weight` and `<prefix>.1.*`.
#[derive(Debug, Clone)]
pub struct DarkConv(ConvBn);

impl DarkConv {
    pub fn load(
        vb: VarBuilder,
        c_in: usize,
        c_out: usize,
        k: usize,
        stride: usize,
    ) -> Result<Self> {
        Ok(Self(ConvBn::load(
            vb.pp("0"),
            vb.pp("1"),
            c_in,
            c_out,
            k,
            stride,
            k / 2,
        )?))
    }

    pub fn forward_t(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let y = self.0.forward_t(x, mode)?;
        if mode.is_train() {
            // PyTorch's rule: slope 1 where y > 0, LEAKY_SLOPE elsewhere (0 included); `maximum`
            // would split the gradient at y == 0. The values equal the inference form's.
            return y.gt(0.0)?.where_cond(&y, &(&y * LEAKY_SLOPE)?);
        }
        // max(y, 0.1 y) equals LeakyReLU for a slope below 1, in one fused binary op.
        y.maximum(&(&y * LEAKY_SLOPE)?)
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_t(x, Mode::Eval)
    }

    pub fn absorb_bn(&self) -> Result<Self> {
        Ok(Self(self.0.absorb_bn()?))
    }

    pub fn to_dtype(&self, dtype: DType) -> Result<Self> {
        Ok(Self(self.0.to_dtype(dtype)?))
    }
}

/// 1x1 halving the channels, 3x3 restoring them, added to the input with no activation after.
#[derive(Debug, Clone)]
pub struct DarkBlock {
    conv1: DarkConv,
    conv2: DarkConv,
}

impl DarkBlock {
    pub fn load(vb: VarBuilder, c: usize) -> Result<Self> {
        Ok(Self {
            conv1: DarkConv::load(vb.pp("conv1"), 2 * c, c, 1, 1)?,
            conv2: DarkConv::load(vb.pp("conv2"), c, 2 * c, 3, 1)?,
        })
    }

    pub fn forward_t(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        self.conv2
            .forward_t(&self.conv1.forward_t(x, mode)?, mode)?
            + x
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_t(x, Mode::Eval)
    }

    fn map(&self, f: impl Fn(&DarkConv) -> Result<DarkConv>) -> Result<Self> {
        Ok(Self {
            conv1: f(&self.conv1)?,
            conv2: f(&self.conv2)?,
        })
    }
}

#[derive(Debug, Clone)]
pub struct DarkNet {
    preconv: DarkConv,
    /// Per stage: the stride-2 conv, then the residual blocks.
    stages: Vec<(DarkConv, Vec<DarkBlock>)>,
}

impl DarkNet {
    /// `vb` is the `backbone` prefix.
    pub fn load(vb: VarBuilder, blocks: &[usize; 5]) -> Result<Self> {
        let preconv = DarkConv::load(vb.pp("_preconv"), 3, 32, 3, 1)?;
        let mut c_in = 32;
        let mut stages = Vec::with_capacity(5);
        for (s, &n) in blocks.iter().enumerate() {
            let c = 32 << s;
            let vbs = vb.pp("layers").pp(s);
            let down = DarkConv::load(vbs.pp(0), c_in, 2 * c, 3, 2)?;
            let blocks = (1..=n)
                .map(|b| DarkBlock::load(vbs.pp(b), c))
                .collect::<Result<Vec<_>>>()?;
            stages.push((down, blocks));
            c_in = 2 * c;
        }
        Ok(Self { preconv, stages })
    }

    /// Returns the outputs of the stages listed in `keep` (in stage order).
    pub fn forward_t(&self, x: &Tensor, keep: &[usize], mode: Mode) -> Result<Vec<Tensor>> {
        let mut x = self.preconv.forward_t(x, mode)?;
        let last = keep.iter().copied().max().unwrap_or(0);
        let mut outs = Vec::with_capacity(keep.len());
        for (s, (down, blocks)) in self.stages.iter().enumerate().take(last + 1) {
            x = down.forward_t(&x, mode)?;
            for block in blocks {
                x = block.forward_t(&x, mode)?;
            }
            if keep.contains(&s) {
                outs.push(x.clone());
            }
        }
        Ok(outs)
    }

    pub fn forward(&self, x: &Tensor, keep: &[usize]) -> Result<Vec<Tensor>> {
        self.forward_t(x, keep, Mode::Eval)
    }

    /// Every conv with its batch norm absorbed (the inference step).
    pub fn absorb_bn(&self) -> Result<Self> {
        self.map(&DarkConv::absorb_bn)
    }

    pub fn to_dtype(&self, dtype: DType) -> Result<Self> {
        self.map(&|c: &DarkConv| c.to_dtype(dtype))
    }

    fn map(&self, f: &dyn Fn(&DarkConv) -> Result<DarkConv>) -> Result<Self> {
        Ok(Self {
            preconv: f(&self.preconv)?,
            stages: self
                .stages
                .iter()
                .map(|(down, blocks)| {
                    let blocks = blocks.iter().map(|b| b.map(f)).collect::<Result<_>>()?;
                    Ok((f(down)?, blocks))
                })
                .collect::<Result<_>>()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::test_util::{self as tu, Nd, Weights};

    fn leaky(x: &Nd) -> Nd {
        x.map(|v| if v > 0.0 { v } else { 0.1 * v })
    }

    #[test]
    fn dark_block_and_strided_conv_match_naive_composition() {
        let c = 4;
        let mut w = Weights::default();
        let dw = w.conv("down.0", 2 * c, 3, 3);
        let db = w.bn("down.1", 2 * c);
        let c1 = w.conv("blk.conv1.0", c, 2 * c, 1);
        let b1 = w.bn("blk.conv1.1", c);
        let c2 = w.conv("blk.conv2.0", 2 * c, c, 3);
        let b2 = w.bn("blk.conv2.1", 2 * c);
        let vb = w.vb();
        let down = DarkConv::load(vb.pp("down"), 3, 2 * c, 3, 2).unwrap();
        let block = DarkBlock::load(vb.pp("blk"), c).unwrap();

        let x = tu::rand_input(2, 3, 11, 10);
        let d = down.forward(&x).unwrap();
        let got = block.forward(&d).unwrap();
        let absorbed = block.map(DarkConv::absorb_bn).unwrap().forward(&d).unwrap();

        let dn = leaky(&tu::bn(
            &tu::conv(&Nd::from_tensor(&x), &dw, None, 2, 1),
            &db,
        ));
        let y = leaky(&tu::bn(&tu::conv(&dn, &c1, None, 1, 0), &b1));
        let want = leaky(&tu::bn(&tu::conv(&y, &c2, None, 1, 1), &b2)).add(&dn);
        assert_eq!(d.dims(), &[2, 2 * c, 6, 5]);
        assert!(tu::rel_err(&d, &dn) < 1e-5);
        // The block output keeps negatives: there is no activation after the residual add.
        assert!(want.data.iter().any(|&v| v < 0.0));
        let err = tu::rel_err(&got, &want);
        assert!(err < 1e-5, "{err}");
        let err = tu::rel_err(&absorbed, &want);
        assert!(err < 1e-5, "absorbed: {err}");
    }

    #[test]
    fn darknet_stage_outputs_have_the_reference_channels_and_strides() {
        let mut w = Weights::default();
        w.conv("_preconv.0", 32, 3, 3);
        w.bn("_preconv.1", 32);
        let mut c_in = 32;
        for s in 0..5 {
            let c = 32 << s;
            w.conv(&format!("layers.{s}.0.0"), 2 * c, c_in, 3);
            w.bn(&format!("layers.{s}.0.1"), 2 * c);
            w.conv(&format!("layers.{s}.1.conv1.0"), c, 2 * c, 1);
            w.bn(&format!("layers.{s}.1.conv1.1"), c);
            w.conv(&format!("layers.{s}.1.conv2.0"), 2 * c, c, 3);
            w.bn(&format!("layers.{s}.1.conv2.1"), 2 * c);
            c_in = 2 * c;
        }
        let net = DarkNet::load(w.vb(), &[1; 5]).unwrap().absorb_bn().unwrap();
        let out = net
            .forward(&tu::rand_input(1, 3, 70, 70), &[2, 3, 4])
            .unwrap();
        let dims: Vec<Vec<usize>> = out.iter().map(|t| t.dims().to_vec()).collect();
        assert_eq!(
            dims,
            vec![vec![1, 256, 9, 9], vec![1, 512, 5, 5], vec![1, 1024, 3, 3]]
        );
    }
}
