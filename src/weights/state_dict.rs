//! The state-dict type and its safetensors writers (plain, and with string metadata), in a file of their own so the format readers,
//! writers and the weight store import them without importing the loader in `weights/mod.rs`.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{DType, Tensor};

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

/// String metadata of a safetensors file (its `__metadata__` header entry).
pub type Metadata = BTreeMap<String, String>;

/// A tensor's bytes in the layout safetensors stores (little-endian, row-major).
struct Raw {
    dtype: safetensors::Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl safetensors::View for &Raw {
    fn dtype(&self) -> safetensors::Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

fn raw(t: &Tensor) -> Result<Raw> {
    use safetensors::Dtype as D;
    let flat = t.flatten_all()?.to_device(&candle_core::Device::Cpu)?;
    let (dtype, bytes): (D, Vec<u8>) = match t.dtype() {
        DType::F32 => (D::F32, le(flat.to_vec1::<f32>()?, f32::to_le_bytes)),
        DType::F64 => (D::F64, le(flat.to_vec1::<f64>()?, f64::to_le_bytes)),
        DType::F16 => (
            D::F16,
            le(flat.to_vec1::<half::f16>()?, half::f16::to_le_bytes),
        ),
        DType::BF16 => (
            D::BF16,
            le(flat.to_vec1::<half::bf16>()?, half::bf16::to_le_bytes),
        ),
        DType::I64 => (D::I64, le(flat.to_vec1::<i64>()?, i64::to_le_bytes)),
        DType::U32 => (D::U32, le(flat.to_vec1::<u32>()?, u32::to_le_bytes)),
        DType::U8 => (D::U8, flat.to_vec1::<u8>()?),
        other => {
            return Err(Error::Invalid(format!(
                "safetensors writer: dtype {other:?} is not supported"
            )))
        }
    };
    Ok(Raw {
        dtype,
        shape: t.dims().to_vec(),
        bytes,
    })
}

fn le<T: Copy, const N: usize>(v: Vec<T>, f: fn(T) -> [u8; N]) -> Vec<u8> {
    v.into_iter().flat_map(f).collect()
}

/// Writes `tensors` and string `metadata` as safetensors. The file is written next to `out` and
/// renamed over it, so an interrupted save (Ctrl-C in training) leaves the previous file whole.
pub fn save_safetensors_with_metadata(
    tensors: &StateDict,
    metadata: &Metadata,
    out: &Path,
) -> Result<()> {
    let raws = tensors
        .iter()
        .map(|(k, t)| Ok((k.clone(), raw(t)?)))
        .collect::<Result<Vec<_>>>()?;
    let info: HashMap<String, String> = metadata.clone().into_iter().collect();
    let bytes = safetensors::serialize(raws.iter().map(|(k, r)| (k.as_str(), r)), Some(info))
        .map_err(|e| Error::checkpoint(out, format!("writing safetensors: {e}")))?;
    let mut tmp = out.as_os_str().to_owned();
    tmp.push(".partial");
    let tmp = std::path::PathBuf::from(tmp);
    std::fs::write(&tmp, bytes).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, out).map_err(|e| Error::io(out, e))
}

/// The metadata of a safetensors file's bytes; empty when it has none.
pub fn safetensors_metadata(bytes: &[u8], path: &Path) -> Result<Metadata> {
    let (_, meta) = safetensors::SafeTensors::read_metadata(bytes)
        .map_err(|e| Error::checkpoint(path, format!("safetensors header: {e}")))?;
    Ok(meta
        .metadata()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect())
}
