//! Bottleneck ResNet-50/101 backbone (torchvision "v1.5": stride on the 3x3), with the YOLACT++
//! deformable 3x3 convs in the blocks chosen by `YolactConfig::is_dcn_block`
//! (docs/model.md §2.1, §2.3).

use candle_core::{DType, Result, Tensor};
use candle_nn::VarBuilder;

use super::layers::{relu_t, ConvBn, DeformConv2d, Mode};
use crate::config::YolactConfig;

#[derive(Debug, Clone)]
enum Conv3x3 {
    Plain(ConvBn),
    Deform(DeformConv2d),
}

impl Conv3x3 {
    fn forward_t(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        match self {
            Conv3x3::Plain(c) => c.forward_t(x, mode),
            Conv3x3::Deform(c) => c.forward_t(x, mode),
        }
    }

    fn map(
        &self,
        plain: impl Fn(&ConvBn) -> Result<ConvBn>,
        deform: impl Fn(&DeformConv2d) -> Result<DeformConv2d>,
    ) -> Result<Self> {
        Ok(match self {
            Conv3x3::Plain(c) => Conv3x3::Plain(plain(c)?),
            Conv3x3::Deform(c) => Conv3x3::Deform(deform(c)?),
        })
    }
}

/// 1x1 -> 3x3 (stride, maybe deformable) -> 1x1 x4, plus an identity or projected shortcut.
#[derive(Debug, Clone)]
pub struct Bottleneck {
    conv1: ConvBn,
    conv2: Conv3x3,
    conv3: ConvBn,
    downsample: Option<ConvBn>,
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
        let conv1 = ConvBn::load(vb.pp("conv1"), vb.pp("bn1"), c_in, planes, 1, 1, 0)?;
        let conv2 = if dcn {
            Conv3x3::Deform(DeformConv2d::load(
                vb.pp("conv2"),
                vb.pp("bn2"),
                planes,
                planes,
                stride,
            )?)
        } else {
            Conv3x3::Plain(ConvBn::load(
                vb.pp("conv2"),
                vb.pp("bn2"),
                planes,
                planes,
                3,
                stride,
                1,
            )?)
        };
        let conv3 = ConvBn::load(vb.pp("conv3"), vb.pp("bn3"), planes, c_out, 1, 1, 0)?;
        let downsample = if stride != 1 || c_in != c_out {
            let ds = vb.pp("downsample");
            Some(ConvBn::load(
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

    pub fn forward_t(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let y = self.conv1.forward_fused_t(x, None, true, mode)?;
        let y = relu_t(&self.conv2.forward_t(&y, mode)?, mode)?;
        let shortcut = match &self.downsample {
            Some(ds) => ds.forward_t(x, mode)?,
            None => x.clone(),
        };
        self.conv3.forward_fused_t(&y, Some(&shortcut), true, mode)
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_t(x, Mode::Eval)
    }

    /// Every conv with its batch norm absorbed (the inference step).
    pub fn absorb_bn(&self) -> Result<Self> {
        self.map(ConvBn::absorb_bn, DeformConv2d::absorb_bn)
    }

    pub fn to_dtype(&self, dtype: DType) -> Result<Self> {
        self.map(|c| c.to_dtype(dtype), |c| c.to_dtype(dtype))
    }

    fn map(
        &self,
        plain: impl Fn(&ConvBn) -> Result<ConvBn>,
        deform: impl Fn(&DeformConv2d) -> Result<DeformConv2d>,
    ) -> Result<Self> {
        Ok(Self {
            conv1: plain(&self.conv1)?,
            conv2: self.conv2.map(&plain, deform)?,
            conv3: plain(&self.conv3)?,
            downsample: self.downsample.as_ref().map(&plain).transpose()?,
        })
    }
}

#[derive(Debug, Clone)]
pub struct ResNet {
    stem: ConvBn,
    stages: Vec<Vec<Bottleneck>>,
}

impl ResNet {
    /// `vb` is the `backbone` prefix.
    /// `width` is the stem's channels and stage 0's planes (64 in torchvision).
    pub fn load(
        vb: VarBuilder,
        blocks: &[usize; 4],
        width: usize,
        cfg: &YolactConfig,
    ) -> Result<Self> {
        let stem = ConvBn::load(vb.pp("conv1"), vb.pp("bn1"), 3, width, 7, 2, 3)?;
        let mut c_in = width;
        let mut stages = Vec::with_capacity(4);
        for (s, &n) in blocks.iter().enumerate() {
            let planes = width << s;
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
    pub fn forward_t(&self, x: &Tensor, keep: &[usize], mode: Mode) -> Result<Vec<Tensor>> {
        let x = self.stem.forward_fused_t(x, None, true, mode)?;
        // MaxPool 3x3 / 2 / pad 1 (-inf padding, as the reference).
        let mut x = if mode.is_train() {
            max_pool_3x3_s2_train(&x)?
        } else {
            crate::ops::pool::max_pool2d_eval(&x, 3, 2, 1)?
        };
        let last = keep.iter().copied().max().unwrap_or(0);
        let mut outs = Vec::with_capacity(keep.len());
        for (s, stage) in self.stages.iter().enumerate().take(last + 1) {
            for block in stage {
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
        self.map(Bottleneck::absorb_bn, ConvBn::absorb_bn)
    }

    pub fn to_dtype(&self, dtype: DType) -> Result<Self> {
        self.map(|b| b.to_dtype(dtype), |c| c.to_dtype(dtype))
    }

    fn map(
        &self,
        block: impl Fn(&Bottleneck) -> Result<Bottleneck>,
        stem: impl Fn(&ConvBn) -> Result<ConvBn>,
    ) -> Result<Self> {
        Ok(Self {
            stem: stem(&self.stem)?,
            stages: self
                .stages
                .iter()
                .map(|s| s.iter().map(&block).collect())
                .collect::<Result<_>>()?,
        })
    }
}

/// The stem's max pool (3x3, stride 2, padding 1) for training: the pooling op's maxima, and each
/// window's gradient to its first maximum in PyTorch's scan order ([`crate::ops::pool`]), where
/// candle's own pool backward needs kernel == stride and `maximum` splits ties.
pub fn max_pool_3x3_s2_train(x: &Tensor) -> Result<Tensor> {
    crate::ops::pool::max_pool2d(x, 3, 2, 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BackboneKind;
    use crate::model::test_util::{self as tu, Nd, Weights};

    /// Registers a bottleneck's weights under `p` and returns its naive f64 forward.
    fn naive_bottleneck(
        w: &mut Weights,
        p: &str,
        c_in: usize,
        planes: usize,
        stride: usize,
    ) -> impl Fn(&Nd) -> Nd {
        let c1 = w.conv(&format!("{p}.conv1"), planes, c_in, 1);
        let b1 = w.bn(&format!("{p}.bn1"), planes);
        let c2 = w.conv(&format!("{p}.conv2"), planes, planes, 3);
        let b2 = w.bn(&format!("{p}.bn2"), planes);
        let c3 = w.conv(&format!("{p}.conv3"), 4 * planes, planes, 1);
        let b3 = w.bn(&format!("{p}.bn3"), 4 * planes);
        let ds = (stride != 1 || c_in != 4 * planes).then(|| {
            (
                w.conv(&format!("{p}.downsample.0"), 4 * planes, c_in, 1),
                w.bn(&format!("{p}.downsample.1"), 4 * planes),
            )
        });
        move |x: &Nd| {
            let y = tu::bn(&tu::conv(x, &c1, None, 1, 0), &b1).relu();
            let y = tu::bn(&tu::conv(&y, &c2, None, stride, 1), &b2).relu();
            let y = tu::bn(&tu::conv(&y, &c3, None, 1, 0), &b3);
            let sc = match &ds {
                Some((dc, db)) => tu::bn(&tu::conv(x, dc, None, stride, 0), db),
                None => x.clone(),
            };
            y.add(&sc).relu()
        }
    }

    #[test]
    fn bottleneck_matches_naive_composition() {
        for (c_in, planes, stride) in [(8, 4, 2), (16, 4, 1), (8, 4, 1)] {
            let mut w = Weights::default();
            let naive = naive_bottleneck(&mut w, "b", c_in, planes, stride);
            let block = Bottleneck::load(w.vb().pp("b"), c_in, planes, stride, false).unwrap();
            let x = tu::rand_input(2, c_in, 9, 7);
            let want = naive(&Nd::from_tensor(&x));
            for (name, got) in [
                ("layers", block.forward(&x).unwrap()),
                ("absorbed", block.absorb_bn().unwrap().forward(&x).unwrap()),
                (
                    "train frozen",
                    block.forward_t(&x, Mode::TrainFrozenBn).unwrap(),
                ),
            ] {
                let err = tu::rel_err(&got, &want);
                assert!(err < 1e-5, "({c_in},{planes},{stride}) {name}: {err}");
            }
        }
    }

    /// Max pool 3x3 / 2 with -inf padding, as PyTorch does it.
    fn naive_maxpool(x: &Nd) -> Nd {
        let (ho, wo) = ((x.h - 1) / 2 + 1, (x.w - 1) / 2 + 1);
        let mut out = Nd::zeros(x.n, x.c, ho, wo);
        for n in 0..x.n {
            for c in 0..x.c {
                for oy in 0..ho {
                    for ox in 0..wo {
                        let mut m = f64::NEG_INFINITY;
                        for ky in 0..3 {
                            for kx in 0..3 {
                                let (iy, ix) =
                                    ((oy * 2 + ky) as isize - 1, (ox * 2 + kx) as isize - 1);
                                if iy >= 0 && ix >= 0 && (iy as usize) < x.h && (ix as usize) < x.w
                                {
                                    m = m.max(x.at(n, c, iy as usize, ix as usize));
                                }
                            }
                        }
                        let i = out.idx(n, c, oy, ox);
                        out.data[i] = m;
                    }
                }
            }
        }
        out
    }

    #[test]
    fn training_max_pool_matches_the_pool_op_and_routes_gradients_to_the_maxima() {
        let dev = candle_core::Device::Cpu;
        for (h, w) in [(7, 6), (8, 9), (5, 5)] {
            // Positive and (almost surely) distinct, so every window has one maximum.
            let x = Tensor::rand(0.1f32, 1.0, (2, 3, h, w), &dev).unwrap();
            let want = x
                .pad_with_zeros(2, 1, 1)
                .unwrap()
                .pad_with_zeros(3, 1, 1)
                .unwrap()
                .max_pool2d_with_stride(3, 2)
                .unwrap();
            let var = candle_core::Var::from_tensor(&x).unwrap();
            let got = max_pool_3x3_s2_train(var.as_tensor()).unwrap();
            assert_eq!(got.dims(), want.dims());
            assert_eq!(tu::vec1(&got), tu::vec1(&want), "{h}x{w} values");
            let (ho, wo) = (got.dim(2).unwrap(), got.dim(3).unwrap());
            let r = Tensor::randn(0f32, 1.0, (2, 3, ho, wo), &dev).unwrap();
            let g = (got * &r).unwrap().sum_all().unwrap().backward().unwrap();
            let g = tu::vec1(g.get(var.as_tensor()).unwrap());
            // Each window's weight lands on its (unique, positive) maximum.
            let (xn, rn) = (Nd::from_tensor(&x), Nd::from_tensor(&r));
            let mut want_g = Nd::zeros(2, 3, h, w);
            for n in 0..2 {
                for c in 0..3 {
                    for oy in 0..ho {
                        for ox in 0..wo {
                            let mut best: Option<(usize, usize, f64)> = None;
                            for ky in 0..3 {
                                for kx in 0..3 {
                                    let (iy, ix) =
                                        ((2 * oy + ky) as isize - 1, (2 * ox + kx) as isize - 1);
                                    if iy < 0 || ix < 0 || iy as usize >= h || ix as usize >= w {
                                        continue;
                                    }
                                    let v = xn.at(n, c, iy as usize, ix as usize);
                                    if best.is_none_or(|b| v > b.2) {
                                        best = Some((iy as usize, ix as usize, v));
                                    }
                                }
                            }
                            let (by, bx, _) = best.unwrap();
                            let i = want_g.idx(n, c, by, bx);
                            want_g.data[i] += rn.at(n, c, oy, ox);
                        }
                    }
                }
            }
            let d = g
                .iter()
                .zip(&want_g.data)
                .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
            assert!(d < 1e-5, "{h}x{w} gradient off by {d}");
        }
    }

    #[test]
    fn one_block_resnet_matches_naive_stem_pool_and_stages() {
        let mut cfg = YolactConfig::by_name("yolact_resnet50").unwrap();
        cfg.backbone = BackboneKind::resnet([1, 1, 1, 1], None);
        let mut w = Weights::default();
        let stem = w.conv("conv1", 64, 3, 7);
        let stem_bn = w.bn("bn1", 64);
        let mut stages = Vec::new();
        let mut c_in = 64;
        for s in 0..4 {
            let stride = if s == 0 { 1 } else { 2 };
            let planes = 64 << s;
            stages.push(naive_bottleneck(
                &mut w,
                &format!("layers.{s}.0"),
                c_in,
                planes,
                stride,
            ));
            c_in = 4 * planes;
        }
        let net = ResNet::load(w.vb(), &[1, 1, 1, 1], 64, &cfg)
            .unwrap()
            .absorb_bn()
            .unwrap();
        let x = tu::rand_input(1, 3, 29, 22);
        let got = net.forward(&x, &[1, 2, 3]).unwrap();

        let mut y = naive_maxpool(
            &tu::bn(&tu::conv(&Nd::from_tensor(&x), &stem, None, 2, 3), &stem_bn).relu(),
        );
        let mut want = Vec::new();
        for f in &stages {
            y = f(&y);
            want.push(y.clone());
        }
        assert_eq!(got.len(), 3);
        for (g, wnt) in got.iter().zip(&want[1..]) {
            assert_eq!(g.dims(), &[wnt.n, wnt.c, wnt.h, wnt.w]);
            let err = tu::rel_err(g, wnt);
            assert!(err < 1e-5, "{err}");
        }
    }
}
