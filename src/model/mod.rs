//! The eval-mode YOLACT / YOLACT++ network (docs/model.md §2, §5): backbone -> FPN -> protonet +
//! shared prediction head, and the YOLACT++ mask-IoU net. Batch norms are folded into convs at
//! load time.
//!
//! Weights are requested from a `VarBuilder` under exactly the reference's state-dict names;
//! `num_batches_tracked` and `semantic_seg_conv.*` are never requested.

pub mod darknet;
pub mod fpn;
pub mod head;
pub mod layers;
pub mod maskiou;
pub mod protonet;
pub mod resnet;

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

use crate::config::{BackboneKind, YolactConfig};
use darknet::DarkNet;
use fpn::Fpn;
use head::PredictionHead;
use layers::conv_out;
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

#[derive(Debug, Clone)]
enum Backbone {
    ResNet(ResNet),
    DarkNet(DarkNet),
}

#[derive(Debug, Clone)]
pub struct Yolact {
    cfg: YolactConfig,
    backbone: Backbone,
    fpn: Fpn,
    proto: ProtoNet,
    head: PredictionHead,
    maskiou: Option<MaskIouNet>,
}

impl Yolact {
    pub fn load(vb: VarBuilder, cfg: &YolactConfig) -> Result<Self> {
        let vbb = vb.pp("backbone");
        let sel = cfg.selected_layers;
        let (backbone, c_in) = match &cfg.backbone {
            BackboneKind::ResNet { blocks, .. } => {
                let ch = resnet::STAGE_CHANNELS;
                let c_in = select_channels(&ch, sel)?;
                (Backbone::ResNet(ResNet::load(vbb, blocks, cfg)?), c_in)
            }
            BackboneKind::DarkNet { blocks } => {
                let ch = darknet::STAGE_CHANNELS;
                let c_in = select_channels(&ch, sel)?;
                (Backbone::DarkNet(DarkNet::load(vbb, blocks)?), c_in)
            }
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
        Ok(Self {
            cfg: cfg.clone(),
            backbone,
            fpn,
            proto,
            head,
            maskiou,
        })
    }

    pub fn config(&self) -> &YolactConfig {
        &self.cfg
    }

    /// (N, 3, S, S) normalised RGB -> the selected backbone maps [C3, C4, C5].
    pub fn backbone(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        let keep = self.cfg.selected_layers;
        match &self.backbone {
            Backbone::ResNet(r) => r.forward(x, &keep),
            Backbone::DarkNet(d) => d.forward(x, &keep),
        }
    }

    /// [C3, C4, C5] -> [P3, P4, P5, P6, P7].
    pub fn fpn(&self, c: &[Tensor]) -> Result<Vec<Tensor>> {
        self.fpn.forward(c)
    }

    /// P3 -> (N, Hp, Wp, mask_dim) prototypes, ReLU applied.
    pub fn protonet(&self, p3: &Tensor) -> Result<Tensor> {
        self.proto.forward(p3)
    }

    /// [P3..P7] -> (loc, conf softmax, mask coefficients tanh).
    pub fn heads(&self, p: &[Tensor]) -> Result<(Tensor, Tensor, Tensor)> {
        self.head.forward(p)
    }

    pub fn forward(&self, x: &Tensor) -> Result<RawOutput> {
        let (_, c, h, w) = x.dims4()?;
        if c != 3 || h == 0 || w == 0 {
            candle_core::bail!("yolact expects an (N, 3, H, W) input, got {:?}", x.dims());
        }
        let c = self.backbone(x)?;
        let p = self.fpn(&c)?;
        let proto = self.protonet(&p[0])?;
        let (loc, conf, mask) = self.heads(&p)?;
        Ok(RawOutput {
            loc,
            conf,
            mask,
            proto,
        })
    }

    /// YOLACT++ only: soft cropped masks (n, 1, Hp, Wp) -> (n, num_fg_classes) predicted IoU.
    pub fn maskiou(&self, masks: &Tensor) -> Result<Tensor> {
        match &self.maskiou {
            Some(net) => net.forward(masks),
            None => candle_core::bail!("config `{}` has no mask-IoU net", self.cfg.name),
        }
    }

    /// P3..P7 (H, W) for this config's `max_size` input.
    pub fn conv_sizes(&self) -> [(usize, usize); 5] {
        conv_sizes(&self.cfg, self.cfg.max_size, self.cfg.max_size)
    }
}

fn select_channels<const K: usize>(ch: &[usize; K], sel: [usize; 3]) -> Result<[usize; 3]> {
    let mut out = [0; 3];
    for (o, &s) in out.iter_mut().zip(&sel) {
        *o = *ch
            .get(s)
            .ok_or_else(|| candle_core::Error::Msg(format!("selected layer {s} out of range")))?;
    }
    Ok(out)
}

/// P3..P7 feature sizes for an (h, w) input, following the strided convs of the backbone and FPN.
pub fn conv_sizes(cfg: &YolactConfig, h: usize, w: usize) -> [(usize, usize); 5] {
    let half = |s: usize| conv_out(s, 3, 2, 1);
    // Backbone stage outputs, down to the deepest selected stage.
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
    let at = |i: usize| stages.get(i).copied().unwrap_or((0, 0));
    let [s3, s4, s5] = cfg.selected_layers;
    let (p3, p4, p5) = (at(s3), at(s4), at(s5));
    let p6 = (half(p5.0), half(p5.1));
    let p7 = (half(p6.0), half(p6.1));
    [p3, p4, p5, p6, p7]
}

#[cfg(test)]
pub(crate) mod test_util;
