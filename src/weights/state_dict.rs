//! The state-dict type and its safetensors writer, in a file of their own so the format readers,
//! writers and the weight store import them without importing the loader in `weights/mod.rs`.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::Tensor;

use crate::error::{Error, Result};

/// Tensors by state-dict key, on the CPU, in the dtype the file stores.
pub type StateDict = BTreeMap<String, Tensor>;

/// Writes `tensors` as safetensors under their keys.
pub fn save_safetensors(tensors: &StateDict, out: &Path) -> Result<()> {
    let m: HashMap<&str, Tensor> = tensors
        .iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    candle_core::safetensors::save(&m, out)
        .map_err(|e| Error::checkpoint(out, format!("writing safetensors: {e}")))
}
