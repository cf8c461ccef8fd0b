//! Refusal of checkpoints holding NaN or infinite values. A non-finite weight does not make the
//! network fail: it gives plausible-looking detections (every box the whole image, finite
//! scores), so it has to be caught where the file is read, naming the tensor.

use std::path::Path;

use candle_core::{DType, Tensor};

use crate::error::{Error, Result};
use crate::weights::StateDict;

/// The first non-finite element of a float tensor: (flat index, value), or None. Integer
/// tensors are always finite.
pub fn first_non_finite(t: &Tensor) -> Result<Option<(usize, f64)>> {
    let flat = t.flatten_all()?;
    Ok(match t.dtype() {
        DType::F64 => {
            let v = flat.to_vec1::<f64>()?;
            v.iter().position(|x| !x.is_finite()).map(|i| (i, v[i]))
        }
        // Half types widen exactly to f32 (NaN and infinities stay what they are).
        DType::F32 | DType::F16 | DType::BF16 => {
            let v = flat.to_dtype(DType::F32)?.to_vec1::<f32>()?;
            v.iter()
                .position(|x| !x.is_finite())
                .map(|i| (i, f64::from(v[i])))
        }
        _ => None,
    })
}

/// Errors on the first tensor (in key order) with a NaN or infinite value.
pub fn check_finite(sd: &StateDict, path: &Path) -> Result<()> {
    for (key, t) in sd {
        if let Some((i, v)) = first_non_finite(t)? {
            let total = t.elem_count();
            return Err(Error::checkpoint(
                path,
                format!(
                    "tensor `{key}` (shape {:?}) holds a non-finite value ({v}) at flat index {i} \
                     of {total}: the checkpoint is corrupt",
                    t.dims()
                ),
            ));
        }
    }
    Ok(())
}
