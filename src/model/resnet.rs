//! Bottleneck ResNet-50/101 backbone (torchvision "v1.5": stride on the 3x3), with the YOLACT++
//! deformable 3x3 convs in the blocks chosen by `YolactConfig::is_dcn_block` (spec §2.1, §2.3).

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

use super::layers::{Conv2d, DeformConv2d};
use crate::config::YolactConfig;

/// Channels of stage `s` outputs: 256, 512, 1024, 2048.
pub const STAGE_CHANNELS: [usize; 4] = [256, 512, 1024, 2048];

#[derive(Debug, Clone)]
enum Conv3x3 {
    Plain(Conv2d),
    Deform(DeformConv2d),
}

impl Conv3x3 {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Conv3x3::Plain(c) => c.forward(x),
            Conv3x3::Deform(c) => c.forward(x),
        }
    }
}

/// 1x1 -> 3x3 (stride, maybe deformable) -> 1x1 x4, plus an identity or projected shortcut.
#[derive(Debug, Clone)]
pub struct Bottleneck {
    conv1: Conv2d,
    conv2: Conv3x3,
    conv3: Conv2d,
    downsample: Option<Conv2d>,
}

impl Bottleneck {
    pub fn load(
        vb: VarBuilder,
        c_in: usize,
        planes: usize,
        stride: usize,
        dcn: bool,
    ) -> Result<Self> {
        let c_out = planes * 4;
        let conv1 = Conv2d::load_bn(vb.pp("conv1"), vb.pp("bn1"), c_in, planes, 1, 1, 0)?;
        let conv2 = if dcn {
            Conv3x3::Deform(DeformConv2d::load_bn(
                vb.pp("conv2"),
                vb.pp("bn2"),
                planes,
                planes,
                stride,
            )?)
        } else {
            Conv3x3::Plain(Conv2d::load_bn(
                vb.pp("conv2"),
                vb.pp("bn2"),
                planes,
                planes,
                3,
                stride,
                1,
            )?)
        };
        let conv3 = Conv2d::load_bn(vb.pp("conv3"), vb.pp("bn3"), planes, c_out, 1, 1, 0)?;
        let downsample = if stride != 1 || c_in != c_out {
            let ds = vb.pp("downsample");
            Some(Conv2d::load_bn(
                ds.pp("0"),
                ds.pp("1"),
                c_in,
                c_out,
                1,
                stride,
                0,
            )?)
        } else {
            None
        };
        Ok(Self {
            conv1,
            conv2,
            conv3,
            downsample,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = self.conv1.forward(x)?.relu()?;
        let y = self.conv2.forward(&y)?.relu()?;
        let y = self.conv3.forward(&y)?;
        let shortcut = match &self.downsample {
            Some(ds) => ds.forward(x)?,
            None => x.clone(),
        };
        (y + shortcut)?.relu()
    }
}

#[derive(Debug, Clone)]
pub struct ResNet {
    stem: Conv2d,
    stages: Vec<Vec<Bottleneck>>,
}

impl ResNet {
    /// `vb` is the `backbone` prefix.
    pub fn load(vb: VarBuilder, blocks: &[usize; 4], cfg: &YolactConfig) -> Result<Self> {
        let stem = Conv2d::load_bn(vb.pp("conv1"), vb.pp("bn1"), 3, 64, 7, 2, 3)?;
        let mut c_in = 64;
        let mut stages = Vec::with_capacity(4);
        for (s, &n) in blocks.iter().enumerate() {
            let planes = 64 << s;
            let vbs = vb.pp("layers").pp(s);
            let mut stage = Vec::with_capacity(n);
            for b in 0..n {
                let stride = if b == 0 && s > 0 { 2 } else { 1 };
                let dcn = cfg.is_dcn_block(s, b);
                stage.push(Bottleneck::load(vbs.pp(b), c_in, planes, stride, dcn)?);
                c_in = planes * 4;
            }
            stages.push(stage);
        }
        Ok(Self { stem, stages })
    }

    /// Runs the stem and stages up to the highest index in `keep`, returning the outputs of the
    /// stages listed in `keep` (in stage order).
    pub fn forward(&self, x: &Tensor, keep: &[usize]) -> Result<Vec<Tensor>> {
        let x = self.stem.forward(x)?.relu()?;
        // MaxPool 3x3 / 2 / pad 1. Its input is post-ReLU (>= 0) and every window holds at least one
        // real pixel, so zero padding gives the same maxima as the reference's -inf padding.
        let mut x = x
            .pad_with_zeros(2, 1, 1)?
            .pad_with_zeros(3, 1, 1)?
            .max_pool2d_with_stride(3, 2)?;
        let last = keep.iter().copied().max().unwrap_or(0);
        let mut outs = Vec::with_capacity(keep.len());
        for (s, stage) in self.stages.iter().enumerate().take(last + 1) {
            for block in stage {
                x = block.forward(&x)?;
            }
            if keep.contains(&s) {
                outs.push(x.clone());
            }
        }
        Ok(outs)
    }
}
