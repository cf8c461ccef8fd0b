//! Signs that a run has gone wrong in a way its loss curve hides.
//!
//! The mask-IoU net ends in a 1x1 conv and a ReLU over a 1x1 map, so an output whose
//! pre-activation is negative for every mask predicts IoU 0 for its class and never receives a
//! gradient: every detection of that class is rescored to 0 and vanishes, while the class score
//! is fine. The reference initialises the biases to zero, and SGD with weight decay leaves a bias
//! that never had a gradient at exactly zero, so an output still at bias 0.0 after training has
//! started is dead (the shipped model's donut output was; models/yolact_plus_mini/README.md).

use crate::config::YolactConfig;
use crate::error::Result;
use crate::weights::WeightStore;

/// The key of the mask-IoU net's last bias (one value per foreground class).
const MASKIOU_LAST_BIAS: &str = "maskiou_net.maskiou_net.10.bias";

/// The names of the classes whose mask-IoU output never received a gradient (bias exactly 0);
/// empty for a model without the mask-IoU net.
pub fn dead_maskiou_classes(store: &WeightStore, cfg: &YolactConfig) -> Result<Vec<String>> {
    let Some((_, bias)) = store
        .vars()?
        .into_iter()
        .find(|(k, _)| k == MASKIOU_LAST_BIAS)
    else {
        return Ok(Vec::new());
    };
    let values = bias.as_tensor().flatten_all()?.to_vec1::<f32>()?;
    Ok(values
        .iter()
        .enumerate()
        .filter(|(_, &b)| b == 0.0)
        .map(|(i, _)| cfg.class_name(i))
        .collect())
}

/// A warning for [`dead_maskiou_classes`], or `None` when there are none.
pub fn dead_maskiou_warning(dead: &[String], iteration: u64) -> Option<String> {
    (!dead.is_empty()).then(|| {
        format!(
            "iteration {iteration}: the mask-IoU output of {} never received a gradient (a dead \
             ReLU): its detections are all rescored to 0. Revive it from a live class with \
             models/yolact_plus_mini/revive_maskiou.py and fine-tune, or retrain with another --seed",
            dead.join(", ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::weights::StateDict;
    use candle_core::{Device, Tensor};

    #[test]
    fn a_bias_still_at_zero_names_its_class() {
        let cfg = YolactConfig::by_name("yolact_plus_mini")
            .unwrap()
            .with_classes(
                "five",
                ["book", "cup", "sports ball", "carrot", "donut"]
                    .map(String::from)
                    .to_vec(),
            );
        let mut sd = StateDict::new();
        let bias = Tensor::new(&[0.55f32, 0.49, 0.48, 0.0, 0.56], &Device::Cpu).unwrap();
        sd.insert(MASKIOU_LAST_BIAS.into(), bias);
        let store = WeightStore::from_partial(sd, &Device::Cpu).unwrap();
        let dead = dead_maskiou_classes(&store, &cfg).unwrap();
        assert_eq!(dead, ["carrot"]);
        let w = dead_maskiou_warning(&dead, 3000).unwrap();
        assert!(
            w.contains("carrot") && w.contains("revive_maskiou.py"),
            "{w}"
        );
        assert!(dead_maskiou_warning(&[], 3000).is_none());

        let live = WeightStore::from_partial(StateDict::new(), &Device::Cpu).unwrap();
        assert!(dead_maskiou_classes(&live, &cfg).unwrap().is_empty());
    }
}
