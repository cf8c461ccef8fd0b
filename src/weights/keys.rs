//! The load-time key rules of the reference `load_weights` (docs/model.md §2.9, §9.14): which
//! keys are dropped, and the strict check of the rest against a config's expected shapes.

use std::collections::HashMap;

use candle_core::{DType, Tensor};

use super::expected::expected_shapes;
use super::StateDict;
use crate::config::YolactConfig;
use crate::error::{Error, Result};

/// Keys the reference `load_weights` deletes, or that inference never uses.
pub(super) fn is_ignored(key: &str) -> bool {
    if key.ends_with(".num_batches_tracked") || key.starts_with("semantic_seg_conv.") {
        return true;
    }
    if key.starts_with("backbone.layer") && !key.starts_with("backbone.layers") {
        return true;
    }
    if let Some(rest) = key.strip_prefix("fpn.downsample_layers.") {
        let idx = rest.split('.').next().and_then(|s| s.parse::<usize>().ok());
        return idx.is_some_and(|k| k >= 2);
    }
    false
}

/// Applies the load-time rules and checks the key set strictly against `cfg`.
pub fn prepare(sd: StateDict, cfg: &YolactConfig) -> Result<HashMap<String, Tensor>> {
    let mismatch = |msg: String| Error::WeightsMismatch {
        config: cfg.name.to_owned(),
        msg,
    };
    let mut sd: StateDict = sd.into_iter().filter(|(k, _)| !is_ignored(k)).collect();
    let mut out = HashMap::with_capacity(sd.len());
    for (key, shape) in expected_shapes(cfg) {
        let Some(t) = sd.remove(&key) else {
            return Err(mismatch(format!(
                "missing key `{key}` (expected shape {shape:?})"
            )));
        };
        if t.dims() != shape.as_slice() {
            return Err(mismatch(format!(
                "key `{key}`: expected shape {shape:?}, found {:?}",
                t.dims()
            )));
        }
        let t = match t.dtype() {
            DType::F32 => t,
            DType::F16 | DType::BF16 | DType::F64 => t.to_dtype(DType::F32)?,
            other => {
                return Err(mismatch(format!(
                    "key `{key}`: expected a float tensor, found dtype {other:?}"
                )))
            }
        };
        out.insert(key, t);
    }
    if let Some((key, t)) = sd.iter().next() {
        return Err(mismatch(format!(
            "unexpected key `{key}` with shape {:?} ({} unexpected keys in all)",
            t.dims(),
            sd.len()
        )));
    }
    Ok(out)
}
