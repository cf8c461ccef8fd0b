//! Training checkpoints: one safetensors file that inference loads like any other checkpoint and
//! training resumes from.
//!
//! * Tensors: the model's state dict under the reference's key names, batch norms unfolded, in
//!   the dtype the initial file had ([`WeightStore::to_state_dict`]); the SGD momentum buffers
//!   under `train_state.momentum.<key>` (inference drops `train_state.*`,
//!   [`crate::weights::TRAIN_STATE_PREFIX`]).
//! * Metadata: the config as JSON under [`crate::weights::META_CONFIG`], class count and names
//!   included, so `infer`, `replay`, `eval`, `bench` and the node need no `--config`; the loop's
//!   position ([`TrainState`]: iteration, epoch, batch within the epoch, batch size, seed) as JSON
//!   under [`META_TRAIN_STATE`].
//!
//! The file is written beside its destination and renamed over it, so an interrupted save leaves
//! the previous checkpoint whole.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use super::sgd::Sgd;
use crate::config::YolactConfig;
use crate::error::{Error, Result};
use crate::weights::{
    embedded_config, load_checkpoint_with_metadata, save_safetensors_with_metadata, Metadata,
    StateDict, WeightStore, TRAIN_STATE_PREFIX,
};

/// The metadata key of the [`TrainState`] JSON.
pub const META_TRAIN_STATE: &str = "yolact_train_state";

fn momentum_prefix() -> String {
    format!("{TRAIN_STATE_PREFIX}momentum.")
}

/// Where the training loop stands, enough to continue it exactly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrainState {
    /// The next iteration to run (0-based, counted across epochs).
    pub iteration: u64,
    /// The epoch `iteration` belongs to.
    pub epoch: u64,
    /// Batches of `epoch` already trained on (the data order is a function of the seed and the
    /// epoch, so this is the data position).
    pub batch_in_epoch: u64,
    pub batch_size: usize,
    /// The run's seed: initialisation, data order and augmentation derive from it.
    pub seed: u64,
}

/// A checkpoint read back.
#[derive(Debug, Clone)]
pub struct TrainCheckpoint {
    pub config: YolactConfig,
    /// None for a file saved without the loop's position (a model-only export).
    pub state: Option<TrainState>,
    /// The model's tensors under their state-dict keys, as saved.
    pub weights: StateDict,
    /// SGD momentum buffers by parameter key (empty when saved without them).
    pub momentum: BTreeMap<String, Tensor>,
}

/// Saves the store's model tensors, `sgd`'s momentum buffers when given, the config and `state`.
pub fn save(
    path: &Path,
    config: &YolactConfig,
    store: &WeightStore,
    sgd: Option<&Sgd>,
    state: Option<&TrainState>,
) -> Result<()> {
    let mut tensors = store.to_state_dict()?;
    if let Some(sgd) = sgd {
        let prefix = momentum_prefix();
        for (k, t) in sgd.state() {
            let t = t.detach().to_device(&Device::Cpu)?.to_dtype(DType::F32)?;
            tensors.insert(format!("{prefix}{k}"), t);
        }
    }
    let mut meta = Metadata::new();
    meta.insert(crate::weights::META_CONFIG.into(), config.to_json()?);
    if let Some(state) = state {
        let json = serde_json::to_string(state)
            .map_err(|e| Error::Invalid(format!("train state to JSON: {e}")))?;
        meta.insert(META_TRAIN_STATE.into(), json);
    }
    save_safetensors_with_metadata(&tensors, &meta, path)
}

/// Reads a checkpoint [`save`] wrote. A file without the config in its metadata (a released
/// checkpoint) is not a training checkpoint: initialise from it instead (`train::init`).
pub fn load(path: &Path) -> Result<TrainCheckpoint> {
    let (sd, meta) = load_checkpoint_with_metadata(path)?;
    let config = embedded_config(&meta, path)?.ok_or_else(|| {
        Error::checkpoint(
            path,
            format!(
                "no `{}` metadata: not a training checkpoint (use it as initial weights)",
                crate::weights::META_CONFIG
            ),
        )
    })?;
    let state = meta
        .get(META_TRAIN_STATE)
        .map(|json| {
            serde_json::from_str::<TrainState>(json)
                .map_err(|e| Error::checkpoint(path, format!("metadata `{META_TRAIN_STATE}`: {e}")))
        })
        .transpose()?;
    let prefix = momentum_prefix();
    let mut weights = StateDict::new();
    let mut momentum = BTreeMap::new();
    for (k, t) in sd {
        if let Some(p) = k.strip_prefix(&prefix) {
            momentum.insert(p.to_owned(), t);
        } else if k.starts_with(TRAIN_STATE_PREFIX) {
            return Err(Error::checkpoint(
                path,
                format!("unknown training-state tensor `{k}`"),
            ));
        } else {
            weights.insert(k, t);
        }
    }
    Ok(TrainCheckpoint {
        config,
        state,
        weights,
        momentum,
    })
}
