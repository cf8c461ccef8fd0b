//! The six released YOLACT / YOLACT++ configurations (docs/model.md §1) and how to pick one; any
//! other config (a trained model's own class count and names, backbone depth, input size, prior
//! scales) round-trips through serde, so a checkpoint carries it (`train::optim::checkpoint`).
//! The training hyper-parameters of the reference (the solver) are part of the config too.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Input normalisation (docs/model.md §7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Transform {
    /// (x - mean) / std with the BGR means/stds, then BGR -> RGB.
    ResNet,
    /// x / 255, then BGR -> RGB.
    DarkNet,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BackboneKind {
    /// Bottleneck ResNet with `blocks` per stage. `dcn_interval` is `Some(k)` for YOLACT++:
    /// stages 1..=3 get deformable 3x3 convs per the rule of docs/model.md §2.3.
    ResNet {
        blocks: [usize; 4],
        dcn_interval: Option<usize>,
        /// The stem's output channels and stage 0's bottleneck width; stage `s` has
        /// `width << s` planes and `4 * width << s` outputs (torchvision's 64; smaller for
        /// models trained here, e.g. `yolact_plus_mini`).
        #[serde(default = "resnet_width")]
        width: usize,
    },
    /// DarkNet-53 with `blocks` per stage.
    DarkNet { blocks: [usize; 5] },
}

/// torchvision's ResNet width, that of every released config.
pub const RESNET_WIDTH: usize = 64;

fn resnet_width() -> usize {
    RESNET_WIDTH
}

impl BackboneKind {
    /// A torchvision-width ResNet.
    pub fn resnet(blocks: [usize; 4], dcn_interval: Option<usize>) -> Self {
        BackboneKind::ResNet {
            blocks,
            dcn_interval,
            width: RESNET_WIDTH,
        }
    }

    /// Output channels of each backbone stage (the FPN reads the selected ones).
    pub fn stage_channels(&self) -> Vec<usize> {
        match self {
            BackboneKind::ResNet { width, .. } => (0..4).map(|s| 4 * (width << s)).collect(),
            // DarkNet-53's stage s doubles 32 << s channels: 64, 128, ..., 1024.
            BackboneKind::DarkNet { .. } => (0..5).map(|s| 64 << s).collect(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct YolactConfig {
    /// A released config's reference name, or a trained model's own.
    pub name: String,
    pub backbone: BackboneKind,
    /// Backbone stage outputs fed to the FPN (C3, C4, C5).
    pub selected_layers: [usize; 3],
    pub transform: Transform,
    pub max_size: usize,
    /// Anchor scales in pixels, per prediction level P3..P7.
    pub pred_scales: [Vec<f64>; 5],
    pub aspect_ratios: [f64; 3],
    /// The v1 "square anchor" quirk: h = w (docs/model.md §4).
    pub use_square_anchors: bool,
    /// YOLACT++: mask-IoU rescoring.
    pub use_maskiou: bool,
    pub num_classes: usize,
    pub mask_dim: usize,
    pub fpn_channels: usize,
    pub nms_top_k: usize,
    pub nms_conf_thresh: f32,
    pub nms_thresh: f32,
    pub max_num_detections: usize,
    /// The foreground class names, `num_classes - 1` of them; None = COCO's 80
    /// ([`crate::output::labels::CLASS_NAMES`]).
    #[serde(default)]
    pub class_names: Option<Vec<String>>,
    /// Optimiser and learning-rate schedule (the reference's train.py).
    #[serde(default)]
    pub solver: Solver,
}

/// The reference's SGD and learning-rate schedule settings (`coco_base_config` and train.py), the same for
/// all six released configs. Iteration counts are for batch 8; `train::optim::schedule` scales
/// them for other batch sizes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Solver {
    /// Base learning rate at batch 8.
    pub lr: f64,
    pub momentum: f64,
    /// Weight decay (L2, added to the gradient).
    pub decay: f64,
    /// Factor applied at each of `lr_steps`.
    pub gamma: f64,
    pub lr_steps: Vec<u64>,
    pub max_iter: u64,
    /// The learning rate at iteration 0, rising linearly to `lr` at `lr_warmup_until`.
    pub lr_warmup_init: f64,
    /// 0 = no warm-up.
    pub lr_warmup_until: u64,
}

impl Default for Solver {
    fn default() -> Self {
        Solver {
            lr: 1e-3,
            momentum: 0.9,
            decay: 5e-4,
            gamma: 0.1,
            lr_steps: vec![280_000, 600_000, 700_000, 750_000],
            max_iter: 800_000,
            lr_warmup_init: 1e-4,
            lr_warmup_until: 500,
        }
    }
}

/// The six configs the reference released weights for (dbolya/yolact).
pub const CONFIG_NAMES: [&str; 6] = [
    "yolact_base",
    "yolact_resnet50",
    "yolact_darknet53",
    "yolact_im700",
    "yolact_plus_base",
    "yolact_plus_resnet50",
];

/// The built-in configs the reference did not release, trained by this package (the shipped
/// model's: models/yolact_plus_mini/README.md).
pub const TRAINED_NAMES: [&str; 1] = ["yolact_plus_mini"];

/// Every built-in config name: the six released ones, then [`TRAINED_NAMES`].
pub fn builtin_names() -> impl Iterator<Item = &'static str> {
    CONFIG_NAMES.iter().chain(&TRAINED_NAMES).copied()
}

const V1_SCALES: [f64; 5] = [24.0, 48.0, 96.0, 192.0, 384.0];

fn v1_scales(max_size: usize) -> [Vec<f64>; 5] {
    // im700 uses int(s / 550 * 700).
    V1_SCALES.map(|s| vec![(s / 550.0 * max_size as f64).trunc()])
}

fn plus_scales() -> [Vec<f64>; 5] {
    V1_SCALES.map(|s| (0..3).map(|j| s * 2f64.powf(j as f64 / 3.0)).collect())
}

/// YOLACT++'s three scales per level, shrunk with the input as im700 grows them.
fn plus_scales_at(max_size: usize) -> [Vec<f64>; 5] {
    plus_scales().map(|level| level.iter().map(|s| s / 550.0 * max_size as f64).collect())
}

impl Solver {
    /// `yolact_plus_mini`'s schedule, trained from scratch on generated scenes on two CPU cores
    /// (models/yolact_plus_mini): four times the reference's rate (no pretrained backbone to
    /// protect, batch statistics in every norm), a shorter warm-up, and steps at 70% and 90% of
    /// the run.
    fn mini() -> Self {
        Solver {
            lr: 4e-3,
            lr_steps: vec![2_100, 2_700],
            max_iter: 3_000,
            lr_warmup_until: 300,
            ..Solver::default()
        }
    }
}

/// `yolact_plus_mini`'s input size.
const MINI_SIZE: usize = 320;

impl YolactConfig {
    fn base(name: &str, backbone: BackboneKind) -> Self {
        YolactConfig {
            name: name.to_owned(),
            backbone,
            selected_layers: [1, 2, 3],
            transform: Transform::ResNet,
            max_size: 550,
            pred_scales: v1_scales(550),
            aspect_ratios: [1.0, 0.5, 2.0],
            use_square_anchors: true,
            use_maskiou: false,
            num_classes: 81,
            mask_dim: 32,
            fpn_channels: 256,
            nms_top_k: 200,
            nms_conf_thresh: 0.05,
            nms_thresh: 0.5,
            max_num_detections: 100,
            class_names: None,
            solver: Solver::default(),
        }
    }

    /// Looks a config up by its reference name (with or without the `_config` suffix).
    ///
    /// ```
    /// use yolact_ros2::YolactConfig;
    /// let cfg = YolactConfig::by_name("yolact_plus_resnet50_config")?;
    /// assert_eq!((cfg.max_size, cfg.priors_per_cell(), cfg.use_maskiou), (550, 9, true));
    /// assert!(YolactConfig::by_name("yolact_tiny").is_err());
    /// # Ok::<(), yolact_ros2::Error>(())
    /// ```
    pub fn by_name(name: &str) -> Result<Self> {
        let name = name.strip_suffix("_config").unwrap_or(name);
        let r101 = [3, 4, 23, 3];
        let r50 = [3, 4, 6, 3];
        let cfg = match name {
            "yolact_base" => Self::base("yolact_base", BackboneKind::resnet(r101, None)),
            "yolact_resnet50" => Self::base("yolact_resnet50", BackboneKind::resnet(r50, None)),
            "yolact_darknet53" => Self {
                selected_layers: [2, 3, 4],
                transform: Transform::DarkNet,
                ..Self::base(
                    "yolact_darknet53",
                    BackboneKind::DarkNet {
                        blocks: [1, 2, 8, 8, 4],
                    },
                )
            },
            "yolact_im700" => Self {
                max_size: 700,
                pred_scales: v1_scales(700),
                ..Self::base("yolact_im700", BackboneKind::resnet(r101, None))
            },
            "yolact_plus_base" => Self {
                pred_scales: plus_scales(),
                use_square_anchors: false,
                use_maskiou: true,
                ..Self::base("yolact_plus_base", BackboneKind::resnet(r101, Some(3)))
            },
            "yolact_plus_resnet50" => Self {
                pred_scales: plus_scales(),
                use_square_anchors: false,
                use_maskiou: true,
                ..Self::base("yolact_plus_resnet50", BackboneKind::resnet(r50, Some(1)))
            },
            // YOLACT++ (DCNv2 in stages 1-3, three scales per level, mask-IoU rescoring) on a
            // quarter-width ResNet with one block per stage, at 320: sized for a frame within
            // 60 ms on two CPU cores (BENCHMARKS.md). Trained here, not released by the reference.
            "yolact_plus_mini" => Self {
                max_size: MINI_SIZE,
                pred_scales: plus_scales_at(MINI_SIZE),
                use_square_anchors: false,
                use_maskiou: true,
                fpn_channels: 64,
                mask_dim: 32,
                solver: Solver::mini(),
                ..Self::base(
                    "yolact_plus_mini",
                    BackboneKind::ResNet {
                        blocks: [1, 1, 1, 1],
                        dcn_interval: Some(1),
                        width: 16,
                    },
                )
            },
            other => {
                return Err(Error::Config(format!(
                    "unknown config `{other}`; expected one of: {} (or a config JSON file)",
                    builtin_names().collect::<Vec<_>>().join(", ")
                )))
            }
        };
        Ok(cfg)
    }

    /// A built-in config by name ([`builtin_names`]), or a config JSON file as
    /// [`YolactConfig::to_json`] writes it (any backbone depth and width, input size or prior
    /// scales: `yolact config NAME` prints one to start from).
    pub fn resolve(arg: &str) -> Result<Self> {
        let path = std::path::Path::new(arg);
        if !arg.ends_with(".json") && !path.is_file() {
            return Self::by_name(arg);
        }
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_json(&text)
            .map_err(|e| Error::Config(format!("config file {}: {e}", path.display())))
    }

    /// Anchors per feature-map cell: scales x aspect ratios (3 for YOLACT, 9 for YOLACT++).
    pub fn priors_per_cell(&self) -> usize {
        self.pred_scales[0].len() * self.aspect_ratios.len()
    }

    /// Foreground classes (80 for COCO).
    pub fn num_fg_classes(&self) -> usize {
        self.num_classes.saturating_sub(1)
    }

    /// The name of 0-based foreground class `class_id`: this config's own names when it has them,
    /// COCO's otherwise (`class_<id>` beyond either list).
    pub fn class_name(&self, class_id: usize) -> String {
        match &self.class_names {
            Some(names) => names
                .get(class_id)
                .cloned()
                .unwrap_or_else(|| format!("class_{class_id}")),
            None => crate::output::labels::class_name(class_id),
        }
    }

    /// This config for a dataset with its own foreground classes: the class count follows the
    /// names (background + names), and the config takes `name`.
    pub fn with_classes(mut self, name: &str, class_names: Vec<String>) -> Self {
        self.name = name.to_owned();
        self.num_classes = class_names.len() + 1;
        self.class_names = Some(class_names);
        self
    }

    /// Checks what the model and the loss assume of a config that did not come from
    /// [`YolactConfig::by_name`] (one read from a checkpoint's metadata, say).
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::Config(format!("config `{}`: {msg}", self.name)));
        if self.num_classes < 2 {
            return bad(format!(
                "num_classes {} (background plus at least one class)",
                self.num_classes
            ));
        }
        if let Some(names) = &self.class_names {
            if names.len() + 1 != self.num_classes {
                return bad(format!(
                    "{} class names for num_classes {} (expected num_classes - 1)",
                    names.len(),
                    self.num_classes
                ));
            }
        }
        // The FPN's input widths (weights/expected.rs, model/mod.rs) follow these stages.
        let (blocks, sel): (&[usize], [usize; 3]) = match &self.backbone {
            BackboneKind::ResNet { blocks, .. } => (blocks, [1, 2, 3]),
            BackboneKind::DarkNet { blocks } => (blocks, [2, 3, 4]),
        };
        if blocks.contains(&0) {
            return bad(format!(
                "every backbone stage needs a block, got {blocks:?}"
            ));
        }
        if self.selected_layers != sel {
            return bad(format!(
                "selected_layers {:?}: this backbone feeds the FPN from stages {sel:?}",
                self.selected_layers
            ));
        }
        let per_level = self.pred_scales[0].len();
        if per_level == 0 || self.pred_scales.iter().any(|s| s.len() != per_level) {
            return bad("every prediction level needs the same, non-zero number of scales".into());
        }
        if self.max_size < 32 || self.mask_dim == 0 || self.fpn_channels == 0 {
            return bad(format!(
                "max_size {} (at least 32), mask_dim {} and fpn_channels {} (non-zero)",
                self.max_size, self.mask_dim, self.fpn_channels
            ));
        }
        Ok(())
    }

    /// The config as JSON (what a checkpoint's metadata holds).
    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string(self).map_err(|e| Error::Config(format!("config to JSON: {e}")))
    }

    /// A config from [`YolactConfig::to_json`]'s JSON, checked with [`YolactConfig::validate`].
    pub fn from_json(json: &str) -> Result<Self> {
        let cfg: Self =
            serde_json::from_str(json).map_err(|e| Error::Config(format!("config JSON: {e}")))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Whether ResNet stage `stage` block `block` is a deformable conv (docs/model.md §2.3).
    pub fn is_dcn_block(&self, stage: usize, block: usize) -> bool {
        let BackboneKind::ResNet {
            blocks,
            dcn_interval: Some(interval),
            ..
        } = &self.backbone
        else {
            return false;
        };
        if stage == 0 {
            return false;
        }
        let n = blocks[stage];
        let d = n; // dcn_layers equals the stage's block count for stages 1..=3
        if block == 0 {
            d >= n
        } else {
            block + d >= n && block % interval == 0
        }
    }

    /// Picks the config from a checkpoint file name as eval.py does: `<name>_<epoch>_<iter>.pth`.
    pub fn name_from_filename(path: &std::path::Path) -> Option<&'static str> {
        let stem = path.file_stem()?.to_str()?;
        // Longest match first so `yolact_plus_resnet50` is not taken for `yolact_plus_base`'s prefix.
        let mut names = CONFIG_NAMES;
        names.sort_by_key(|n| std::cmp::Reverse(n.len()));
        names.into_iter().find(|n| {
            stem == *n
                || stem.strip_prefix(n).is_some_and(|rest| {
                    rest.starts_with('_') || rest.starts_with('.') || rest.starts_with('-')
                })
        })
    }
}

/// The training loss's settings (the reference's `MultiBoxLoss` and config fields): the reference
/// configs' values, which all six share except where [`LossConfig::for_config`] says.
#[derive(Debug, Clone, PartialEq)]
pub struct LossConfig {
    /// IoU at or above which a prior is positive.
    pub pos_threshold: f32,
    /// IoU below which a prior is background (between the two: neutral).
    pub neg_threshold: f32,
    /// Intersection over prior area above which a crowd region makes a non-positive prior neutral.
    pub crowd_iou_threshold: f32,
    /// Hard negatives per positive (OHEM).
    pub negpos_ratio: usize,
    pub bbox_alpha: f32,
    pub conf_alpha: f32,
    /// 6.125: the configs override coco_base's 0.4 / 256 * 140^2.
    pub mask_alpha: f32,
    pub semantic_alpha: f32,
    /// The mask-IoU term's weight; `None` when the config has no mask-IoU net (no I term).
    pub maskiou_alpha: Option<f32>,
    /// Positives per image whose masks are trained; more are subsampled.
    pub masks_to_train: usize,
    /// GT masks with at most this many proto pixels are left out of the mask-IoU term; `None` keeps
    /// every mask (the reference's -1).
    pub discard_mask_area: Option<f32>,
}

impl LossConfig {
    /// The reference's values for `cfg`: YOLACT++ adds the mask-IoU term (alpha 25, masks of more
    /// than 25 proto pixels); im700 trains 300 masks per image.
    pub fn for_config(cfg: &YolactConfig) -> Self {
        LossConfig {
            pos_threshold: 0.5,
            neg_threshold: 0.4,
            crowd_iou_threshold: 0.7,
            negpos_ratio: 3,
            bbox_alpha: 1.5,
            conf_alpha: 1.0,
            mask_alpha: 6.125,
            semantic_alpha: 1.0,
            maskiou_alpha: cfg.use_maskiou.then_some(25.0),
            masks_to_train: if cfg.name == "yolact_im700" { 300 } else { 100 },
            discard_mask_area: cfg.use_maskiou.then_some(25.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_resolves() {
        for n in builtin_names() {
            assert_eq!(YolactConfig::by_name(n).unwrap().name, n);
            assert_eq!(
                YolactConfig::by_name(&format!("{n}_config")).unwrap().name,
                n
            );
        }
        let err = YolactConfig::by_name("yolact_huge")
            .unwrap_err()
            .to_string();
        assert!(err.contains("yolact_plus_resnet50"), "{err}");
    }

    #[test]
    fn dcn_blocks_follow_the_interval_rule() {
        let count = |name: &str| {
            let c = YolactConfig::by_name(name).unwrap();
            let BackboneKind::ResNet { blocks, .. } = c.backbone else {
                unreachable!()
            };
            (0..4)
                .map(|s| (0..blocks[s]).filter(|&b| c.is_dcn_block(s, b)).count())
                .sum::<usize>()
        };
        assert_eq!(count("yolact_plus_resnet50"), 13);
        assert_eq!(count("yolact_plus_base"), 11);
        assert_eq!(count("yolact_base"), 0);
        let c = YolactConfig::by_name("yolact_plus_base").unwrap();
        let r101: Vec<usize> = (0..23).filter(|&b| c.is_dcn_block(2, b)).collect();
        assert_eq!(r101, vec![0, 3, 6, 9, 12, 15, 18, 21]);
    }

    #[test]
    fn names_from_released_file_names() {
        use std::path::Path;
        let f = |s: &str| YolactConfig::name_from_filename(Path::new(s));
        assert_eq!(
            f("weights/yolact_plus_resnet50_54_800000.pth"),
            Some("yolact_plus_resnet50")
        );
        assert_eq!(
            f("yolact_plus_base_35_460000.pth"),
            Some("yolact_plus_base")
        );
        assert_eq!(f("yolact_base_54_800000.pth"), Some("yolact_base"));
        assert_eq!(f("yolact_im700_54_800000.pth"), Some("yolact_im700"));
        assert_eq!(
            f("yolact_darknet53_54_800000.pth"),
            Some("yolact_darknet53")
        );
        assert_eq!(f("my_model.pth"), None);
    }

    #[test]
    fn loss_settings_follow_the_reference_configs() {
        let l = |n: &str| LossConfig::for_config(&YolactConfig::by_name(n).unwrap());
        let base = l("yolact_base");
        assert_eq!((base.masks_to_train, base.maskiou_alpha), (100, None));
        assert_eq!(base.discard_mask_area, None);
        assert_eq!(l("yolact_im700").masks_to_train, 300);
        let plus = l("yolact_plus_resnet50");
        assert_eq!(plus.maskiou_alpha, Some(25.0));
        assert_eq!(plus.discard_mask_area, Some(25.0));
        assert_eq!((plus.mask_alpha, plus.bbox_alpha), (6.125, 1.5));
    }

    #[test]
    fn scales() {
        let im700 = YolactConfig::by_name("yolact_im700").unwrap();
        assert_eq!(
            im700.pred_scales.iter().map(|s| s[0]).collect::<Vec<_>>(),
            vec![30.0, 61.0, 122.0, 244.0, 488.0]
        );
        let plus = YolactConfig::by_name("yolact_plus_base").unwrap();
        assert!((plus.pred_scales[0][1] - 30.238105197476955).abs() < 1e-12);
        assert!((plus.pred_scales[4][2] - 609.5620).abs() < 1e-3);
        assert_eq!(plus.priors_per_cell(), 9);
    }

    #[test]
    fn a_custom_config_round_trips_through_json_and_is_checked() {
        let mut c = YolactConfig::by_name("yolact_resnet50")
            .unwrap()
            .with_classes("cups", vec!["cup".into(), "mug".into()]);
        c.max_size = 128;
        c.backbone = BackboneKind::ResNet {
            blocks: [1, 1, 2, 1],
            dcn_interval: None,
            width: 16,
        };
        c.pred_scales[0] = vec![7.5];
        let back = YolactConfig::from_json(&c.to_json().unwrap()).unwrap();
        assert_eq!(back, c);
        assert_eq!(
            (back.num_classes, back.class_name(1)),
            (3, "mug".to_string())
        );
        assert_eq!(back.class_name(2), "class_2");
        assert_eq!(
            YolactConfig::by_name("yolact_base").unwrap().class_name(0),
            "person"
        );

        let mut bad = c.clone();
        bad.num_classes = 5;
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("2 class names"));
        let mut bad = c.clone();
        bad.selected_layers = [0, 1, 2];
        assert!(bad.validate().is_err());
        let mut bad = c;
        bad.pred_scales[1] = vec![];
        assert!(YolactConfig::from_json(&bad.to_json().unwrap()).is_err());
        for n in CONFIG_NAMES {
            YolactConfig::by_name(n).unwrap().validate().unwrap();
        }
    }
}
