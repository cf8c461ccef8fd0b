//! The `torch.save` writer (legacy stream and zip formats), for tests and the fixture tools:
//! behind the `test-support` feature, since nothing a user runs writes `.pth` files.

use std::io::{Cursor, Write};
use std::path::Path;

use candle_core::{DType, Tensor};

use super::super::pickle::StorageDtype;
use super::super::state_dict::StateDict;
use super::magic::{LEGACY_PREFIX, LEGACY_PROTOCOL};
use crate::error::{Error, Result};

fn err(path: &Path, msg: impl Into<String>) -> Error {
    Error::checkpoint(path, msg)
}

fn storage_dtype_of(path: &Path, name: &str, d: DType) -> Result<StorageDtype> {
    Ok(match d {
        DType::F64 => StorageDtype::F64,
        DType::F32 => StorageDtype::F32,
        DType::F16 => StorageDtype::F16,
        DType::BF16 => StorageDtype::BF16,
        DType::I64 => StorageDtype::I64,
        DType::I32 => StorageDtype::I32,
        DType::I16 => StorageDtype::I16,
        DType::U8 => StorageDtype::U8,
        other => {
            return Err(err(
                path,
                format!("tensor `{name}`: dtype {other:?} has no torch storage type here"),
            ))
        }
    })
}

fn raw_le_bytes(t: &Tensor) -> Result<Vec<u8>> {
    let t = t.flatten_all()?;
    Ok(match t.dtype() {
        DType::F64 => t
            .to_vec1::<f64>()?
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect(),
        DType::F32 => t
            .to_vec1::<f32>()?
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect(),
        DType::F16 => t
            .to_vec1::<half::f16>()?
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect(),
        DType::BF16 => t
            .to_vec1::<half::bf16>()?
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect(),
        DType::I64 => t
            .to_vec1::<i64>()?
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect(),
        DType::I32 => t
            .to_vec1::<i32>()?
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect(),
        DType::I16 => t
            .to_vec1::<i16>()?
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect(),
        DType::U8 => t.to_vec1::<u8>()?,
        other => return Err(Error::Invalid(format!("cannot serialise dtype {other:?}"))),
    })
}

/// Emits pickle opcodes (protocol 2, no memo: every object is written out in full).
pub(super) struct Pickler(Vec<u8>);

impl Pickler {
    pub(super) fn new() -> Self {
        Pickler(vec![0x80, 2])
    }
    pub(super) fn op(&mut self, b: u8) {
        self.0.push(b);
    }
    pub(super) fn str(&mut self, s: &str) {
        self.0.push(b'X');
        self.0.extend((s.len() as u32).to_le_bytes());
        self.0.extend(s.as_bytes());
    }
    pub(super) fn int(&mut self, v: usize) {
        if let Ok(v) = i32::try_from(v) {
            self.0.push(b'J');
            self.0.extend(v.to_le_bytes());
        } else {
            self.0.extend([0x8a, 8]);
            self.0.extend((v as i64).to_le_bytes());
        }
    }
    pub(super) fn global(&mut self, module: &str, name: &str) {
        self.0.push(b'c');
        self.0.extend(module.as_bytes());
        self.0.push(b'\n');
        self.0.extend(name.as_bytes());
        self.0.push(b'\n');
    }
    pub(super) fn usize_tuple(&mut self, v: &[usize]) {
        self.op(b'(');
        for &x in v {
            self.int(x);
        }
        self.op(b't');
    }
    pub(super) fn finish(mut self) -> Vec<u8> {
        self.0.push(b'.');
        self.0
    }
}

/// The main pickle of a state dict whose tensor `i` lives alone in storage key `i`.
fn state_dict_pickle(
    path: &Path,
    tensors: &StateDict,
    location: &str,
    legacy: bool,
) -> Result<Vec<u8>> {
    let mut p = Pickler::new();
    p.global("collections", "OrderedDict");
    p.op(b')');
    p.op(b'R');
    p.op(b'(');
    for (i, (name, t)) in tensors.iter().enumerate() {
        let sd = storage_dtype_of(path, name, t.dtype())?;
        let dims = t.dims();
        let mut stride = vec![1usize; dims.len()];
        for d in (0..dims.len().saturating_sub(1)).rev() {
            stride[d] = stride[d + 1] * dims[d + 1];
        }
        p.str(name);
        p.global("torch._utils", "_rebuild_tensor_v2");
        p.op(b'(');
        // persistent id
        p.op(b'(');
        p.str("storage");
        p.global("torch", sd.storage_name());
        p.str(&i.to_string());
        p.str(location);
        p.int(t.elem_count());
        if legacy {
            p.op(b'N');
        }
        p.op(b't');
        p.op(b'Q');
        p.int(0);
        p.usize_tuple(dims);
        p.usize_tuple(&stride);
        p.op(0x89);
        p.global("collections", "OrderedDict");
        p.op(b')');
        p.op(b'R');
        p.op(b't');
        p.op(b'R');
    }
    p.op(b'u');
    Ok(p.finish())
}

fn storage_keys(tensors: &StateDict) -> Vec<(String, &Tensor)> {
    let mut keys: Vec<(String, &Tensor)> = tensors
        .values()
        .enumerate()
        .map(|(i, t)| (i.to_string(), t))
        .collect();
    // torch.save writes the legacy key list sorted as strings; keep that convention.
    keys.sort_by(|a, b| a.0.cmp(&b.0));
    keys
}

pub fn write_legacy(tensors: &StateDict, out: &Path) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    buf.extend(LEGACY_PREFIX);
    buf.push(b'.');
    let mut p = Pickler::new();
    p.0.push(b'M');
    p.0.extend((LEGACY_PROTOCOL as u16).to_le_bytes());
    buf.extend(p.finish());
    let mut p = Pickler::new();
    p.op(b'}');
    p.op(b'(');
    p.str("protocol_version");
    p.int(LEGACY_PROTOCOL as usize);
    p.str("little_endian");
    p.op(0x88);
    p.str("type_sizes");
    p.op(b'}');
    p.op(b'(');
    for (k, v) in [("short", 2), ("int", 4), ("long", 4)] {
        p.str(k);
        p.int(v);
    }
    p.op(b'u');
    p.op(b'u');
    buf.extend(p.finish());
    buf.extend(state_dict_pickle(out, tensors, "cpu", true)?);
    let keys = storage_keys(tensors);
    let mut p = Pickler::new();
    p.op(b']');
    p.op(b'(');
    for (k, _) in &keys {
        p.str(k);
    }
    p.op(b'e');
    buf.extend(p.finish());
    for (_, t) in keys {
        buf.extend((t.elem_count() as i64).to_le_bytes());
        buf.extend(raw_le_bytes(t)?);
    }
    Ok(buf)
}

pub fn write_zip(tensors: &StateDict, out: &Path) -> Result<Vec<u8>> {
    let folder = out
        .file_stem()
        .and_then(|s| s.to_str())
        .filter(|s| !s.is_empty() && s.is_ascii() && !s.contains(['/', '\\']))
        .unwrap_or("archive");
    let mut cur = Cursor::new(Vec::new());
    {
        let mut zw = zip::ZipWriter::new(&mut cur);
        // Stored and 64-byte aligned, as torch writes them (torch can mmap the records).
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored)
            .with_alignment(64);
        let zerr = |e: zip::result::ZipError| err(out, format!("writing zip: {e}"));
        let ioerr = |e: std::io::Error| err(out, format!("writing zip: {e}"));
        let mut put = |name: String, data: &[u8]| -> Result<()> {
            zw.start_file(name, opts).map_err(zerr)?;
            zw.write_all(data).map_err(ioerr)
        };
        put(
            format!("{folder}/data.pkl"),
            &state_dict_pickle(out, tensors, "cpu", false)?,
        )?;
        put(format!("{folder}/byteorder"), b"little")?;
        for (k, t) in storage_keys(tensors) {
            put(format!("{folder}/data/{k}"), &raw_le_bytes(t)?)?;
        }
        put(format!("{folder}/version"), b"3\n")?;
        zw.finish().map_err(zerr)?;
    }
    Ok(cur.into_inner())
}
