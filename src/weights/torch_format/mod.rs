//! PyTorch `torch.save` files: the legacy stream format (PyTorch < 1.6, what the released YOLACT
//! checkpoints use) and the zip format, read without executing anything from the file. The
//! writer (`writer.rs`) is for tests only (feature `test-support`).

use std::collections::HashMap;
use std::io::{Cursor, Read};
use std::path::Path;

use candle_core::{DType, Device, Tensor};

use super::pickle::{self, StorageDtype, StorageRef, TensorRef, Value};
use super::state_dict::StateDict;
use crate::error::{Error, Result};

mod magic;
pub use magic::LEGACY_PREFIX;
use magic::{LEGACY_MAGIC, LEGACY_PROTOCOL};

/// Materialising views can legitimately produce more bytes than the file holds (shared storage),
/// but not unboundedly more: this caps what a crafted file can make us allocate.
fn output_budget(file_len: usize) -> usize {
    file_len.saturating_mul(16).saturating_add(1 << 20)
}

fn err(path: &Path, msg: impl Into<String>) -> Error {
    Error::checkpoint(path, msg)
}

/// The `(name, tensor reference)` pairs of a state dict, in file order.
fn tensor_entries(path: &Path, v: &Value) -> Result<Vec<(String, TensorRef)>> {
    tensor_entries_at(path, v, true)
}

fn tensor_entries_at(path: &Path, v: &Value, top: bool) -> Result<Vec<(String, TensorRef)>> {
    let Value::Dict(d) = v else {
        return Err(err(
            path,
            "top-level object is not a dict (expected a state dict)",
        ));
    };
    let d = d.borrow();
    // Training checkpoints wrap the weights; accept the two common wrappers.
    if top && !d.iter().all(|(_, v)| matches!(v, Value::Tensor(_))) {
        for (k, v) in d.iter() {
            if let Value::Str(k) = k {
                if (k == "state_dict" || k == "model") && matches!(v, Value::Dict(_)) {
                    return tensor_entries_at(path, v, false);
                }
            }
        }
    }
    let mut out = Vec::with_capacity(d.len());
    for (k, v) in d.iter() {
        let Value::Str(name) = k else {
            return Err(err(path, "state dict has a non-string key"));
        };
        match v {
            Value::Tensor(t) => out.push((name.clone(), (**t).clone())),
            _ => {
                return Err(err(
                    path,
                    format!("state dict entry `{name}` is not a tensor"),
                ))
            }
        }
    }
    Ok(out)
}

fn candle_dtype(d: StorageDtype) -> DType {
    match d {
        StorageDtype::F64 => DType::F64,
        StorageDtype::F32 => DType::F32,
        StorageDtype::F16 => DType::F16,
        StorageDtype::BF16 => DType::BF16,
        StorageDtype::I64 => DType::I64,
        StorageDtype::I32 => DType::I32,
        StorageDtype::I16 | StorageDtype::I8 => DType::I16,
        StorageDtype::U8 | StorageDtype::Bool => DType::U8,
    }
}

/// Gathers a strided tensor out of its storage bytes into a contiguous CPU tensor.
fn materialise(
    path: &Path,
    name: &str,
    t: &TensorRef,
    storage: &[u8],
    budget: &mut usize,
) -> Result<Tensor> {
    let dt = t.storage.dtype;
    let es = dt.size_in_bytes();
    let bad = |m: String| err(path, format!("tensor `{name}`: {m}"));
    let numel = t
        .size
        .iter()
        .try_fold(1usize, |a, &s| a.checked_mul(s))
        .ok_or_else(|| bad(format!("size {:?} overflows", t.size)))?;
    let storage_numel = storage.len() / es;
    let view_offset = t.storage.view.as_ref().map_or(0, |v| v.1);
    let start = view_offset
        .checked_add(t.offset)
        .ok_or_else(|| bad("storage offset overflows".into()))?;
    let nbytes = numel
        .checked_mul(es)
        .ok_or_else(|| bad("byte size overflows".into()))?;
    if nbytes > *budget {
        return Err(bad(format!(
            "{nbytes} bytes of tensor data is more than this file can describe"
        )));
    }
    *budget -= nbytes;
    let mut out = Vec::with_capacity(nbytes);
    if numel > 0 {
        let mut last = start;
        for (&s, &st) in t.size.iter().zip(&t.stride) {
            last = (s - 1)
                .checked_mul(st)
                .and_then(|x| x.checked_add(last))
                .ok_or_else(|| bad("strides overflow".into()))?;
        }
        if last >= storage_numel {
            return Err(bad(format!(
                "size {:?} stride {:?} offset {} reach element {last}, but the storage `{}` holds {storage_numel}",
                t.size, t.stride, t.offset, t.storage.key
            )));
        }
        let rank = t.size.len();
        let contiguous = {
            let mut expect = 1usize;
            let mut ok = true;
            for i in (0..rank).rev() {
                if t.size[i] != 1 && t.stride[i] != expect {
                    ok = false;
                }
                expect = expect.saturating_mul(t.size[i]);
            }
            ok
        };
        if contiguous {
            out.extend_from_slice(&storage[start * es..(start + numel) * es]);
        } else {
            // Odometer over the multi-index; every position was bounds-checked via `last` above.
            let mut idx = vec![0usize; rank];
            let mut pos = start;
            for _ in 0..numel {
                out.extend_from_slice(&storage[pos * es..(pos + 1) * es]);
                for d in (0..rank).rev() {
                    idx[d] += 1;
                    // Wrapping: a size-1 dim may carry any stride; `pos` is only read in bounds.
                    pos = pos.wrapping_add(t.stride[d]);
                    if idx[d] < t.size[d] {
                        break;
                    }
                    pos = pos.wrapping_sub(t.stride[d].wrapping_mul(t.size[d]));
                    idx[d] = 0;
                }
            }
        }
    }
    let out = match dt {
        StorageDtype::I8 => out
            .iter()
            .flat_map(|&b| (b as i8 as i16).to_le_bytes())
            .collect(),
        StorageDtype::Bool => out.iter().map(|&b| (b != 0) as u8).collect(),
        _ => out,
    };
    Ok(Tensor::from_raw_buffer(
        &out,
        candle_dtype(dt),
        &t.size,
        &Device::Cpu,
    )?)
}

fn build_state_dict(
    path: &Path,
    entries: Vec<(String, TensorRef)>,
    storages: &HashMap<String, &[u8]>,
    file_len: usize,
) -> Result<StateDict> {
    let mut budget = output_budget(file_len);
    let mut sd = StateDict::new();
    for (name, t) in entries {
        let key = root_key(&t.storage);
        let Some(bytes) = storages.get(key) else {
            return Err(err(
                path,
                format!("tensor `{name}`: storage `{key}` has no data"),
            ));
        };
        let tensor = materialise(path, &name, &t, bytes, &mut budget)?;
        if sd.insert(name.clone(), tensor).is_some() {
            return Err(err(path, format!("duplicate key `{name}`")));
        }
    }
    Ok(sd)
}

fn root_key(s: &StorageRef) -> &str {
    s.view.as_ref().map_or(s.key.as_str(), |v| v.0.as_str())
}

/// The dtype each storage key is declared with; conflicting declarations are an error.
fn storage_dtypes(
    path: &Path,
    entries: &[(String, TensorRef)],
) -> Result<HashMap<String, StorageDtype>> {
    let mut m: HashMap<String, StorageDtype> = HashMap::new();
    for (name, t) in entries {
        let k = root_key(&t.storage);
        match m.get(k) {
            Some(d) if *d != t.storage.dtype => {
                return Err(err(
                    path,
                    format!("tensor `{name}`: storage `{k}` is used with two dtypes"),
                ))
            }
            _ => {
                m.insert(k.to_owned(), t.storage.dtype);
            }
        }
    }
    Ok(m)
}

fn unpickle_at(path: &Path, bytes: &[u8], pos: usize, what: &str) -> Result<(Value, usize)> {
    let rest = bytes.get(pos..).unwrap_or(&[]);
    let (v, n) = pickle::unpickle(rest, pos).map_err(|e| {
        err(
            path,
            format!(
                "legacy torch.save file, {what}, at byte {} of the file: {}",
                e.offset, e.msg
            ),
        )
    })?;
    Ok((v, pos + n))
}

/// Reads the legacy (pre-1.6, non-zip) torch.save stream.
pub fn read_legacy(path: &Path, bytes: &[u8]) -> Result<StateDict> {
    if !bytes.starts_with(&LEGACY_PREFIX) || pickle::read_long1(bytes) != Some(LEGACY_MAGIC) {
        return Err(err(path, "bad magic number: not a legacy torch.save file"));
    }
    let (_, pos) = unpickle_at(path, bytes, 0, "magic number")?;
    let (proto, pos) = unpickle_at(path, bytes, pos, "protocol version")?;
    if !matches!(proto, Value::Int(LEGACY_PROTOCOL)) {
        return Err(err(
            path,
            match &proto {
                Value::Int(v) => format!("unsupported legacy protocol version {v}"),
                other => format!("legacy protocol version is a {}, not an int", other.kind()),
            },
        ));
    }
    let (sys_info, pos) = unpickle_at(path, bytes, pos, "sys_info")?;
    if let Value::Dict(d) = &sys_info {
        let little = d.borrow().iter().find_map(|(k, v)| match (k, v) {
            (Value::Str(k), Value::Bool(b)) if k == "little_endian" => Some(*b),
            _ => None,
        });
        if little == Some(false) {
            return Err(err(path, "big-endian checkpoints are not supported"));
        }
    }
    let main_at = pos;
    let (main, pos) = unpickle_at(path, bytes, pos, "main pickle")?;
    let entries = tensor_entries(path, &main)?;
    let dtypes = storage_dtypes(path, &entries)?;
    let (keys, mut pos) = unpickle_at(path, bytes, pos, "storage key list")?;
    let Value::List(keys) = &keys else {
        return Err(err(
            path,
            format!("storage key list after the main pickle (at byte {main_at}) is not a list"),
        ));
    };
    let keys = keys.borrow();
    let mut storages = HashMap::new();
    for k in keys.iter() {
        let Value::Str(k) = k else {
            return Err(err(path, "storage key list holds a non-string"));
        };
        let Some(dt) = dtypes.get(k) else {
            return Err(err(
                path,
                format!("storage `{k}` is not used by any tensor"),
            ));
        };
        let rec_at = pos;
        let count = bytes
            .get(pos..pos + 8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(i64::from_le_bytes)
            .ok_or_else(|| {
                err(
                    path,
                    format!("truncated: storage `{k}` size record at byte {rec_at} is past the end ({} bytes)", bytes.len()),
                )
            })?;
        pos += 8;
        let n = usize::try_from(count)
            .ok()
            .and_then(|c| c.checked_mul(dt.size_in_bytes()))
            .ok_or_else(|| {
                err(
                    path,
                    format!("storage `{k}` at byte {rec_at}: bad element count {count}"),
                )
            })?;
        let data = pos
            .checked_add(n)
            .and_then(|end| bytes.get(pos..end))
            .ok_or_else(|| {
                err(
                    path,
                    format!(
                        "truncated: storage `{k}` needs {n} bytes at byte {pos}, file has {}",
                        bytes.len()
                    ),
                )
            })?;
        storages.insert(k.clone(), data);
        pos += n;
    }
    build_state_dict(path, entries, &storages, bytes.len())
}

fn read_entry(
    path: &Path,
    za: &mut zip::ZipArchive<Cursor<&[u8]>>,
    name: &str,
    limit: usize,
) -> Result<Option<Vec<u8>>> {
    let mut f = match za.by_name(name) {
        Ok(f) => f,
        Err(zip::result::ZipError::FileNotFound) => return Ok(None),
        Err(e) => return Err(err(path, format!("zip entry `{name}`: {e}"))),
    };
    if f.size() > limit as u64 {
        return Err(err(
            path,
            format!("zip entry `{name}` is implausibly large"),
        ));
    }
    let mut out = Vec::with_capacity(f.size() as usize);
    f.by_ref()
        .take(limit as u64)
        .read_to_end(&mut out)
        .map_err(|e| err(path, format!("zip entry `{name}`: {e}")))?;
    Ok(Some(out))
}

/// Reads the zip torch.save format (`<folder>/data.pkl` + `<folder>/data/<key>`).
pub fn read_zip(path: &Path, bytes: &[u8]) -> Result<StateDict> {
    let mut za = zip::ZipArchive::new(Cursor::new(bytes)).map_err(|e| {
        err(
            path,
            format!("not a readable zip archive (truncated or corrupt?): {e}"),
        )
    })?;
    let pkl = za
        .file_names()
        .filter(|n| *n == "data.pkl" || (n.ends_with("/data.pkl") && n.matches('/').count() == 1))
        .min()
        .map(str::to_owned)
        .ok_or_else(|| err(path, "zip archive has no `<folder>/data.pkl` entry"))?;
    let prefix = &pkl[..pkl.len() - "data.pkl".len()];
    let limit = output_budget(bytes.len());
    if let Some(order) = read_entry(path, &mut za, &format!("{prefix}byteorder"), 64)? {
        if order.trim_ascii() != b"little" {
            return Err(err(path, "big-endian checkpoints are not supported"));
        }
    }
    let data = read_entry(path, &mut za, &pkl, limit)?
        .ok_or_else(|| err(path, format!("zip entry `{pkl}` missing")))?;
    let (main, _) = pickle::unpickle(&data, 0).map_err(|e| {
        err(
            path,
            format!(
                "zip entry `{pkl}`, at byte {} of the entry: {}",
                e.offset, e.msg
            ),
        )
    })?;
    let entries = tensor_entries(path, &main)?;
    let dtypes = storage_dtypes(path, &entries)?;
    let mut owned = HashMap::new();
    let mut keys: Vec<&String> = dtypes.keys().collect();
    keys.sort();
    for k in keys {
        let name = format!("{prefix}data/{k}");
        let d = read_entry(path, &mut za, &name, limit)?
            .ok_or_else(|| err(path, format!("zip entry `{name}` missing (storage `{k}`)")))?;
        owned.insert(k.clone(), d);
    }
    let storages = owned
        .iter()
        .map(|(k, v)| (k.clone(), v.as_slice()))
        .collect();
    build_state_dict(path, entries, &storages, bytes.len())
}

#[cfg(any(test, feature = "test-support"))]
mod writer;
#[cfg(any(test, feature = "test-support"))]
pub use writer::{write_legacy, write_zip};

#[cfg(test)]
mod tests {
    use super::writer::Pickler;
    use super::*;

    /// A legacy file built by hand: one tensor through a pre-1.0 storage view (`view_metadata`),
    /// one wrapped in `_rebuild_parameter`, both over the same root storage of 10 floats.
    fn legacy_with_view() -> Vec<u8> {
        let mut buf = Vec::new();
        buf.extend(LEGACY_PREFIX);
        buf.push(b'.');
        buf.extend([0x80, 2, b'M', 0xe9, 0x03, b'.']);
        buf.extend([0x80, 2, b'}', b'.']);
        let mut p = Pickler::new();
        p.global("collections", "OrderedDict");
        p.op(b')');
        p.op(b'R');
        p.op(b'(');
        p.str("viewed");
        p.global("torch._utils", "_rebuild_tensor_v2");
        p.op(b'(');
        p.op(b'(');
        p.str("storage");
        p.global("torch.cuda", "FloatStorage");
        p.str("v");
        p.str("cuda:0");
        p.int(10);
        p.op(b'(');
        p.str("root");
        p.int(4);
        p.int(3);
        p.op(b't');
        p.op(b't');
        p.op(b'Q');
        p.int(1);
        p.usize_tuple(&[2]);
        p.usize_tuple(&[1]);
        p.op(0x89);
        p.op(b'N');
        p.op(b't');
        p.op(b'R');
        p.str("param");
        p.global("torch._utils", "_rebuild_parameter");
        p.op(b'(');
        p.global("torch._utils", "_rebuild_tensor");
        p.op(b'(');
        p.op(b'(');
        p.str("storage");
        p.global("torch", "FloatStorage");
        p.str("root");
        p.str("cpu");
        p.int(10);
        p.op(b'N');
        p.op(b't');
        p.op(b'Q');
        p.int(8);
        p.usize_tuple(&[2, 1]);
        p.usize_tuple(&[1, 1]);
        p.op(b't');
        p.op(b'R');
        p.op(0x88);
        p.op(b'N');
        p.op(b't');
        p.op(b'R');
        p.op(b'u');
        buf.extend(p.finish());
        let mut p = Pickler::new();
        p.op(b']');
        p.str("root");
        p.op(b'a');
        buf.extend(p.finish());
        buf.extend(10i64.to_le_bytes());
        for i in 0..10 {
            buf.extend((i as f32 * 10.0).to_le_bytes());
        }
        buf
    }

    #[test]
    fn storage_views_and_parameters() {
        let bytes = legacy_with_view();
        let sd = read_legacy(Path::new("v.pth"), &bytes).unwrap();
        // view starts at root element 4, the tensor at offset 1 within it: elements 5 and 6.
        let v: Vec<f32> = sd["viewed"].to_vec1().unwrap();
        assert_eq!(v, vec![50.0, 60.0]);
        let p: Vec<Vec<f32>> = sd["param"].to_vec2().unwrap();
        assert_eq!(p, vec![vec![80.0], vec![90.0]]);
        // Any storage shorter than what the tensors reach is refused, naming the tensor.
        let mut short = bytes.clone();
        let n = short.len();
        let at = n - 40 - 8;
        short[at..at + 8].copy_from_slice(&9i64.to_le_bytes());
        short.truncate(n - 4);
        let e = read_legacy(Path::new("v.pth"), &short)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`param`") && e.contains("holds 9"), "{e}");
    }
}
