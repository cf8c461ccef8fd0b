//! The YOLACT / YOLACT++ network (docs/model.md §2, §5): backbone -> FPN -> protonet + shared
//! prediction head, the YOLACT++ mask-IoU net, and the training-only semantic segmentation conv.
//!
//! One model trains and infers. [`Yolact::load`] builds it as trained: batch norms are layers and
//! the head's three output convs separate, each tensor under its state-dict key. The inference
//! step [`Yolact::fuse`] absorbs every batch norm into its conv and stacks the head convs; the
//! engine calls it after loading. [`Yolact::forward_t`] returns logits in either form;
//! [`Yolact::forward`] is the eval pass with the inference activations applied.
//!
//! Weights are requested from a `VarBuilder` under exactly the reference's state-dict names;
//! `num_batches_tracked` is never requested, `semantic_seg_conv.*` only by [`Yolact::load_train`].

pub mod darknet;
pub mod fpn;
pub mod head;
pub mod layers;
pub mod maskiou;
pub mod protonet;
pub mod resnet;

use candle_core::{DType, Result, Tensor};
use candle_nn::VarBuilder;

use crate::config::{BackboneKind, YolactConfig};
use darknet::DarkNet;
use fpn::Fpn;
use head::{HeadOutput, PredictionHead};
use layers::{conv_out, Conv2d, Mode};
use maskiou::MaskIouNet;
use protonet::ProtoNet;
use resnet::ResNet;

/// Raw network outputs for a batch; P is the prior count (19248 for YOLACT at 550, 57744 for ++).
#[derive(Debug, Clone)]
pub struct RawOutput {
    /// (N, P, 4) box regressions, not decoded.
    pub loc: Tensor,
    /// (N, P, num_classes) softmax over all classes, background at index 0.
    pub conf: Tensor,
    /// (N, P, mask_dim) tanh'd mask coefficients.
    pub mask: Tensor,
    /// (N, Hp, Wp, mask_dim) ReLU'd prototypes, contiguous.
    pub proto: Tensor,
}

/// The network's outputs before the inference activations: what training computes its loss on.
#[derive(Debug, Clone)]
pub struct Logits {
    /// (N, P, 4) box regressions, not decoded.
    pub loc: Tensor,
    /// (N, P, num_classes) class logits, background at index 0.
    pub conf: Tensor,
    /// (N, P, mask_dim) mask coefficients before tanh.
    pub coef: Tensor,
    /// (N, Hp, Wp, mask_dim) ReLU'd prototypes, contiguous.
    pub proto: Tensor,
    /// (N, num_classes - 1, H3, W3) semantic segmentation logits over P3: training passes of a
    /// model loaded with [`Yolact::load_train`] only.
    pub segm: Option<Tensor>,
}

impl Logits {
    /// The eval outputs: softmax over the classes, tanh on the coefficients.
    pub fn activate(self) -> Result<RawOutput> {
        let (conf, mask) = head::activate(&self.conf, &self.coef)?;
        Ok(RawOutput {
            loc: self.loc,
            conf,
            mask,
            proto: self.proto,
        })
    }
}

/// How batch norm runs in training passes ([`Yolact::forward_t`] with `train`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TrainBn {
    /// Running statistics, no gradient for the norms (the reference's `freeze_bn`, used when the
    /// per-device batch is small).
    #[default]
    Frozen,
    /// Batch statistics, running averages updated.
    Batch,
}

#[derive(Debug, Clone)]
enum Backbone {
    ResNet(ResNet),
    DarkNet(DarkNet),
}

impl Backbone {
    fn absorb_bn(&self) -> Result<Self> {
        Ok(match self {
            Backbone::ResNet(r) => Backbone::ResNet(r.absorb_bn()?),
            Backbone::DarkNet(d) => Backbone::DarkNet(d.absorb_bn()?),
        })
    }

    fn to_dtype(&self, dtype: DType) -> Result<Self> {
        Ok(match self {
            Backbone::ResNet(r) => Backbone::ResNet(r.to_dtype(dtype)?),
            Backbone::DarkNet(d) => Backbone::DarkNet(d.to_dtype(dtype)?),
        })
    }
}

#[derive(Debug, Clone)]
pub struct Yolact {
    cfg: YolactConfig,
    backbone: Backbone,
    fpn: Fpn,
    proto: ProtoNet,
    head: PredictionHead,
    maskiou: Option<MaskIouNet>,
    semantic_seg: Option<Conv2d>,
    train_bn: TrainBn,
    fused: bool,
}

impl Yolact {
    /// The network as trained (batch norms as layers), every key the inference needs.
    pub fn load(vb: VarBuilder, cfg: &YolactConfig) -> Result<Self> {
        Self::load_with(vb, cfg, false)
    }

    /// [`Yolact::load`] plus the training-only `semantic_seg_conv` (a 1x1 conv from P3 to the
    /// foreground classes), whose logits training passes return in [`Logits::segm`].
    pub fn load_train(vb: VarBuilder, cfg: &YolactConfig) -> Result<Self> {
        Self::load_with(vb, cfg, true)
    }

    fn load_with(vb: VarBuilder, cfg: &YolactConfig, semantic_seg: bool) -> Result<Self> {
        let vbb = vb.pp("backbone");
        let sel = cfg.selected_layers;
        let c_in = select_channels(&cfg.backbone.stage_channels(), sel)?;
        let backbone = match &cfg.backbone {
            BackboneKind::ResNet { blocks, width, .. } => {
                Backbone::ResNet(ResNet::load(vbb, blocks, *width, cfg)?)
            }
            BackboneKind::DarkNet { blocks } => Backbone::DarkNet(DarkNet::load(vbb, blocks)?),
        };
        let f = cfg.fpn_channels;
        let fpn = Fpn::load(vb.pp("fpn"), c_in, f)?;
        let proto = ProtoNet::load(vb.pp("proto_net"), f, cfg.mask_dim)?;
        let head = PredictionHead::load(
            vb.pp("prediction_layers").pp(0),
            f,
            cfg.priors_per_cell(),
            cfg.num_classes,
            cfg.mask_dim,
        )?;
        let maskiou = if cfg.use_maskiou {
            Some(MaskIouNet::load(
                vb.pp("maskiou_net").pp("maskiou_net"),
                cfg.num_fg_classes(),
            )?)
        } else {
            None
        };
        let semantic_seg = if semantic_seg {
            Some(Conv2d::load(
                vb.pp("semantic_seg_conv"),
                f,
                cfg.num_fg_classes(),
                1,
                1,
                0,
                true,
            )?)
        } else {
            None
        };
        Ok(Self {
            cfg: cfg.clone(),
            backbone,
            fpn,
            proto,
            head,
            maskiou,
            semantic_seg,
            train_bn: TrainBn::default(),
            fused: false,
        })
    }

    /// The inference step: every batch norm absorbed into its conv (folded in f64, then f32) and
    /// the head's output convs stacked into one. The result no longer trains (its tensors are new,
    /// not the store's), and its eval outputs equal this model's up to the fold's rounding.
    pub fn fuse(&self) -> Result<Self> {
        Ok(Self {
            cfg: self.cfg.clone(),
            backbone: self.backbone.absorb_bn()?,
            fpn: self.fpn.clone(),
            proto: self.proto.clone(),
            head: self.head.stack_convs()?,
            maskiou: self.maskiou.clone(),
            semantic_seg: self.semantic_seg.clone(),
            train_bn: self.train_bn,
            fused: true,
        })
    }

    /// A fused model with its weights in `dtype` (f16 for `--half`). Batch norms must have been
    /// absorbed first, so their statistics are folded in full precision.
    pub fn to_dtype(&self, dtype: DType) -> Result<Self> {
        if !self.fused {
            candle_core::bail!(
                "cast the model after `fuse`, so batch norms fold in full precision"
            );
        }
        Ok(Self {
            cfg: self.cfg.clone(),
            backbone: self.backbone.to_dtype(dtype)?,
            fpn: self.fpn.to_dtype(dtype)?,
            proto: self.proto.to_dtype(dtype)?,
            head: self.head.to_dtype(dtype)?,
            maskiou: self
                .maskiou
                .as_ref()
                .map(|m| m.to_dtype(dtype))
                .transpose()?,
            semantic_seg: self
                .semantic_seg
                .as_ref()
                .map(|c| c.to_dtype(dtype))
                .transpose()?,
            train_bn: self.train_bn,
            fused: true,
        })
    }

    /// Whether [`Yolact::fuse`] made this model.
    pub fn is_fused(&self) -> bool {
        self.fused
    }

    /// How batch norm runs in training passes.
    pub fn set_train_bn(&mut self, bn: TrainBn) {
        self.train_bn = bn;
    }

    pub fn config(&self) -> &YolactConfig {
        &self.cfg
    }

    fn mode(&self, train: bool) -> Result<Mode> {
        if !train {
            return Ok(Mode::Eval);
        }
        if self.fused {
            candle_core::bail!(
                "this model is fused for inference (batch norms absorbed): train the model                  `Yolact::load_train` returns"
            );
        }
        Ok(match self.train_bn {
            TrainBn::Frozen => Mode::TrainFrozenBn,
            TrainBn::Batch => Mode::Train,
        })
    }

    fn backbone_t(&self, x: &Tensor, mode: Mode) -> Result<Vec<Tensor>> {
        let keep = self.cfg.selected_layers;
        match &self.backbone {
            Backbone::ResNet(r) => r.forward_t(x, &keep, mode),
            Backbone::DarkNet(d) => d.forward_t(x, &keep, mode),
        }
    }

    /// (N, 3, S, S) normalised RGB -> the selected backbone maps [C3, C4, C5].
    pub fn backbone(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        self.backbone_t(x, Mode::Eval)
    }

    /// [C3, C4, C5] -> [P3, P4, P5, P6, P7].
    pub fn fpn(&self, c: &[Tensor]) -> Result<Vec<Tensor>> {
        self.fpn.forward(c)
    }

    /// P3 -> (N, Hp, Wp, mask_dim) prototypes, ReLU applied.
    pub fn protonet(&self, p3: &Tensor) -> Result<Tensor> {
        self.proto.forward(p3)
    }

    /// [P3..P7] -> (loc, conf logits, mask coefficients before tanh); see [`head::activate`].
    pub fn heads(&self, p: &[Tensor]) -> Result<(Tensor, Tensor, Tensor)> {
        let HeadOutput { loc, conf, coef } = self.head.forward_t(p, Mode::Eval)?;
        Ok((loc, conf, coef))
    }

    /// The whole network as logits; `train` selects the training pass (convs with a backward,
    /// batch norm as [`Yolact::set_train_bn`] says, and the semantic segmentation logits when the
    /// model has that conv).
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Logits> {
        let mode = self.mode(train)?;
        let (_, c, h, w) = x.dims4()?;
        if c != 3 || h == 0 || w == 0 {
            candle_core::bail!("yolact expects an (N, 3, H, W) input, got {:?}", x.dims());
        }
        let c = self.backbone_t(x, mode)?;
        let p = self.fpn.forward_t(&c, mode)?;
        let proto = self.proto.forward_t(&p[0], mode)?;
        let HeadOutput { loc, conf, coef } = self.head.forward_t(&p, mode)?;
        let segm = match (&self.semantic_seg, train) {
            (Some(conv), true) => Some(conv.forward_t(&p[0], mode)?),
            _ => None,
        };
        Ok(Logits {
            loc,
            conf,
            coef,
            proto,
            segm,
        })
    }

    /// The eval pass with the inference activations (softmax, tanh) applied.
    pub fn forward(&self, x: &Tensor) -> Result<RawOutput> {
        self.forward_t(x, false)?.activate()
    }

    /// YOLACT++ only: soft cropped masks (n, 1, Hp, Wp) -> (n, num_fg_classes) predicted IoU.
    pub fn maskiou(&self, masks: &Tensor) -> Result<Tensor> {
        self.maskiou_t(masks, false)
    }

    /// [`Yolact::maskiou`], as a training pass when `train` (the mask-IoU loss trains this net).
    pub fn maskiou_t(&self, masks: &Tensor, train: bool) -> Result<Tensor> {
        let mode = self.mode(train)?;
        match &self.maskiou {
            Some(net) => net.forward_t(masks, mode),
            None => candle_core::bail!("config `{}` has no mask-IoU net", self.cfg.name),
        }
    }

    /// P3..P7 (H, W) for this config's `max_size` input.
    pub fn conv_sizes(&self) -> [(usize, usize); 5] {
        conv_sizes(&self.cfg, self.cfg.max_size, self.cfg.max_size)
    }
}

fn select_channels(ch: &[usize], sel: [usize; 3]) -> Result<[usize; 3]> {
    let mut out = [0; 3];
    for (o, &s) in out.iter_mut().zip(&sel) {
        *o = *ch
            .get(s)
            .ok_or_else(|| candle_core::Error::Msg(format!("selected layer {s} out of range")))?;
    }
    Ok(out)
}

/// P3..P7 feature sizes for an (h, w) input, following the strided convs of the backbone and FPN.
/// The one source of the network's feature-map geometry: the priors, the heads' tests and
/// `yolact bench-ops` all come here. 550 -> 69, 35, 18, 9, 5; 700 -> 88, 44, 22, 11, 6.
pub fn conv_sizes(cfg: &YolactConfig, h: usize, w: usize) -> [(usize, usize); 5] {
    let half = |s: usize| conv_out(s, 3, 2, 1);
    let stages = stage_sizes(cfg, h, w);
    let at = |i: usize| stages.get(i).copied().unwrap_or((0, 0));
    let [s3, s4, s5] = cfg.selected_layers;
    let (p3, p4, p5) = (at(s3), at(s4), at(s5));
    let p6 = (half(p5.0), half(p5.1));
    let p7 = (half(p6.0), half(p6.1));
    [p3, p4, p5, p6, p7]
}

/// (H, W) of each backbone stage's output for an (h, w) input: ResNet's four stages after the
/// stem (conv 7x7/2 pad 3, max pool 3x3/2 pad 1; the first stage keeps the stem's size, each
/// later one halves it in its first block), DarkNet's five stride-2 stages.
pub fn stage_sizes(cfg: &YolactConfig, h: usize, w: usize) -> Vec<(usize, usize)> {
    let half = |s: usize| conv_out(s, 3, 2, 1);
    let mut stages = Vec::new();
    let (mut sh, mut sw) = (h, w);
    match &cfg.backbone {
        BackboneKind::ResNet { .. } => {
            sh = conv_out(sh, 7, 2, 3);
            sw = conv_out(sw, 7, 2, 3);
            sh = half(sh);
            sw = half(sw);
            stages.push((sh, sw));
            for _ in 1..4 {
                sh = half(sh);
                sw = half(sw);
                stages.push((sh, sw));
            }
        }
        BackboneKind::DarkNet { .. } => {
            for _ in 0..5 {
                sh = half(sh);
                sw = half(sw);
                stages.push((sh, sw));
            }
        }
    }
    stages
}

#[cfg(test)]
pub(crate) mod test_util;
