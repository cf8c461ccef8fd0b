//! Where a training run's weights start (the reference's `Yolact.init_weights` and `backbone.init_backbone`), and which of them it may change.
//!
//! * [`Init::Checkpoint`] (fine-tuning): a released or trained YOLACT checkpoint, loaded as strictly
//!   as the reference's resume. The tensors whose shape follows the class count
//!   (`prediction_layers.0.conf_layer`, `semantic_seg_conv`, `maskiou_net.maskiou_net.10`) are
//!   re-initialised when the count differs, with PyTorch's `Conv2d` constructor defaults, as they
//!   are after the reference's resume-and-ignore-the-error recipe (no `init_weights` on resume): weight
//!   kaiming_uniform(a = √5), i.e. U(±1/√fan_in), bias U(±1/√fan_in).
//! * [`Init::Backbone`]: an ImageNet backbone file as the reference's `init_weights` uses it
//!   (`backbone.init_backbone`): ResNet keys `layerN.` renamed `layers.(N-1).` (DarkNet keys taken as they are),
//!   loaded non-strictly (keys the backbone lacks, like `fc.*`, ignored; a shape mismatch is an
//!   error, as in PyTorch). Backbone tensors the file lacks keep their constructor values: the
//!   DCN extras (`conv2.bias`, `conv_offset_mask`) zero, other convs U(±1/√fan_in), batch norms
//!   1 / 0 with statistics 0 / 1. Every conv outside the backbone: xavier_uniform, zero bias.
//! * [`Init::Scratch`]: the same with no backbone file.
//!
//! Random draws come from a ChaCha8 stream seeded by the run's seed, in key order (the reference's
//! torch RNG order is not reproduced; parity with it is not a goal here).
//!
//! [`Freeze`] excludes the backbone, or its stem and first N stages, from the optimiser: those
//! tensors are never updated nor decayed (candle still computes their gradients).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor, Var};
use rand::distr::{Distribution, Uniform};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::config::{BackboneKind, YolactConfig};
use crate::error::{Error, Result};
use crate::model::Yolact;
use crate::weights::{
    load_checkpoint, training_shapes, StateDict, WeightStore, TRAIN_STATE_PREFIX,
};

/// The tensors whose shape depends on the class count (the ones a strict resume on other classes reports as mismatched).
const CLASS_DEPENDENT: [&str; 3] = [
    "prediction_layers.0.conf_layer.",
    "semantic_seg_conv.",
    "maskiou_net.maskiou_net.10.",
];

/// Where the weights start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Init {
    /// A YOLACT checkpoint (released or trained): fine-tuning.
    Checkpoint(PathBuf),
    /// An ImageNet backbone file (`resnet50-19c8e357.pth`, `resnet101_reducedfc.pth`,
    /// `darknet53.pth`).
    Backbone(PathBuf),
    Scratch,
}

impl Init {
    /// `scratch`, or a file: a YOLACT checkpoint when it has `backbone.*` or `fpn.*` keys, an
    /// ImageNet backbone otherwise.
    pub fn from_arg(arg: &str) -> Result<Self> {
        if arg == "scratch" {
            return Ok(Init::Scratch);
        }
        let path = PathBuf::from(arg);
        let sd = load_checkpoint(&path)?;
        let yolact = sd
            .keys()
            .any(|k| k.starts_with("backbone.") || k.starts_with("fpn."));
        Ok(if yolact {
            Init::Checkpoint(path)
        } else {
            Init::Backbone(path)
        })
    }
}

/// What initialisation did, for the log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InitReport {
    /// Tensors taken from the file.
    pub loaded: usize,
    /// Class-dependent tensors drawn anew because the file's class count differs.
    pub reinitialised: Vec<String>,
    /// File keys the model has no use for (e.g. an ImageNet file's `fc.*`).
    pub ignored: Vec<String>,
    /// Backbone tensors the file lacked, left at their constructor values.
    pub missing: Vec<String>,
}

/// Builds the weight store and the training model on it, initialised per `init`.
pub fn initialise(
    cfg: &YolactConfig,
    init: &Init,
    seed: u64,
    device: &Device,
) -> Result<(WeightStore, Yolact, InitReport)> {
    cfg.validate()?;
    let expected = training_shapes(cfg);
    let mut report = InitReport::default();
    let (sd, fresh) = match init {
        Init::Checkpoint(path) => checkpoint_tensors(path, cfg, &expected, &mut report)?,
        Init::Backbone(path) => backbone_tensors(path, cfg, &expected, &mut report)?,
        Init::Scratch => (
            StateDict::new(),
            expected.iter().map(|(k, _)| k.clone()).collect(),
        ),
    };
    let store = WeightStore::from_partial(sd, device)?;
    let model = Yolact::load_train(store.vb(), cfg)?;
    let vars = store.vars()?;
    let bn: BTreeSet<String> = vars
        .iter()
        .filter_map(|(k, _)| k.strip_suffix(".running_mean").map(str::to_owned))
        .collect();
    let shapes: BTreeMap<String, Vec<usize>> = vars
        .iter()
        .map(|(k, v)| (k.clone(), v.dims().to_vec()))
        .collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for (key, var) in &vars {
        if !fresh.contains(key) {
            continue;
        }
        let rule = if report.reinitialised.contains(key) {
            torch_default(key, &shapes)?
        } else {
            constructor_rule(key, &bn, &shapes)?
        };
        var.set(&draw(rule, var, &mut rng)?)?;
    }
    Ok((store, model, report))
}

fn class_dependent(key: &str) -> bool {
    CLASS_DEPENDENT.iter().any(|p| key.starts_with(p))
}

/// A YOLACT checkpoint's tensors for `cfg`, strictly: class-dependent tensors of another shape
/// are left out (and listed as re-initialised), any other difference is an error. Returns the
/// tensors and the keys to draw.
fn checkpoint_tensors(
    path: &Path,
    cfg: &YolactConfig,
    expected: &[(String, Vec<usize>)],
    report: &mut InitReport,
) -> Result<(StateDict, BTreeSet<String>)> {
    let mismatch = |msg: String| Error::WeightsMismatch {
        config: cfg.name.clone(),
        msg: format!("{}: {msg}", path.display()),
    };
    let mut sd = load_checkpoint(path)?;
    sd.retain(|k, _| !k.starts_with(TRAIN_STATE_PREFIX));
    let mut out = StateDict::new();
    let mut fresh = BTreeSet::new();
    for (key, shape) in expected {
        match sd.remove(key) {
            Some(t) if t.dims() == shape.as_slice() => {
                out.insert(key.clone(), t);
                report.loaded += 1;
            }
            Some(t) if class_dependent(key) => {
                log::info!(
                    "{key}: {:?} in the file, {shape:?} for {} classes; drawn anew",
                    t.dims(),
                    cfg.num_classes
                );
                report.reinitialised.push(key.clone());
                fresh.insert(key.clone());
            }
            Some(t) => {
                return Err(mismatch(format!(
                    "key `{key}`: expected shape {shape:?}, found {:?}",
                    t.dims()
                )))
            }
            // Released files all have the semantic head; a file without it gets init_weights'.
            None if key.starts_with("semantic_seg_conv.") => {
                fresh.insert(key.clone());
            }
            None => {
                return Err(mismatch(format!(
                    "missing key `{key}` (expected shape {shape:?})"
                )))
            }
        }
    }
    // What is left: keys the reference's loader drops ride along, anything else is an error.
    let (keep, unexpected): (Vec<_>, Vec<_>) = sd
        .into_iter()
        .partition(|(k, _)| k.ends_with(".num_batches_tracked") || legacy(k));
    if let Some((k, t)) = unexpected.first() {
        return Err(mismatch(format!(
            "unexpected key `{k}` with shape {:?} ({} unexpected keys in all)",
            t.dims(),
            unexpected.len()
        )));
    }
    out.extend(keep);
    Ok((out, fresh))
}

/// The keys the reference's `load_weights` deletes (docs/model.md §2.9).
fn legacy(key: &str) -> bool {
    (key.starts_with("backbone.layer") && !key.starts_with("backbone.layers"))
        || key
            .strip_prefix("fpn.downsample_layers.")
            .and_then(|r| r.split('.').next()?.parse::<usize>().ok())
            .is_some_and(|i| i >= 2)
}

/// An ImageNet file's tensors under the model's backbone keys. Returns them and the keys to draw
/// (everything the file did not fill).
fn backbone_tensors(
    path: &Path,
    cfg: &YolactConfig,
    expected: &[(String, Vec<usize>)],
    report: &mut InitReport,
) -> Result<(StateDict, BTreeSet<String>)> {
    let sd = load_checkpoint(path)?;
    let resnet = matches!(cfg.backbone, BackboneKind::ResNet { .. });
    let mut out = StateDict::new();
    for (k, t) in sd {
        let key = format!(
            "backbone.{}",
            if resnet { rename_resnet(&k) } else { k.clone() }
        );
        match expected.iter().find(|(e, _)| *e == key) {
            Some((_, shape)) if t.dims() == shape.as_slice() => {
                out.insert(key, t);
                report.loaded += 1;
            }
            Some((_, shape)) => {
                return Err(Error::WeightsMismatch {
                    config: cfg.name.clone(),
                    msg: format!(
                        "{}: `{k}` (as `{key}`) has shape {:?}, the backbone {shape:?}",
                        path.display(),
                        t.dims()
                    ),
                })
            }
            // PyTorch loads the counters too; inference never reads them.
            None if key.ends_with(".num_batches_tracked") => {
                out.insert(key, t);
            }
            None => report.ignored.push(k),
        }
    }
    let fresh: BTreeSet<String> = expected
        .iter()
        .filter(|(k, _)| !out.contains_key(k))
        .map(|(k, _)| k.clone())
        .collect();
    report.missing = fresh
        .iter()
        .filter(|k| k.starts_with("backbone."))
        .cloned()
        .collect();
    if report.loaded == 0 {
        return Err(Error::checkpoint(
            path,
            "no tensor of this file fits the backbone (is it an ImageNet file for this config?)",
        ));
    }
    Ok((out, fresh))
}

/// torchvision's `layerN.rest` (N one digit, 1-based) -> the reference's `layers.(N-1).rest`.
fn rename_resnet(key: &str) -> String {
    let b = key.as_bytes();
    if key.starts_with("layer") && b.len() > 6 && b[5].is_ascii_digit() && b[6] == b'.' {
        let n = u32::from(b[5] - b'0');
        if n >= 1 {
            return format!("layers.{}.{}", n - 1, &key[7..]);
        }
    }
    key.to_owned()
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Rule {
    Zero,
    One,
    /// U(±bound).
    Uniform(f64),
}

/// PyTorch's `Conv2d` constructor: kaiming_uniform(a = √5) for the weight, which is
/// U(±1/√fan_in), and U(±1/√fan_in) for the bias, fan_in = C_in · k · k of the weight.
fn torch_default(key: &str, shapes: &BTreeMap<String, Vec<usize>>) -> Result<Rule> {
    let (base, leaf) = key.rsplit_once('.').unwrap_or(("", key));
    let weight = if leaf == "weight" {
        key.to_owned()
    } else {
        format!("{base}.weight")
    };
    let dims = shapes.get(&weight).ok_or_else(|| {
        Error::Invalid(format!("`{key}`: no weight `{weight}` to take fan_in from"))
    })?;
    let fan_in: usize = dims.iter().skip(1).product();
    Ok(Rule::Uniform(1.0 / (fan_in.max(1) as f64).sqrt()))
}

/// What the reference's constructors and `init_weights` leave in a tensor no file filled.
fn constructor_rule(
    key: &str,
    bn: &BTreeSet<String>,
    shapes: &BTreeMap<String, Vec<usize>>,
) -> Result<Rule> {
    let (base, leaf) = key.rsplit_once('.').unwrap_or(("", key));
    if bn.contains(base) {
        return Ok(match leaf {
            "weight" | "running_var" => Rule::One,
            _ => Rule::Zero,
        });
    }
    if key.starts_with("backbone.") {
        // The Bottleneck zeroes the DCN offset/modulation conv and the DCN bias; the other
        // backbone convs (no bias) keep PyTorch's default.
        if key.contains(".conv_offset_mask.") || leaf == "bias" {
            return Ok(Rule::Zero);
        }
        return torch_default(key, shapes);
    }
    if leaf == "bias" {
        return Ok(Rule::Zero);
    }
    // xavier_uniform, gain 1: fans are channels times the kernel area.
    let dims = shapes.get(key).map_or(&[][..], Vec::as_slice);
    let rf: usize = dims.iter().skip(2).product();
    let fan_out = dims.first().copied().unwrap_or(1) * rf;
    let fan_in = dims.get(1).copied().unwrap_or(1) * rf;
    Ok(Rule::Uniform(
        (6.0 / (fan_in + fan_out).max(1) as f64).sqrt(),
    ))
}

fn draw(rule: Rule, var: &Var, rng: &mut ChaCha8Rng) -> Result<Tensor> {
    let (dims, device) = (var.dims(), var.device());
    let bound = match rule {
        Rule::Zero => return Ok(Tensor::zeros(dims, var.dtype(), device)?),
        Rule::One => return Ok(Tensor::ones(dims, var.dtype(), device)?),
        Rule::Uniform(b) => b,
    };
    let u = Uniform::new(-bound as f32, bound as f32)
        .map_err(|e| Error::Invalid(format!("initialiser bound {bound}: {e}")))?;
    let v: Vec<f32> = u.sample_iter(rng).take(var.elem_count()).collect();
    Ok(Tensor::from_vec(v, dims, device)?)
}

/// Which backbone tensors training leaves as they are (`--freeze`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Freeze {
    #[default]
    None,
    /// The whole backbone.
    Backbone,
    /// The stem and the first N stages (`backbone.layers.0` .. `backbone.layers.N-1`).
    Stages(usize),
}

impl Freeze {
    /// `backbone`, or a stage count N (0 = nothing frozen).
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "backbone" => Ok(Freeze::Backbone),
            n => match n.parse::<usize>() {
                Ok(0) => Ok(Freeze::None),
                Ok(n) => Ok(Freeze::Stages(n)),
                Err(_) => Err(Error::Config(format!(
                    "--freeze `{s}`: expected `backbone` or a number of stages"
                ))),
            },
        }
    }

    /// Whether `key` is frozen under this setting.
    pub fn freezes(&self, key: &str) -> bool {
        let Some(rest) = key.strip_prefix("backbone.") else {
            return false;
        };
        match *self {
            Freeze::None => false,
            Freeze::Backbone => true,
            Freeze::Stages(n) => match rest.strip_prefix("layers.") {
                Some(r) => r
                    .split('.')
                    .next()
                    .and_then(|i| i.parse::<usize>().ok())
                    .is_some_and(|i| i < n),
                // The stem (`conv1`/`bn1`, DarkNet's `_preconv`) comes before stage 0.
                None => true,
            },
        }
    }
}

/// The tensors SGD updates: the store's trainable variables ([`WeightStore::trainable`], batch
/// norms excluded when frozen) less those `freeze` holds. Errors when `freeze` names more stages
/// than the backbone has.
pub fn trainable_params(
    store: &WeightStore,
    cfg: &YolactConfig,
    frozen_bn: bool,
    freeze: Freeze,
) -> Result<Vec<(String, Var)>> {
    if let Freeze::Stages(n) = freeze {
        let stages = match &cfg.backbone {
            BackboneKind::ResNet { blocks, .. } => blocks.len(),
            BackboneKind::DarkNet { blocks } => blocks.len(),
        };
        if n > stages {
            return Err(Error::Config(format!(
                "--freeze {n}: the backbone of `{}` has {stages} stages",
                cfg.name
            )));
        }
    }
    Ok(store
        .trainable(frozen_bn)?
        .into_iter()
        .filter(|(k, _)| !freeze.freezes(k))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resnet_keys_are_renamed_as_the_reference_does() {
        assert_eq!(
            rename_resnet("layer1.0.conv1.weight"),
            "layers.0.0.conv1.weight"
        );
        assert_eq!(rename_resnet("layer4.2.bn3.bias"), "layers.3.2.bn3.bias");
        assert_eq!(rename_resnet("conv1.weight"), "conv1.weight");
        assert_eq!(rename_resnet("fc.weight"), "fc.weight");
    }

    #[test]
    fn freeze_covers_the_stem_and_the_first_stages_only() {
        let f = Freeze::parse("2").unwrap();
        assert!(f.freezes("backbone.conv1.weight"));
        assert!(f.freezes("backbone.layers.1.0.conv1.weight"));
        assert!(!f.freezes("backbone.layers.2.0.conv1.weight"));
        assert!(!f.freezes("fpn.lat_layers.0.weight"));
        assert!(Freeze::parse("backbone")
            .unwrap()
            .freezes("backbone.layers.3.0.bn1.bias"));
        assert_eq!(Freeze::parse("0").unwrap(), Freeze::None);
        assert!(Freeze::parse("all").is_err());
    }
}
