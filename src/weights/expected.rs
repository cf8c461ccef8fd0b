//! The inference key set of each configuration, derived from the config (docs/model.md §2), in the
//! order the reference model registers its modules.

use crate::config::{BackboneKind, YolactConfig};

struct Keys(Vec<(String, Vec<usize>)>);

impl Keys {
    fn add(&mut self, name: String, shape: &[usize]) {
        self.0.push((name, shape.to_vec()));
    }
    /// BatchNorm parameters and running statistics (num_batches_tracked is not needed).
    fn bn(&mut self, prefix: &str, c: usize) {
        for s in ["weight", "bias", "running_mean", "running_var"] {
            self.add(format!("{prefix}.{s}"), &[c]);
        }
    }
    fn conv(&mut self, prefix: &str, o: usize, i: usize, k: usize, bias: bool) {
        self.add(format!("{prefix}.weight"), &[o, i, k, k]);
        if bias {
            self.add(format!("{prefix}.bias"), &[o]);
        }
    }
}

fn resnet(k: &mut Keys, cfg: &YolactConfig, blocks: &[usize; 4], width: usize) {
    let mut inp = width;
    for (stage, &n) in blocks.iter().enumerate() {
        let p = width << stage;
        for b in 0..n {
            let pre = format!("backbone.layers.{stage}.{b}");
            let i = if b == 0 { inp } else { 4 * p };
            k.conv(&format!("{pre}.conv1"), p, i, 1, false);
            k.bn(&format!("{pre}.bn1"), p);
            if cfg.is_dcn_block(stage, b) {
                k.conv(&format!("{pre}.conv2"), p, p, 3, true);
                k.conv(&format!("{pre}.conv2.conv_offset_mask"), 27, p, 3, true);
            } else {
                k.conv(&format!("{pre}.conv2"), p, p, 3, false);
            }
            k.bn(&format!("{pre}.bn2"), p);
            k.conv(&format!("{pre}.conv3"), 4 * p, p, 1, false);
            k.bn(&format!("{pre}.bn3"), 4 * p);
            if b == 0 {
                k.conv(&format!("{pre}.downsample.0"), 4 * p, i, 1, false);
                k.bn(&format!("{pre}.downsample.1"), 4 * p);
            }
        }
        inp = 4 * p;
    }
    k.conv("backbone.conv1", width, 3, 7, false);
    k.bn("backbone.bn1", width);
}

fn darknet(k: &mut Keys, blocks: &[usize; 5]) {
    for (stage, &n) in blocks.iter().enumerate() {
        let c = 32 << stage;
        k.conv(&format!("backbone.layers.{stage}.0.0"), 2 * c, c, 3, false);
        k.bn(&format!("backbone.layers.{stage}.0.1"), 2 * c);
        for b in 1..=n {
            let pre = format!("backbone.layers.{stage}.{b}");
            k.conv(&format!("{pre}.conv1.0"), c, 2 * c, 1, false);
            k.bn(&format!("{pre}.conv1.1"), c);
            k.conv(&format!("{pre}.conv2.0"), 2 * c, c, 3, false);
            k.bn(&format!("{pre}.conv2.1"), 2 * c);
        }
    }
    k.conv("backbone._preconv.0", 32, 3, 3, false);
    k.bn("backbone._preconv.1", 32);
}

/// Every key the model needs at inference, with its shape, excluding `*.num_batches_tracked` and
/// `semantic_seg_conv.*`.
pub fn expected_shapes(cfg: &YolactConfig) -> Vec<(String, Vec<usize>)> {
    let mut k = Keys(Vec::new());
    match &cfg.backbone {
        BackboneKind::ResNet { blocks, width, .. } => resnet(&mut k, cfg, blocks, *width),
        BackboneKind::DarkNet { blocks } => darknet(&mut k, blocks),
    }
    let stages = cfg.backbone.stage_channels();
    let c_channels = cfg
        .selected_layers
        .map(|s| stages.get(s).copied().unwrap_or(0));
    let f = cfg.fpn_channels;
    for i in [0, 2, 4, 8] {
        k.conv(&format!("proto_net.{i}"), f, f, 3, true);
    }
    k.conv("proto_net.10", cfg.mask_dim, f, 1, true);
    if cfg.use_maskiou {
        let chans = [1, 8, 16, 32, 64, 128];
        for (j, w) in chans.windows(2).enumerate() {
            k.conv(
                &format!("maskiou_net.maskiou_net.{}", 2 * j),
                w[1],
                w[0],
                3,
                true,
            );
        }
        k.conv(
            "maskiou_net.maskiou_net.10",
            cfg.num_fg_classes(),
            128,
            1,
            true,
        );
    }
    // Lateral layers are stored deepest first.
    for (i, &c) in c_channels.iter().rev().enumerate() {
        k.conv(&format!("fpn.lat_layers.{i}"), f, c, 1, true);
    }
    for i in 0..3 {
        k.conv(&format!("fpn.pred_layers.{i}"), f, f, 3, true);
    }
    for i in 0..2 {
        k.conv(&format!("fpn.downsample_layers.{i}"), f, f, 3, true);
    }
    let a = cfg.priors_per_cell();
    k.conv("prediction_layers.0.upfeature.0", f, f, 3, true);
    k.conv("prediction_layers.0.bbox_layer", 4 * a, f, 3, true);
    k.conv(
        "prediction_layers.0.conf_layer",
        cfg.num_classes * a,
        f,
        3,
        true,
    );
    k.conv(
        "prediction_layers.0.mask_layer",
        cfg.mask_dim * a,
        f,
        3,
        true,
    );
    k.0
}

/// Every key the training model uses, with its shape: [`expected_shapes`] plus the training-only
/// `semantic_seg_conv` (a 1x1 conv from P3 to the foreground classes, `Yolact::load_train`).
pub fn training_shapes(cfg: &YolactConfig) -> Vec<(String, Vec<usize>)> {
    let mut v = expected_shapes(cfg);
    let (c, f) = (cfg.num_fg_classes(), cfg.fpn_channels);
    v.push(("semantic_seg_conv.weight".into(), vec![c, f, 1, 1]));
    v.push(("semantic_seg_conv.bias".into(), vec![c]));
    v
}
