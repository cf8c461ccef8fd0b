//! Where a model's weights come from, parsed once for every command and the node: a checkpoint
//! file, a released checkpoint by its config name (`yolact_plus_resnet50`, fetched once into the
//! Hugging Face cache, [`crate::weights::hub`]), or `synthetic[:SEED]` (deterministic random
//! weights, for trying the pipeline without a download). A path that merely starts with
//! "synthetic" (`synthetic_runs/x.pth`) is a file; so is any name that is not a released one.

use std::path::{Path, PathBuf};

use crate::config::YolactConfig;
use crate::error::{Error, Result};
use crate::weights::hub::{self, Released};
use crate::weights::{load_for_inference, shipped, synth, StateDict};

/// The config `synthetic` weights use when none is named.
pub const SYNTHETIC_DEFAULT_CONFIG: &str = "yolact_resnet50";

/// A parsed `--weights` value / `weights` parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WeightsSource {
    /// The model inside the binary ([`crate::weights::shipped`]), the default.
    Shipped,
    Synthetic {
        seed: u64,
    },
    Released(&'static Released),
    File(PathBuf),
}

impl WeightsSource {
    pub fn parse(s: &str) -> Result<Self> {
        if s.trim().is_empty() {
            return Err(Error::Parameter(
                "no weights given: a checkpoint path (.pth or .safetensors), a released config name \
                 (e.g. yolact_plus_resnet50), yolact_plus_mini (the shipped model) or `synthetic[:SEED]`"
                    .into(),
            ));
        }
        if s == shipped::SHIPPED_NAME {
            return Ok(Self::Shipped);
        }
        if s == "synthetic" {
            return Ok(Self::Synthetic {
                seed: synth::DEFAULT_SEED,
            });
        }
        if let Some(seed) = s.strip_prefix("synthetic:") {
            return seed
                .parse::<u64>()
                .map(|seed| Self::Synthetic { seed })
                .map_err(|_| {
                    Error::Parameter(format!(
                        "bad seed `{seed}` in synthetic:SEED (expected an unsigned integer)"
                    ))
                });
        }
        if let Some(r) = hub::released(s) {
            return Ok(Self::Released(r));
        }
        Ok(Self::File(PathBuf::from(s)))
    }
}

impl std::fmt::Display for WeightsSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Shipped => write!(f, "{} (shipped)", shipped::SHIPPED_NAME),
            Self::Synthetic { seed } => write!(f, "synthetic:{seed}"),
            Self::Released(r) => write!(f, "{}", r.config),
            Self::File(p) => write!(f, "{}", p.display()),
        }
    }
}

/// A checkpoint read into host memory, with its config: what an engine is built from (the node
/// keeps it across deactivate so that activate needs no file access).
pub struct HostWeights {
    pub state_dict: StateDict,
    pub config: YolactConfig,
    pub source: WeightsSource,
}

impl HostWeights {
    /// Reads `weights` (see [`WeightsSource::parse`]); the config follows
    /// [`crate::weights::load_for_inference`] (synthetic weights: `config` or
    /// [`SYNTHETIC_DEFAULT_CONFIG`]).
    pub fn load(weights: &str, config: Option<&str>) -> Result<Self> {
        Self::load_with(weights, config, false)
    }

    /// [`HostWeights::load`] for a training step: synthetic weights also get the training-only
    /// `semantic_seg_conv.*` ([`synth::synth_train_state_dict`]); files are read as they are (the
    /// released ones carry that head).
    pub fn load_train(weights: &str, config: Option<&str>) -> Result<Self> {
        Self::load_with(weights, config, true)
    }

    fn load_with(weights: &str, config: Option<&str>, train: bool) -> Result<Self> {
        let source = WeightsSource::parse(weights)?;
        let (state_dict, config) = match &source {
            WeightsSource::Shipped => shipped::load(config)?,
            WeightsSource::Synthetic { seed } => {
                let cfg = YolactConfig::by_name(config.unwrap_or(SYNTHETIC_DEFAULT_CONFIG))?;
                let sd = if train {
                    synth::synth_train_state_dict(&cfg, *seed)?
                } else {
                    synth::synth_state_dict(&cfg, *seed)?
                };
                (sd, cfg)
            }
            WeightsSource::Released(r) => {
                let path = r.fetch(std::io::IsTerminal::is_terminal(&std::io::stderr()))?;
                let (sd, _) = load_file(&path, None)?;
                (sd, YolactConfig::by_name(config.unwrap_or(r.config))?)
            }
            WeightsSource::File(path) => load_file(path, config)?,
        };
        Ok(Self {
            state_dict,
            config,
            source,
        })
    }
}

fn load_file(path: &Path, config: Option<&str>) -> Result<(StateDict, YolactConfig)> {
    if !path.exists() {
        return Err(Error::Parameter(format!(
            "weights file {} does not exist; the released checkpoints are in the Hugging Face repos \
             dbolya/yolact-{{resnet50,darknet53,base,im700,plus-resnet50,plus-base}}",
            path.display()
        )));
    }
    load_for_inference(path, config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_only_when_it_is_exactly_that() {
        assert_eq!(
            WeightsSource::parse("synthetic").unwrap(),
            WeightsSource::Synthetic {
                seed: synth::DEFAULT_SEED
            }
        );
        assert_eq!(
            WeightsSource::parse("synthetic:7").unwrap(),
            WeightsSource::Synthetic { seed: 7 }
        );
        assert_eq!(
            WeightsSource::parse("synthetic_runs/x.pth").unwrap(),
            WeightsSource::File("synthetic_runs/x.pth".into())
        );
        let e = WeightsSource::parse("synthetic:x").unwrap_err().to_string();
        assert!(e.contains("bad seed `x`"), "{e}");
        assert!(WeightsSource::parse(" ").is_err());
        assert_eq!(
            WeightsSource::parse("yolact_plus_resnet50").unwrap(),
            WeightsSource::Released(hub::released("yolact_plus_resnet50").unwrap())
        );
        assert_eq!(
            WeightsSource::parse("yolact_plus_resnet50.pth").unwrap(),
            WeightsSource::File("yolact_plus_resnet50.pth".into())
        );
    }

    #[test]
    fn synthetic_defaults_its_config_and_a_missing_file_says_where_to_get_one() {
        let h = HostWeights::load("synthetic:3", None).unwrap();
        assert_eq!(h.config.name, SYNTHETIC_DEFAULT_CONFIG);
        assert_eq!(h.source.to_string(), "synthetic:3");
        let e = HostWeights::load("synthetic_runs/none.pth", None)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("synthetic_runs/none.pth does not exist"), "{e}");
        assert!(e.contains("dbolya/yolact-"), "{e}");
    }

    #[test]
    fn synthetic_weights_for_training_carry_the_semantic_head_and_inference_ones_do_not() {
        let infer = HostWeights::load("synthetic:3", Some("yolact_resnet50")).unwrap();
        let train = HostWeights::load_train("synthetic:3", Some("yolact_resnet50")).unwrap();
        let seg = |h: &HostWeights| {
            let mut k: Vec<String> = h
                .state_dict
                .keys()
                .filter(|k| k.starts_with("semantic_seg_conv."))
                .cloned()
                .collect();
            k.sort();
            k
        };
        assert!(seg(&infer).is_empty());
        assert_eq!(
            seg(&train),
            ["semantic_seg_conv.bias", "semantic_seg_conv.weight"]
        );
        assert_eq!(train.state_dict.len(), infer.state_dict.len() + 2);
        assert_eq!(
            train.state_dict["semantic_seg_conv.weight"].dims(),
            [80, 256, 1, 1]
        );
    }
}
