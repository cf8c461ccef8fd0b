//! DarkNet-53 backbone of yolact_darknet53 (spec §2.2). Every conv is conv -> BN -> LeakyReLU(0.1).

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

use super::layers::Conv2d;

/// Channels of stage `s` outputs: 64, 128, 256, 512, 1024.
pub const STAGE_CHANNELS: [usize; 5] = [64, 128, 256, 512, 1024];

const LEAKY_SLOPE: f64 = 0.1;

/// Conv with folded BN followed by LeakyReLU(0.1); keys `<prefix>.0.weight` and `<prefix>.1.*`.
#[derive(Debug, Clone)]
pub struct DarkConv(Conv2d);

impl DarkConv {
    pub fn load(
        vb: VarBuilder,
        c_in: usize,
        c_out: usize,
        k: usize,
        stride: usize,
    ) -> Result<Self> {
        Ok(Self(Conv2d::load_bn(
            vb.pp("0"),
            vb.pp("1"),
            c_in,
            c_out,
            k,
            stride,
            k / 2,
        )?))
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        // max(y, 0.1 y) equals LeakyReLU for a slope below 1, in one fused binary op.
        let y = self.0.forward(x)?;
        y.maximum(&(&y * LEAKY_SLOPE)?)
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

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.conv2.forward(&self.conv1.forward(x)?)? + x
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
    pub fn forward(&self, x: &Tensor, keep: &[usize]) -> Result<Vec<Tensor>> {
        let mut x = self.preconv.forward(x)?;
        let last = keep.iter().copied().max().unwrap_or(0);
        let mut outs = Vec::with_capacity(keep.len());
        for (s, (down, blocks)) in self.stages.iter().enumerate().take(last + 1) {
            x = down.forward(&x)?;
            for block in blocks {
                x = block.forward(&x)?;
            }
            if keep.contains(&s) {
                outs.push(x.clone());
            }
        }
        Ok(outs)
    }
}
