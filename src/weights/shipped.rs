//! The model shipped inside the binary: `yolact_plus_mini` trained by this package on generated
//! tabletop scenes (models/yolact_plus_mini/README.md says how, and how well). It is what every
//! command and the node run when no weights are named, so a fresh clone segments real objects
//! with no download.

use std::path::Path;

use crate::config::YolactConfig;
use crate::error::Result;
use crate::weights::{load_for_inference_bytes, StateDict};

/// The name that selects it (`--weights yolact_plus_mini`, the node's default `weights`).
pub const SHIPPED_NAME: &str = "yolact_plus_mini";

/// Where it lives in the repository (and what errors call it).
pub const SHIPPED_PATH: &str = "models/yolact_plus_mini/yolact_plus_mini.safetensors";

static SHIPPED: &[u8] =
    include_bytes!("../../models/yolact_plus_mini/yolact_plus_mini.safetensors");

/// The shipped checkpoint's weights and config (class names included). `config` may name
/// another config, as for any checkpoint ([`crate::weights::load_for_inference`]).
pub fn load(config: Option<&str>) -> Result<(StateDict, YolactConfig)> {
    load_for_inference_bytes(SHIPPED, Path::new(SHIPPED_PATH), config)
}

/// The checkpoint's bytes (for `yolact convert`-like uses and tests).
pub fn bytes() -> &'static [u8] {
    SHIPPED
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_model_is_a_trained_mini_with_its_own_classes() {
        let (sd, cfg) = load(None).unwrap();
        assert_eq!(cfg.name, SHIPPED_NAME);
        let names = cfg.class_names.clone().expect("class names travel inside");
        assert_eq!(names.len() + 1, cfg.num_classes);
        assert!(names.iter().any(|n| n == "cup"), "{names:?}");
        assert!(sd.contains_key("backbone.conv1.weight"));
        assert!(bytes().len() <= 20 * 1024 * 1024, "the issue's 20 MB bound");
    }
}
